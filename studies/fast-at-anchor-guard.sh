#!/bin/bash
# How studies/fast-at-anchor-*/ gained the overfitting guard's log without re-evaluating (run from the repository
# root, with OMP_NUM_THREADS=1 as the study):
#
#     studies/fast-at-anchor-guard.sh epochs10 studies/fast-at-anchor-10 8 9 10
#     studies/fast-at-anchor-guard.sh steps6000 studies/fast-at-anchor-6000 8 9 10
#     aelf reproduce fast-at-anchor --preset epochs10 --seeds 8,9,10      # and steps6000: every run and evaluation reused
#
# Each fgsm_rs run trained before the guard (train.val_size 0) is moved to runs/anchor-before-guard/ and trained again
# from the study's config, which now validates on training digits it keeps training on (train.val_holdout: false).
# Validation draws nothing from the training stream and updates no BatchNorm, so the weights should not change: where
# the new weights' sha256 equals the old one's, the old evaluation cache (which depends on the weights and the
# evaluation settings only) is copied beside them; otherwise reproduce evaluates the run again. From a clean checkout
# the reproduce commands alone train and evaluate everything and need none of this.
set -eu
preset=$1 folder=$2
shift 2
aside=runs/anchor-before-guard
for seed in "$@"; do
  for key in fgsm-1.25-noclip fgsm-1.25-clip fgsm-1-noclip fgsm-1-clip; do
    new=$folder/seed-$seed/$key old=$aside/$folder/seed-$seed/$key
    if [ -f "$new/model.safetensors" ] && grep -q '"val_holdout": false' "$new/config.json"; then
      echo "$new: done"
      continue
    fi
    if [ ! -d "$old" ] && [ ! -d "$new" ]; then
      echo "$new: no run before it; the reproduce command trains and evaluates it"
      continue
    fi
    if [ ! -d "$old" ]; then
      mkdir -p "$(dirname "$old")"
      mv "$new" "$old"
    fi
    config=$(mktemp --suffix=.yaml)
    aelf reproduce fast-at-anchor --preset "$preset" --seeds "$seed" --print-config "$key" > "$config"
    aelf train --config "$config" --out "$new" --no-progress --resume-if-exists
    rm -f "$config"
    if [ "$(sha256sum < "$old/model.safetensors")" = "$(sha256sum < "$new/model.safetensors")" ]; then
      cp "$old/reproduce-eval.json" "$new/"
      echo "$new: bit-identical weights, evaluation carried over"
    else
      echo "$new: the weights differ from the run before; reproduce will evaluate it"
    fi
  done
done
