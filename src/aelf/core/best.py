"""A run's two sets of weights: the last (``model.safetensors``, written when training ends) and the best by robust
validation accuracy (``best.safetensors`` with ``best.json``, kept while training with ``train.val_size > 0``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from aelf.core.checkpoint import save_weights
from aelf.core.errors import CheckpointError, ConfigError
from aelf.core.fileio import write_json
from aelf.core.run_folder import BEST, BEST_INFO, WEIGHTS
from aelf.core.runlock import live_writer

CHOICES = ("last", "best")
INFO_KEYS = ("epoch", "step", "val_nat_acc", "val_adv_acc", "val_fgsm_acc")


def save_best(run_dir: str | Path, model: nn.Module, row: dict[str, Any]) -> None:
    """Write the model as the run's best weights; ``row`` (its metrics.jsonl row) says where they come from."""
    run_dir = Path(run_dir)
    info = {key: row[key] for key in INFO_KEYS if key in row}
    save_weights(model, run_dir / BEST, metadata={key: str(value) for key, value in info.items()})
    write_json(run_dir / BEST_INFO, info)


def check_choice(which: str) -> None:
    """ConfigError unless ``which`` names a kind of weights a run can have (:data:`CHOICES`)."""
    if which not in CHOICES:
        raise ConfigError(f"weights must be one of {', '.join(CHOICES)} (got {which!r})")


def weights_file(run_dir: str | Path, which: str = "last") -> Path:
    """The file of a run's ``last`` or ``best`` weights; one clear error when the run has none of that kind.

    ``last`` is the default everywhere: every finished run has it, it is what the paper's tables report, and the
    best weights exist only when robust validation was on (they are chosen on training images, held out unless
    ``train.val_holdout`` is false, never on the test set, so evaluating them on the test set is fair).
    """
    run_dir = Path(run_dir)
    check_choice(which)
    if (pid := live_writer(run_dir)) is not None:
        raise CheckpointError(
            f"{run_dir}: still training (process {pid} is writing it); evaluate it when training has finished"
        )
    if which == "best":
        path = run_dir / BEST
        if not path.is_file():
            raise CheckpointError(f"{run_dir}: no {BEST}; only runs trained with train.val_size > 0 keep one")
        return path
    path = run_dir / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: training has not finished (no {WEIGHTS}); resume it with --resume")
    return path
