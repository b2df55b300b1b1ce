"""Accuracy of a model on images in [0, 1], optionally attacked, counted once per image across torchrun ranks."""

from __future__ import annotations

import torch
from torch import nn

from aelf.core import distributed
from aelf.core.checks import check_model_inputs, check_not_empty, checked_once
from aelf.core.data import eval_batches
from aelf.core.modes import evaluating
from aelf.core.protocols import Attack


def correct_mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack | None = None,
    batch_size: int = 500,
    context: distributed.Context = distributed.SINGLE,
) -> torch.Tensor:
    """Which of x: (N, C, H, W) in [0, 1] ``model`` classifies right, attacked by ``attack`` when given: a (N,) bool
    tensor on the CPU, in the order of x (what paired comparisons between models need).

    Under ``torchrun`` (``context``) each rank attacks and classifies every ``world_size``-th image and the ranks'
    outcomes are summed into one mask, so every image is counted exactly once and every rank returns the whole mask.
    Bad images or labels are an :class:`~aelf.core.checks.InputError` (a ``ValueError``) naming the problem.
    """
    check_model_inputs(model, x, y, allow_empty=True)  # a suite's remainder may be empty; count_correct refuses it
    n = len(y)
    mine = distributed.eval_indices(n, context).to(x.device)
    if context.distributed:
        x, y = x[mine], y[mine]
    parts = []
    with checked_once():  # checked above for the whole set: no check per batch inside the attacks
        for xb, yb in eval_batches(x, y, batch_size):
            if attack is not None:
                xb = attack(model, xb, yb)
            with evaluating(model), torch.no_grad():
                parts.append(model(xb).argmax(1) == yb)
    right = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=x.device)
    if not context.distributed:
        return right.cpu()
    whole = torch.zeros(n, dtype=torch.long, device=right.device)
    whole[mine] = right.long()
    return distributed.all_sum(whole, context).bool().cpu()


def percent(correct: torch.Tensor) -> float:
    """Share of True in a boolean vector of per-image outcomes, in percent, rounded to 2 decimals (0 when empty)."""
    return round(100.0 * correct.sum().item() / max(1, correct.numel()), 2)


def count_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack | None = None,
    batch_size: int = 500,
    context: distributed.Context = distributed.SINGLE,
) -> int:
    """How many of x ``model`` classifies right, attacked by ``attack`` when given (:func:`correct_mask`); an
    InputError for no images."""
    check_not_empty(x)
    return int(correct_mask(model, x, y, attack, batch_size, context).sum())


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack | None = None,
    batch_size: int = 500,
    context: distributed.Context = distributed.SINGLE,
) -> float:
    """Accuracy in percent of ``model`` on x: (N, C, H, W) in [0, 1], attacked by ``attack`` when given
    (:func:`count_correct`, sharded across torchrun ranks)."""
    return 100.0 * count_correct(model, x, y, attack, batch_size, context) / max(1, len(y))
