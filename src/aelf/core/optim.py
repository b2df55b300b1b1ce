"""The optimizer and the learning-rate schedule of ``train`` (:class:`~aelf.core.config.TrainConfig`).

Optimizers (``train.optimizer``), torch's own, over ``method.trainable_parameters(model)`` only:

- ``sgd`` (default, Appendix C): SGD with ``momentum`` and ``weight_decay``;
- ``adam``: Adam, ``weight_decay`` added to the gradient (L2), torch's betas (0.9, 0.999);
- ``adamw``: AdamW, ``weight_decay`` decoupled from the gradient.

Schedules (``train.schedule``), each a factor of ``train.lr``:

- ``multistep`` (default, Appendix C): x ``lr_gamma`` at each of ``lr_milestones`` (epochs), stepped per epoch by
  torch's ``MultiStepLR`` exactly as before these options existed;
- ``cosine``: (1 + cos(pi t / epochs)) / 2, from lr down to 0;
- ``cyclic``: triangular, 0 -> lr at ``peak_epoch`` (default 2/5 of the epochs) -> 0 at the end, as Wong et al.
  2020's fast adversarial training (``np.interp([t], [0, peak, epochs], [0, lr, 0])``).

``warmup_epochs`` > 0 multiplies any of them by min(1, t / warmup_epochs), a linear warm-up from 0. Cosine, cyclic and
any warm-up change the rate every iteration: step k (0-based) uses the factor at t = (k + 1) / steps_per_epoch epochs,
the fraction of training done at its end (Wong et al.'s ``lr_schedule(epoch + (i + 1) / len(loader))``), so the first
step already moves and the last one of a cyclic or cosine run has rate 0. They run as torch's ``LambdaLR`` stepped per
iteration; its state (the step count) is saved in every checkpoint like the optimizer's, so a resumed run continues
the schedule where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from aelf.core.protocols import Method, SplitModel

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "cyclic")
PEAK_FRACTION = 2 / 5  # cyclic: the peak at 2/5 of the epochs by default (Wong et al.: epoch 4 of 10)


def make_optimizer(method: Method, model: SplitModel, tc: Any) -> torch.optim.Optimizer:
    """``tc.optimizer`` over ``method.trainable_parameters(model)`` only; every other parameter gets
    ``requires_grad=False``."""
    declared = list(method.trainable_parameters(model))
    declared_ids = {id(p) for p in declared}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in declared_ids)
    if tc.optimizer == "adam":
        return torch.optim.Adam(declared, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(declared, lr=tc.lr, weight_decay=tc.weight_decay)
    return torch.optim.SGD(declared, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)


def per_iteration(tc: Any) -> bool:
    """Whether the schedule changes the rate every iteration (everything but a plain multi-step schedule)."""
    return tc.schedule != "multistep" or tc.warmup_epochs > 0


def peak_epoch(tc: Any) -> float:
    """The cyclic schedule's peak, in epochs."""
    return PEAK_FRACTION * tc.epochs if tc.peak_epoch is None else tc.peak_epoch


def lr_factor(tc: Any, steps_per_epoch: int) -> Callable[[int], float]:
    """``factor(k)``: the multiple of ``tc.lr`` that step k (0-based, counted over the whole run) uses."""
    peak = peak_epoch(tc)

    def factor(step: int) -> float:
        t = (step + 1) / steps_per_epoch  # epochs done at the end of this step
        if tc.schedule == "cosine":
            value = (1 + math.cos(math.pi * min(t, tc.epochs) / tc.epochs)) / 2
        elif tc.schedule == "cyclic":
            value = t / peak if t <= peak else max(0.0, (tc.epochs - t) / (tc.epochs - peak))
        else:
            value = tc.lr_gamma ** sum(1 for m in tc.lr_milestones if m <= step // steps_per_epoch)
        if tc.warmup_epochs > 0:
            value *= min(1.0, t / tc.warmup_epochs)
        return value

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, tc: Any, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule's torch scheduler: ``MultiStepLR`` (stepped per epoch) for a plain multi-step schedule, else a
    ``LambdaLR`` of :func:`lr_factor` (stepped per iteration, :func:`per_iteration`)."""
    if not per_iteration(tc):
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(tc.lr_milestones), tc.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(tc, steps_per_epoch))


def step_lr(tc: Any, steps_per_epoch: int, step: int) -> float:
    """The rate step k (0-based) trains with under a per-iteration schedule (metrics.jsonl's ``lr`` of an epoch is
    that of its last step)."""
    return tc.lr * lr_factor(tc, steps_per_epoch)(step)
