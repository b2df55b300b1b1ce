"""``fast-at-anchor``: Wong et al. 2020's fast adversarial training on MNIST, their recipe, on mnist5k (issue 28).

Before a verdict on single-step training is read from aelf's own schedule (BENCHMARKS.md, "Single-step training"), the
work it implements should be reproduced with *its* recipe, which differs from the paper's in every respect
(locuslab/fast_adversarial, ``MNIST/train_mnist.py`` and ``mnist_net.py``):

- network: ``wong_mnist`` (two 4 x 4 stride-2 convolutions, 16 and 32 channels, FC 100, FC 10, ReLU, no BatchNorm)
  on the original 28 x 28 digits (``data.image_size: 28``);
- optimisation: Adam, no weight decay, batch 100, the triangular cyclic rate 0 -> 5e-3 -> 0 stepped per iteration with
  its peak at 2/5 of the epochs (epoch 4 of 10, as theirs);
- training attack: fgsm_rs at eps 0.3, step 1.25 eps = 0.375 (theirs) or eps = 0.3 (the maintainers' advice when
  training is unstable, their issues #4 and #25), its random start clipped to [0, 1] (aelf's default) or not (theirs:
  the gradient is taken at x + delta); and the control, PGD-40 AT (eps 0.3, step 0.01, random start) under the same
  recipe (their ``--attack pgd`` without its early stop of examples already misclassified);
- test: natural, PGD-50 with 10 random restarts (eps 0.3, step 0.01: their evaluation) and AutoAttack (standard) on
  all 1,000 test digits;
- the overfitting guard's validation, logged every epoch of every fgsm_rs run: natural, PGD-5 (the evaluation attack,
  PGD(0.3, 16, 0.02), in 5 steps of 0.064) and FGSM accuracy on 200 training digits (a stratified slice of the seed)
  that stay in the training data (``train.val_holdout: false``), as their early stop checks PGD-5 on a training batch
  (``CIFAR10/train_fgsm.py --early-stop``): the runs train on exactly what they would without it (bit-identical
  weights, tests/test_validation.py), and a collapse shows in ``metrics.jsonl`` as the epoch where the guard warns.
  The PGD-40 control is not validated: it never leaves the constant predictor (its loss and natural accuracy per
  epoch show that), and its 6,000 steps cost most of the study.

Presets: ``epochs10`` (10 epochs of 40 batches: 400 steps, the anchor's epochs on 1/15 of its data) and ``steps6000``
(150 epochs: 6,000 steps, the anchor's number of steps). The anchor's own figure, 98.50% natural and 88.38% under
PGD-50 x 10 restarts, is for their released model on full MNIST, measured by a third party (locuslab/fast_adversarial
issue #20); it is shown beside the measured rows, labelled as the anchor's.

Every run is compared with the PGD-40 control (key ``at``), paired over seeds and test images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aelf.core.config import TrainConfig
from aelf.core.run_folder import RunFolder
from aelf.core.validation import ADV, FGSM_ACC, OVERFIT
from aelf.workflows.reproduction.evidence import AUTOATTACK
from aelf.workflows.reproduction.experiment import Experiment, Preset, Run, register_experiment

EPS = 0.3
PGD40 = {"eps": EPS, "n_steps": 40, "step_size": 0.01, "random_start": True}  # the control's training attack
PGD50_10 = {"eps": EPS, "n_steps": 50, "step_size": 0.01, "random_start": True, "n_restarts": 10}
TEST_LABEL = "PGD-50x10"
RECIPE: dict[str, dict[str, Any]] = {
    "data": {"name": "mnist5k", "image_size": 28},
    "model": {"name": "wong_mnist"},
    "train": {
        "batch_size": 100,
        "optimizer": "adam",
        "lr": 5e-3,
        "weight_decay": 0.0,
        "schedule": "cyclic",  # peak at 2/5 of the epochs (aelf.core.optim)
        "lr_milestones": [],
    },
}
NOTE = (
    "Wong et al.'s MNIST recipe on mnist5k (4,000/1,000 original 28 x 28 digits) instead of full MNIST: wong_mnist, "
    "Adam lr 5e-3 cyclic (peak at 2/5 of the epochs), no weight decay, batch 100; {epochs} epochs = {steps} steps"
)


GUARD = {"val_size": 200, "val_holdout": False, "val_attack_steps": 5}  # validated every epoch (train.eval_every 1)


def fgsm_run(scale: float, clip: bool) -> Run:
    step = round(scale * EPS, 4)
    start = "clipped start" if clip else "unclipped start"
    fgsm_rs = {"name": "fgsm_rs", "eps": EPS, "step_scale": scale, "clip_start": clip}
    return Run(
        f"fgsm-{scale:g}-{'clip' if clip else 'noclip'}",
        f"fgsm_rs step {step:g}, {start}",
        {"method": {"name": "at", "attack": fgsm_rs}, "train": GUARD},
    )


RUNS = (
    *(fgsm_run(scale, clip) for scale in (1.25, 1.0) for clip in (False, True)),
    Run("at", "PGD-40 AT (control)", {"method": {"name": "at"}}),  # the preset's attack: PGD40
)


def preset(epochs: int) -> Preset:
    return Preset(
        settings={**RECIPE, "train": {**RECIPE["train"], "epochs": epochs}},
        attack=PGD40,
        test_attacks={TEST_LABEL: PGD50_10},
        note=NOTE.format(epochs=epochs, steps=epochs * 40),
        autoattack="standard",
        autoattack_examples=None,  # all 1,000 test digits
    )


def guard_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the guard saw in one run's metrics rows: its first warning (epoch and kind), the best and the last
    validation PGD accuracy (percent) and the last FGSM accuracy; None for a run that was not validated."""
    validated = [row for row in rows if ADV in row]
    if not validated:
        return None
    best = max(validated, key=lambda row: row[ADV])  # the first of equals, as best.safetensors
    warned = next((row for row in validated if OVERFIT in row), None)
    return {
        "warned_epoch": None if warned is None else warned["epoch"],
        "warned": None if warned is None else warned[OVERFIT],
        "best": round(100 * best[ADV], 1),
        "best_epoch": best["epoch"],
        "last": round(100 * validated[-1][ADV], 1),
        "last_fgsm": round(100 * validated[-1][FGSM_ACC], 1),
        "epochs": validated[-1]["epoch"],
    }


def guard_summary(document: dict, plans: dict, out: Path) -> tuple[dict, str]:
    """``Experiment.summary``: the overfitting guard's log of every validated run and seed beside its final test
    accuracy (``document["guard"]``), and its Markdown."""
    found: dict[str, dict[str, Any]] = {}
    for seed, (_, folder) in plans.items():
        for key in document["measured"]:
            row = guard_row(RunFolder(Path(folder) / key).metrics)
            if row is not None:
                final = document["per_seed"].get(key, {}).get(str(seed), {})
                found.setdefault(key, {})[str(seed)] = {**row, "test": final.get(AUTOATTACK, final.get(TEST_LABEL))}
    if not found:
        return {}, ""
    column = AUTOATTACK if document["evaluation"]["autoattack"] else TEST_LABEL
    pgd = f"PGD-{GUARD['val_attack_steps']}"
    lines = [
        "## The overfitting guard's log",
        "",
        f"Validation every epoch on {GUARD['val_size']} training digits that stay in the training data "
        f"(`train.val_holdout: false`: the weights are those of the run without it): {pgd} and FGSM accuracy; the "
        f"guard warns when {pgd} accuracy falls more than {100 * TrainConfig.overfit_drop:g} points below its best "
        f"(`catastrophic` when FGSM accuracy rose meanwhile). The last column is the final weights' test {column} "
        "accuracy.",
        "",
        f"| run | seed | guard warned | best val {pgd} (epoch) | last val {pgd} | last val FGSM | test {column} |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, seeds in found.items():
        for seed, row in seeds.items():
            warned = f"epoch {row['warned_epoch']} ({row['warned']})" if row["warned"] else "no"
            test = "n/a" if row["test"] is None else f"{row['test']:.1f}"
            lines.append(
                f"| {document['labels'][key]} | {seed} | {warned} | {row['best']:.1f} ({row['best_epoch']}) "
                f"| {row['last']:.1f} | {row['last_fgsm']:.1f} | {test} |"
            )
    return {"guard": found}, "\n".join(lines) + "\n"


EXPERIMENT = register_experiment(
    Experiment(
        name="fast-at-anchor",
        title="Single-step training on Wong et al.'s MNIST recipe (the anchor)",
        kind="robust",
        dataset="mnist",
        runs=RUNS,
        presets={"epochs10": preset(10), "steps6000": preset(150)},
        paper_rows={"fgsm-1.25-noclip": {"natural": 98.50, TEST_LABEL: 88.38}},
        paper_label="anchor: Wong et al.'s released model, full MNIST, measured in locuslab/fast_adversarial #20",
        folders={"epochs10": "studies/fast-at-anchor-10", "steps6000": "studies/fast-at-anchor-6000"},
        summary=guard_summary,
    )
)
