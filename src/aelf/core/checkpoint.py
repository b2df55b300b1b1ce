"""Files that never run code and never half-exist.

- Weights are safetensors. Training state (optimizer, LR schedule, counters, RNG states, metric history) is a
  ``torch.save`` file read back with ``weights_only=True``, which refuses anything but tensors and plain containers.
- Every write goes to a temporary name, is fsynced, then renamed over the target: a crash or a full disk leaves
  the previous file as it was.
- A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding ``model.safetensors`` and ``state.pt``; the file
  ``checkpoints/latest`` names the newest complete one and is replaced only after that folder is fully on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from aelf.core.errors import CheckpointError

WEIGHTS = "model.safetensors"
STATE = "state.pt"
CHECKPOINTS = "checkpoints"
LATEST = "latest"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync it and rename it to ``path``; on any failure ``path`` is untouched."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu").contiguous() for key, value in module.state_dict().items()}


def save_weights(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """The module's state_dict (parameters and buffers) as safetensors, atomically."""
    tensors = _plain_state(module)
    atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata))


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; CheckpointError naming the file if it is missing, truncated or corrupt."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own error types for every malformed input
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(err).splitlines()[0][:200]})") from None


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Copy the weights in ``path`` into ``module``; every key and shape must match."""
    tensors = read_weights(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: weights do not fit this model ({detail})")
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: weights do not fit this model ({key}: {tuple(value.shape)} vs {tuple(expected[key].shape)})"
            )
    module.load_state_dict(tensors)


def save_state(state: dict, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_state(path: str | Path) -> dict:
    """A training-state file, read with ``weights_only=True`` so that it cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            # torch warns about odd pickle protocols before failing; the CheckpointError below says it all.
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to parse an untrusted file means it is corrupt or not ours
        first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a valid aelf training state ({first_line})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a valid aelf training state (no step counter)")
    return state


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint folders


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(run_dir: str | Path, model: nn.Module, state: dict, keep: int = 2) -> Path:
    """Write ``checkpoints/step-N/`` completely, then point ``checkpoints/latest`` at it; keep the newest ``keep``."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(state["step"])
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_weights(model, staging / WEIGHTS)
        save_state(state, staging / STATE)
        _fsync_dir(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(root)
        write_text(root / LATEST, final.name + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finished = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in finished[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder named by ``checkpoints/latest``, or None when the run has no checkpoint yet."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    folder = root / name
    if not name.startswith("step-") or "/" in name or not folder.is_dir():
        raise CheckpointError(f"{pointer}: names {name!r}, which is not a checkpoint folder")
    return folder


def load_checkpoint(folder: str | Path, model: nn.Module) -> dict:
    """Load weights into ``model`` and return the training state of a checkpoint folder."""
    folder = Path(folder)
    state = read_state(folder / STATE)
    load_weights(model, folder / WEIGHTS)
    return state
