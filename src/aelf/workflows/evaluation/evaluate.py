"""Natural and adversarial accuracy on the natural test set N and the shifted sets N(L), N(R), N(U), N(D)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from aelf.core import distributed
from aelf.core.accuracy import correct_mask, percent
from aelf.core.data import shifted_test_sets
from aelf.core.fileio import write_json
from aelf.core.run import open_run, read_config
from aelf.core.run_folder import RunFolder


def shift_outcomes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack,
    shift_pixels: int = 8,
    batch_size: int = 500,
    progress: bool = False,
    context: distributed.Context = distributed.SINGLE,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{"natural": {"N": mask, "N(L)": mask, ...}, "adversarial": {...}}``: which images of each set ``model``
    classifies right, unattacked and attacked (boolean CPU tensors in the order of x)."""
    sets = shifted_test_sets(x, shift_pixels)
    found: dict[str, dict[str, torch.Tensor]] = {"natural": {}, "adversarial": {}}
    for name, x_set in tqdm(sets.items(), desc="eval", disable=not (progress and context.is_main), leave=False):
        found["natural"][name] = correct_mask(model, x_set, y, None, batch_size, context)
        found["adversarial"][name] = correct_mask(model, x_set, y, attack, batch_size, context)
    return found


def each_set(function, found: dict[str, dict[str, torch.Tensor]]) -> dict:
    """:func:`shift_outcomes`' masks, each replaced by ``function(mask)`` (its percent, its encoded bits, ...)."""
    return {kind: {name: function(mask) for name, mask in sets.items()} for kind, sets in found.items()}


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
    return each_set(percent, shift_outcomes(model, x, y, attack, shift_pixels, batch_size, progress, context))


def evaluate_run(
    run_dir: str | Path,
    attack=None,
    device: str = "auto",
    progress: bool = False,
    model: nn.Module | None = None,
    weights: str = "last",
    write: bool = True,
    data: str | Path | None = None,
    n_examples: int | None = None,
) -> dict:
    """Evaluate a finished run on its test data (attack: the run's ``eval.attack`` by default); write ``eval.json``.

    ``model``: a fresh instance of the network, for a run of a user's own model (see :func:`aelf.load_model`).
    ``weights``: ``last`` (default) or ``best`` (:func:`aelf.core.best.weights_file`), written to eval-best.json.
    ``write=False``: only return the result (the CLI shows it first, then :func:`write_eval`). ``data``: the run's
    data file at a new place (:func:`aelf.core.run.load_dataset`); ``n_examples``: only the first N test images
    (all by default; the result records how many in ``n_examples``).
    """
    config = read_config(run_dir)
    attack = attack or config.eval.attack
    context, target = distributed.setup(device, config.train.dist_timeout_s)
    with open_run(run_dir, target, model, weights, n_examples, data) as run:
        result: dict[str, Any] = evaluate(
            run.model, run.x, run.y, attack, config.eval.shift_pixels, config.eval.batch_size, progress, context
        )
    result["n_examples"] = len(run.y)
    result["attack"] = {"name": type(attack).__name__, **vars(attack)}
    result["weights"] = weights
    if write and context.is_main:
        write_eval(run_dir, result)
    return result


def eval_file(run_dir: str | Path, weights: str = "last") -> Path:
    """Where :func:`evaluate_run` keeps its result: ``eval.json``, ``eval-best.json`` for the best weights."""
    return RunFolder(Path(run_dir)).eval_file(weights)


def write_eval(run_dir: str | Path, result: dict) -> Path:
    path = eval_file(run_dir, result["weights"])
    write_json(path, result)
    return path
