"""Natural and adversarial accuracy on the natural test set N and the shifted sets N(L), N(R), N(U), N(D)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from aelf import cpu_heap, distributed
from aelf.checkpoint import write_json
from aelf.data import eval_batches, load_dataset, shifted_test_sets
from aelf.memory_format import model_memory_format
from aelf.modes import evaluating
from aelf.run import EVAL, load_model, read_config


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
    summed, so every image is counted exactly once.
    """
    mine = distributed.eval_indices(len(y), context).to(x.device)
    if context.distributed:
        x, y = x[mine], y[mine]
    correct = torch.zeros((), dtype=torch.long, device=x.device)
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


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack,
    shift_pixels: int = 8,
    batch_size: int = 500,
    progress: bool = False,
    context: distributed.Context = distributed.SINGLE,
) -> dict[str, dict[str, float]]:
    """``{"natural": {"N": .., "N(L)": .., ...}, "adversarial": {...}}``, accuracies in percent."""
    sets = shifted_test_sets(x, shift_pixels)
    result: dict[str, dict[str, float]] = {"natural": {}, "adversarial": {}}
    for name, x_set in tqdm(sets.items(), desc="eval", disable=not (progress and context.is_main), leave=False):
        result["natural"][name] = round(accuracy(model, x_set, y, None, batch_size, context), 2)
        result["adversarial"][name] = round(accuracy(model, x_set, y, attack, batch_size, context), 2)
    return result


def evaluate_run(
    run_dir: str | Path, attack=None, device: str = "auto", progress: bool = False, model: nn.Module | None = None
) -> dict:
    """Evaluate a finished run on its test data (attack: the run's ``eval.attack`` by default); write ``eval.json``.

    ``model``: a fresh instance of the network, for a run of a user's own model (see :func:`aelf.load_model`).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    attack = attack or config.eval.attack
    context, target = distributed.setup(device, config.train.dist_timeout_s)
    model = load_model(run_dir, target, model)
    model = model.to(memory_format=model_memory_format(model, target))
    x, y = load_dataset(config.data.name, "test", config.data.root, config.data.test_limit)
    with cpu_heap.for_run(config.train, target):
        result = evaluate(
            model, x.to(target), y.to(target), attack, config.eval.shift_pixels, config.eval.batch_size, progress,
            context,
        )
    result["attack"] = {"name": type(attack).__name__, **vars(attack)}
    if context.is_main:
        write_json(run_dir / EVAL, result)
    return result
