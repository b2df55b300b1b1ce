"""Robust validation while training (``train.val_size > 0``): a slice of the training data, its natural,
adversarial and FGSM accuracy every ``train.eval_every`` epochs, and the overfitting guard.

- The slice is stratified (each class in proportion) and drawn from the run's seed, so every rank and every resume
  holds out the same images. It comes from the training data only: the test set stays untouched. It is held out
  (not trained on) unless ``train.val_holdout`` is false; then the run trains on exactly what it would without
  validation, and its weights are the same (validation neither draws from the training stream nor updates BatchNorm).
- The adversarial accuracy uses the run's evaluation attack (``eval.attack``), optionally with fewer steps; the
  FGSM accuracy at the same eps is what tells catastrophic overfitting (PGD accuracy collapsing while FGSM accuracy
  rises: the model resists only the single-step attack) from robust overfitting (Rice et al. 2020).
- Validation draws its attacks' random starts from a forked RNG seeded from (seed, epoch): the training stream is
  left exactly as it was, and the numbers depend only on the weights and the epoch, so resumed runs match.
- The guard is a function of the metrics rows alone (:func:`overfit_event`), so a resumed run decides as the
  uninterrupted one did.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from aelf.core import distributed
from aelf.core.accuracy import count_correct
from aelf.core.attacks import FGSM, PGD
from aelf.core.errors import ConfigError
from aelf.core.run_folder import BEST

NAT, ADV, FGSM_ACC = "val_nat_acc", "val_adv_acc", "val_fgsm_acc"
OVERFIT = "overfit"  # metrics.jsonl key of the row where a collapse begins: "catastrophic" or "robust"
SPLIT_STREAM = -1  # the split's generator is the batch order's one of "epoch -1", which no epoch uses
CAUSES = {
    "catastrophic": "catastrophic overfitting (the model resists only the single-step attack)",
    "robust": "robust overfitting",
}
TOLERANCE = 1e-9  # accuracies are rounded fractions: a drop of exactly overfit_drop does not count


def stratified_split(y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_index, val_index)``, sorted, of labels y (N,): ``size`` examples held out, each class in proportion
    (largest remainders get the odd ones), drawn from ``seed``."""
    y = y.cpu()
    n = len(y)
    if not 0 < size < n:
        raise ConfigError(f"train.val_size must be between 1 and {n - 1} for {n} training images (got {size})")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + SPLIT_STREAM)
    classes, counts = torch.unique(y, return_counts=True)
    quota = counts * size // n
    remainder = counts * size % n
    extra = size - int(quota.sum())
    quota[torch.argsort(remainder, descending=True, stable=True)[:extra]] += 1
    picked = []
    for label, take in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (y == label).nonzero().squeeze(1)
        picked.append(members[torch.randperm(len(members), generator=generator)[:take]])
    val = torch.cat(picked).sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().squeeze(1), val


def hold_out(
    x: torch.Tensor, y: torch.Tensor, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_val, y_val)``: :func:`stratified_split` applied to the training tensors."""
    train_index, val_index = stratified_split(y, size, seed)
    return x[train_index], y[train_index], x[val_index], y[val_index]


def validation_attacks(eval_attack: PGD, n_steps: int | None = None) -> tuple[PGD, FGSM]:
    """The robust validation attack and FGSM at its eps. With ``n_steps``, the evaluation attack takes that many
    steps of a size scaled to keep steps x step size (fewer, too short steps would not reach the ball's edge)."""
    attack = eval_attack
    if n_steps is not None and n_steps != attack.n_steps:
        step_size = min(1.0, attack.step_size * attack.n_steps / n_steps)  # a pixel-unit step: at most the range
        attack = replace(attack, n_steps=n_steps, step_size=step_size)
    return attack, FGSM(eps=attack.eps)


def is_validation_epoch(epoch: int, every: int, epochs: int) -> bool:
    """Whether the end of ``epoch`` (counted from 1) is validated: every ``every`` epochs and after the last."""
    return epoch % every == 0 or epoch == epochs


def validate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: tuple[PGD, FGSM],
    seed: int,
    batch_size: int = 500,
    context: distributed.Context = distributed.SINGLE,
) -> dict[str, float]:
    """``{val_nat_acc, val_adv_acc, val_fgsm_acc}`` as fractions in [0, 1] (as every metrics.jsonl accuracy).

    Under torchrun each rank attacks its share of the slice and the counts are summed, so every rank returns the
    same numbers. Random starts come from torch's generators re-seeded with ``seed`` inside a fork: the caller's
    RNG state is the same afterwards.
    """
    attack, fgsm = attacks
    cuda = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for device in cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        counts = [count_correct(model, x, y, a, batch_size, context) for a in (None, attack, fgsm)]
    return {key: round(count / max(1, len(y)), 6) for key, count in zip((NAT, ADV, FGSM_ACC), counts, strict=True)}


def validation_seed(seed: int, epoch: int) -> int:
    """The seed of validation's random starts after ``epoch``: a function of the run's seed and the epoch only."""
    return (seed * 1_000_003 + epoch) * 1_000_033 + 7


def _rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in history if ADV in row]


def is_best(history: list[dict[str, Any]]) -> bool:
    """Whether the newest row is validated and has the highest robust validation accuracy so far (the first one wins a
    tie: a later epoch must do strictly better to replace it)."""
    if not history or ADV not in history[-1]:
        return False
    rows = _rows(history)
    return all(rows[-1][ADV] > row[ADV] for row in rows[:-1])


def overfit_event(history: list[dict[str, Any]], drop: float) -> str | None:
    """``catastrophic`` or ``robust`` when the newest row is validated and begins a collapse, else None.

    A row is collapsed when its robust accuracy is more than ``drop`` below the best so far; an event is a collapsed
    row after one that was not (a run that stays collapsed warns once; one that recovers and collapses again warns
    again). Catastrophic: FGSM accuracy is above its value at the best epoch while robust accuracy fell.
    """
    if not history or ADV not in history[-1]:
        return None
    rows = _rows(history)

    def collapsed(i: int) -> bool:
        return max(row[ADV] for row in rows[: i + 1]) - rows[i][ADV] > drop + TOLERANCE

    if not collapsed(len(rows) - 1) or (len(rows) > 1 and collapsed(len(rows) - 2)):
        return None
    best = max(rows, key=lambda row: row[ADV])
    return "catastrophic" if rows[-1][FGSM_ACC] > best[FGSM_ACC] else "robust"


def overfit_message(kind: str, history: list[dict[str, Any]]) -> str:
    """The warning for an event of :func:`overfit_event` at the newest validated row."""
    rows = _rows(history)
    now, best = rows[-1], max(rows, key=lambda row: row[ADV])
    text = (
        f"epoch {now['epoch']}: validation robust accuracy {now[ADV]:.1%} fell {best[ADV] - now[ADV]:.1%} below "
        f"its best {best[ADV]:.1%} (epoch {best['epoch']}); FGSM accuracy {best[FGSM_ACC]:.1%} -> {now[FGSM_ACC]:.1%}"
    )
    return f"{text}: {CAUSES[kind]}; the best weights (epoch {best['epoch']}) are in {BEST}"


def stopped_on_overfit(history: list[dict[str, Any]], stop: bool) -> bool:
    """Whether a run with ``train.stop_on_overfit`` (``stop``) has already ended on an overfitting event."""
    return stop and bool(history) and OVERFIT in history[-1]
