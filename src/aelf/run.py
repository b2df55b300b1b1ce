"""A run folder, reproducible on its own:

- ``config.json``: the resolved configuration (every setting, defaults included);
- ``meta.json``: seed, git revision, versions, command line, times;
- ``metrics.jsonl``: one JSON object per finished epoch;
- ``checkpoints/``: resumable training state (:mod:`aelf.checkpoint`);
- ``model.safetensors``: the final weights, written when training has finished;
- ``best.safetensors``, ``best.json``: the weights of the best robust validation accuracy and where they come from
  (only with ``train.val_size > 0``, :mod:`aelf.best`);
- ``eval.json``: written by ``aelf eval``.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from aelf.best import weights_file
from aelf.checkpoint import load_weights, read_json
from aelf.config import Config, config_from_json
from aelf.data import dataset_info
from aelf.data import load_dataset as _load_dataset
from aelf.errors import CheckpointError, ConfigError
from aelf.models import as_split_model, build_model

CONFIG = "config.json"
META = "meta.json"
METRICS = "metrics.jsonl"
EVAL = "eval.json"


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


def environment() -> dict:
    from aelf import __version__

    return {
        "aelf": __version__,
        "git_revision": git_revision(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": sys.argv,
    }


def read_config(run_dir: str | Path) -> Config:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    try:
        return config_from_json(read_json(run_dir / CONFIG))
    except ConfigError as err:
        raise CheckpointError(f"{run_dir / CONFIG}: {err}") from None


def model_for(config: Config, model: nn.Module | None = None) -> nn.Module:
    """An untrained model of the run's architecture for the run's dataset.

    With ``model`` (a user's own network, see :func:`aelf.models.as_split_model`), that model with the
    ``forward_features``/``forward_head`` split instead.
    """
    if model is not None:
        return as_split_model(model)
    info = dataset_info(config.data.name)
    return build_model(config.model, info.in_channels, info.num_classes, info.mean, info.std)


def load_model(
    run_dir: str | Path, device: str | torch.device = "cpu", model: nn.Module | None = None, weights: str = "last"
) -> nn.Module:
    """The trained model of a finished run, in eval mode, taking pixels in [0, 1].

    It has ``forward_features(x) -> f`` and ``forward_head(f) -> logits`` (``head`` is the linear label mapping).
    A run of a user's own network (``model.name: custom``) needs a fresh instance of it as ``model``. ``weights``:
    ``last`` (default) or ``best``, the weights of the best robust validation accuracy (:func:`aelf.best.weights_file`
    says why last is the default).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    path = weights_file(run_dir, weights)
    model = model_for(config, model)
    load_weights(model, path)
    return model.to(device).eval()


def load_dataset(name_or_run: str | Path, split: str = "test", root: str | None = None):
    """``(x, y)`` tensors: x (N, C, 32, 32) in [0, 1], y (N,) int64.

    Give a dataset name (``mnist5k``, ``fashion-mnist``, ...) or a run folder, whose dataset (with its root and
    limits) is used, so that a run's exact train or test data come back.
    """
    path = Path(name_or_run)
    if (path / CONFIG).is_file():
        data = read_config(path).data
        limit = data.train_limit if split == "train" else data.test_limit
        return _load_dataset(data.name, split, root or data.root, limit)
    return _load_dataset(str(name_or_run), split, root)
