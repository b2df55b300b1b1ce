"""Mini-batches from tensors held in memory (on the training device), in an order fixed by (seed, epoch).

The order of epoch e depends only on the seed and e, so a run resumed in the middle of an epoch sees exactly the
batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator for the random augmentation of one batch, a function of (seed, epoch, step) only, so that a
    run resumed mid-epoch augments its batches exactly as the uninterrupted run did."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the incomplete last batch is dropped, a different one each epoch)."""
    return n // batch_size


def train_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, epoch: int, start_step: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled full batches of epoch ``epoch``, beginning at step ``start_step``."""
    order = epoch_order(len(x), seed, epoch).to(x.device)
    for step in range(start_step, steps_per_epoch(len(x), batch_size)):
        index = order[step * batch_size : (step + 1) * batch_size]
        yield x[index], y[index]


def eval_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]
