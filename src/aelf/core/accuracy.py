"""Accuracy of a model on images in [0, 1], optionally attacked, counted once per image across torchrun ranks."""

from __future__ import annotations

import torch
from torch import nn

from aelf.core import distributed
from aelf.core.checks import check_model_inputs, checked_once
from aelf.core.data import eval_batches
from aelf.core.modes import evaluating


def count_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack=None,
    batch_size: int = 500,
    context: distributed.Context = distributed.SINGLE,
) -> int:
    """How many of x: (N, C, H, W) in [0, 1] ``model`` classifies right, attacked by ``attack`` when given.

    Under ``torchrun`` (``context``) each rank attacks and counts every ``world_size``-th image and the counts are
    summed, so every image is counted exactly once. Bad images or labels are an
    :class:`~aelf.core.checks.InputError` (a ``ValueError``) naming the problem.
    """
    check_model_inputs(model, x, y)
    mine = distributed.eval_indices(len(y), context).to(x.device)
    if context.distributed:
        x, y = x[mine], y[mine]
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with checked_once():
        for xb, yb in eval_batches(x, y, batch_size):
            if attack is not None:
                xb = attack(model, xb, yb)
            with evaluating(model), torch.no_grad():
                correct += (model(xb).argmax(1) == yb).sum()
    return int(distributed.all_sum(correct, context).item())


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack=None,
    batch_size: int = 500,
    context: distributed.Context = distributed.SINGLE,
) -> float:
    """Accuracy in percent of ``model`` on x: (N, C, H, W) in [0, 1], attacked by ``attack`` when given
    (:func:`count_correct`, sharded across torchrun ranks)."""
    return 100.0 * count_correct(model, x, y, attack, batch_size, context) / max(1, len(y))
