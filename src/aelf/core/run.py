"""Opening a run folder (its files: :mod:`aelf.core.run_folder`): its configuration, its data (a user's files from
the path and sha256 its ``meta.json`` recorded, :mod:`aelf.core.data.source`), its model and weights, and
:func:`open_run`, the one way every command that evaluates a run opens it.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aelf.core import __version__, cpu_heap
from aelf.core.best import weights_file
from aelf.core.checkpoint import load_weights
from aelf.core.config import Config
from aelf.core.data import load_dataset as _load_dataset
from aelf.core.data.source import FILES, DataSpec, RunData, load_run_data, spec_from_record
from aelf.core.distributed import resolve_device
from aelf.core.errors import CheckpointError, ConfigError, DataError
from aelf.core.fileio import read_json
from aelf.core.memory_format import model_memory_format
from aelf.core.models import as_split_model, build_model, input_sizes, split_batchnorm
from aelf.core.modes import evaluating
from aelf.core.run_folder import Meta, RunFolder


def git_revision() -> str | None:
    """The commit of the aelf source tree this code runs from, with ``-dirty`` if it has changes; None outside git."""
    source = Path(__file__).resolve().parent
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=source, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    return {
        "aelf": __version__,
        "git_revision": git_revision(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": sys.argv,
    }


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Each run's folder name, or its full path where two names collide."""
    names = [Path(run).name for run in run_dirs]
    return [name if names.count(name) == 1 else str(run) for name, run in zip(names, run_dirs, strict=True)]


def read_config(run_dir: str | Path) -> Config:
    """The configuration of the run in ``run_dir`` (:meth:`RunFolder.config`)."""
    return RunFolder(Path(run_dir)).config()


def data_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of a user's files that a run keeps in meta.json (None for a named dataset)."""
    folder = RunFolder(Path(run_dir))
    if folder.config().data.name != FILES:
        return None
    record = Meta.from_json(read_json(folder.meta_file)).data  # a run of a user's files must have its meta.json
    if not isinstance(record.get("source"), str):
        raise CheckpointError(f"{folder.meta_file}: no record of the data files the run was trained on")
    return record


def run_data(
    config: Config,
    run_dir: str | Path | None = None,
    splits: tuple[str, ...] = ("train", "test"),
    moved_to: str | Path | None = None,
) -> RunData:
    """The data of ``config``; with ``run_dir`` (a run being reopened or resumed) a user's files come from the path
    the run recorded, or from ``moved_to``, and must have the recorded sha256."""
    expected = data_record(run_dir) if run_dir is not None and config.data.name == FILES else None
    return load_run_data(config.data, splits, expected, moved_to)


def model_for(config: Config, model: nn.Module | None = None, spec: DataSpec | None = None) -> nn.Module:
    """An untrained model of the run's architecture for the run's dataset (``spec``: what the data say, needed for
    a user's files).

    With ``model`` (a user's own network, see :func:`aelf.core.models.as_split_model`), that model with the
    ``forward_features``/``forward_head`` split instead. A method with ``bn: split`` gets every BatchNorm layer
    doubled (:mod:`aelf.core.models.split_bn`).
    """
    if model is not None:
        built = as_split_model(model)
    else:
        if spec is None:
            if config.data.name == FILES:
                raise ConfigError("a model for data.name=files needs the data's channels and classes (spec)")
            spec = load_run_data(config.data, ()).spec
        built = build_model(config.model, spec.in_channels, spec.num_classes, spec.mean, spec.std)
    return split_batchnorm(built) if getattr(config.method, "bn", "shared") == "split" else built


@torch.no_grad()
def check_fits(model: nn.Module, x: torch.Tensor, num_classes: int, source: str) -> None:
    """DataError unless the model takes the images x (N, C, H, W) and gives ``num_classes`` logits: one forward
    pass of two images in eval mode (no running statistic or random number changes)."""
    shape = " x ".join(str(int(s)) for s in x.shape[1:])
    try:
        with evaluating(model):
            out = model(x[:2])
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{source}: images of {shape} (channels x height x width) do not fit the model ({reason}); {input_sizes()}"
        ) from None
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise DataError(
            f"{source}: the model gives outputs of shape {tuple(out.shape)} for {num_classes} classes; "
            f"it must give (N, {num_classes}) logits"
        )


def load_model(
    run_dir: str | Path, device: str | torch.device = "cpu", model: nn.Module | None = None, weights: str = "last"
) -> nn.Module:
    """The trained model of a finished run, in eval mode, taking pixels in [0, 1].

    It has ``forward_features(x) -> f`` and ``forward_head(f) -> logits`` (``head`` is the linear label mapping). A run
    of a user's own network (``model.name: custom``) needs a fresh instance of it as ``model``. ``weights``: ``last``
    (default) or ``best``, the weights of the best robust validation accuracy (:func:`aelf.core.best.weights_file` says
    why last is the default).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    path = weights_file(run_dir, weights)
    record = data_record(run_dir)
    spec = spec_from_record(record, str(RunFolder(run_dir).meta_file)) if record is not None else None
    model = model_for(config, model, spec)
    load_weights(model, path)
    return model.to(device).eval()


def load_dataset(
    name_or_run: str | Path, split: str = "test", root: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors: x (N, C, H, W) in [0, 1] (32 x 32 for the named datasets unless a run says
    ``data.image_size``), y (N,) int64.

    Give a dataset name (``mnist5k``, ``fashion-mnist``, ...) or a run folder, whose dataset (with its root and
    limits; a user's files from the path and split the run recorded) is used, so that a run's exact train or test
    data come back. For a run on a user's files, ``root`` is the file or folder moved to a new place: it is read
    when its sha256 is the one the run recorded.
    """
    path = Path(name_or_run)
    root_text = str(root) if root is not None else None
    if RunFolder(path).is_run():
        config = read_config(path)
        if config.data.name == FILES:
            if split not in ("train", "test"):
                raise ConfigError(f"split must be train or test (got {split!r})")
            return run_data(config, path, (split,), moved_to=root).pair(split)
        settings = config.data
        limit = settings.train_limit if split == "train" else settings.test_limit
        return _load_dataset(settings.name, split, root_text or settings.root, limit, settings.image_size)
    return _load_dataset(str(name_or_run), split, root_text)


@dataclass
class OpenRun:
    """A finished run ready to be evaluated: what :func:`open_run` yields."""

    run_dir: Path
    config: Config
    device: torch.device
    model: nn.Module  # eval mode, on ``device``, in the memory format the trainer chose for it
    x: torch.Tensor  # the run's own test set (dataset, root, limit), on ``device``
    y: torch.Tensor


@contextmanager
def open_run(
    run_dir: str | Path,
    device: str | torch.device = "auto",
    model: nn.Module | None = None,
    weights: str = "last",
    n_examples: int | None = None,
    data: str | Path | None = None,
) -> Iterator[OpenRun]:
    """The one way to open a finished run for evaluation.

    Yields the run's model (eval mode, on ``device``, in the memory format of :mod:`aelf.core.memory_format`) and
    its first ``n_examples`` test images (all by default), with the run's CPU heap setting
    (:mod:`aelf.core.cpu_heap`) in force until the block ends. ``model``: a fresh instance of a user's own network
    (``model.name: custom``); ``weights``: ``last`` or ``best``; ``data``: a user's data file moved to a new place
    (:func:`load_dataset`). Everything is checked before the model is built.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if n_examples is not None and n_examples < 1:
        raise ConfigError(f"n_examples must be at least 1 (got {n_examples})")
    if data is not None and config.data.name != FILES:
        raise ConfigError(
            f"{run_dir} was trained on {config.data.name}; a new place of the data (--data) applies to "
            "runs trained on your own files"
        )
    target = device if isinstance(device, torch.device) else resolve_device(device)
    trained = load_model(run_dir, target, model, weights)
    trained = trained.to(memory_format=model_memory_format(trained, target))  # type: ignore[call-overload]
    x, y = load_dataset(run_dir, "test", root=data)
    x, y = x[:n_examples].to(target), y[:n_examples].to(target)
    with cpu_heap.for_run(config.train, target):
        yield OpenRun(run_dir, config, target, trained, x, y)
