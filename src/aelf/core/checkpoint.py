"""Files that never run code, never half-exist and are checked when read.

- Weights are safetensors; a training state is a JSON document plus a safetensors file of its tensors
  (:mod:`aelf.core.serialize`). No pickle is written or read anywhere.
- Every file's bytes depend only on its contents (sorted safetensors metadata, tensors in a fixed order), so the
  same run gives byte-identical files.
- Every write is atomic (:mod:`aelf.core.fileio`): a crash or a full disk leaves the previous file as it was.
- Every folder of weights (a checkpoint, the run folder) holds ``manifest.json``: the sha256 of each file written
  into it. A file listed there is read only if its bytes still have that digest; damaged bytes are an error naming
  the file, never a silent load.
- A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding ``model.safetensors``, ``state.json``,
  ``state.safetensors`` and ``manifest.json``, renamed into place only when complete. Resuming takes the newest
  checkpoint whose files match their manifest; a damaged newer one is reported (a warning) and skipped.
  ``checkpoints/latest`` names the newest one, for people.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from aelf.core.errors import CheckpointError, WriteFailed
from aelf.core.fileio import fsync_dir, json_text, read_json, usual_mode, write_bytes, write_text
from aelf.core.run_folder import CHECKPOINTS, META, WEIGHTS
from aelf.core.serialize import decode_tree, encode_tree, safetensors_bytes, sha256

STATE = "state.json"
STATE_TENSORS = "state.safetensors"
MANIFEST = "manifest.json"
LEGACY_STATE = "state.pt"  # the pickled training state aelf wrote before safetensors: recognised, never read
LATEST = "latest"
CHECKPOINT_FILES = (WEIGHTS, STATE, STATE_TENSORS)
MANIFEST_FORMAT = "aelf-manifest-1"
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Manifests: the sha256 of each file, written with it and checked when it is read


def manifest_text(digests: dict[str, str]) -> str:
    return json_text({"format": MANIFEST_FORMAT, "sha256": dict(sorted(digests.items()))})


def read_manifest(folder: Path) -> dict[str, str] | None:
    """``{file name: sha256}`` of ``folder/manifest.json``; None when the folder has none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    data = read_json(path)
    digests = data.get("sha256") if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise CheckpointError(f"{path}: not an aelf manifest")
    return digests


def record_digests(folder: Path, digests: dict[str, str]) -> None:
    """Add (or replace) files' digests in ``folder/manifest.json``; a damaged manifest is replaced."""
    try:
        known = read_manifest(folder) or {}
    except CheckpointError:
        known = {}
    write_text(folder / MANIFEST, manifest_text({**known, **digests}))


def read_checked(path: Path, required: bool = False) -> bytes:
    """The bytes of ``path``, checked against its folder's manifest (a missing manifest is an error if ``required``;
    without one, as in runs written before manifests existed, the bytes are only checked by their parser)."""
    if path.is_symlink():
        raise CheckpointError(f"{path}: is a symbolic link; run folders and checkpoints are read only from real files")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    digests = read_manifest(path.parent)
    if digests is None:
        if required:
            raise CheckpointError(f"{path.parent}: no {MANIFEST}, so its files cannot be checked")
        return data
    if path.name not in digests:
        raise CheckpointError(f"{path}: not listed in {path.parent / MANIFEST}; it was not written with that folder")
    if sha256(data) != digests[path.name]:
        raise CheckpointError(
            f"{path}: damaged (its sha256 differs from the one recorded in {MANIFEST} when it was written); "
            "restore it from a copy or retrain"
        )
    return data


# ----------------------------------------------------------------------------------------------------------------------
# Weights and training states


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu").contiguous() for key, value in module.state_dict().items()}


def save_weights(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """The module's state_dict (parameters and buffers) as safetensors, atomically, recorded in the folder's
    manifest."""
    path = Path(path)
    data = safetensors_bytes(_plain_state(module), metadata)
    write_bytes(path, data)
    record_digests(path.parent, {path.name: sha256(data)})


def parse_safetensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own error types for every malformed input
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(err).splitlines()[0][:200]})") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; CheckpointError naming the file if it is missing, truncated, corrupt or does
    not match its folder's manifest."""
    path = Path(path)
    return parse_safetensors(path, read_checked(path))


def load_weights(
    module: nn.Module,
    path: str | Path,
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> None:
    """Copy the weights in ``path`` into ``module``; every key and shape must match. ``convert``: lays the file's
    tensors out for ``module`` first (:func:`aelf.core.models.split_bn.split_state` for a split-BN model starting
    from a plain run)."""
    tensors = read_weights(path)
    if convert is not None:
        tensors = convert(tensors)
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


def state_files(state: dict[str, Any]) -> dict[str, bytes]:
    """A training state as ``{state.json: ..., state.safetensors: ...}`` bytes."""
    document, tensors = encode_tree(state)
    return {
        STATE: (json.dumps(document, separators=(",", ":")) + "\n").encode(),
        STATE_TENSORS: safetensors_bytes(tensors),
    }


def read_state(folder: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint folder (``state.json`` and ``state.safetensors``, checked against the
    folder's manifest). JSON and tensors only: reading it runs no code."""
    folder = Path(folder)
    if (folder / LEGACY_STATE).exists() and not (folder / STATE).exists():
        raise CheckpointError(legacy_message(folder))
    path = folder / STATE
    try:
        document = json.loads(read_checked(path, required=True))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a valid aelf training state ({err})") from None
    tensors = parse_safetensors(folder / STATE_TENSORS, read_checked(folder / STATE_TENSORS, required=True))
    state = decode_tree(document, tensors, str(path))
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: not a valid aelf training state (no step counter)")
    return state


def legacy_message(folder: Path) -> str:
    return (
        f"{folder / LEGACY_STATE}: a training state in the old pickled format (written by aelf before its checkpoints "
        "became safetensors), which this version never reads; finish the run with the aelf version that started it "
        "(its git revision is in "
        f"{META}) or retrain it with this one"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint folders


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoints_root(run_dir: str | Path) -> Path:
    root = Path(run_dir) / CHECKPOINTS
    if root.is_symlink():
        raise CheckpointError(f"{root}: is a symbolic link; checkpoints are kept only in a real folder of the run")
    return root


def save_checkpoint(run_dir: str | Path, model: nn.Module, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``checkpoints/step-N/`` completely (with its manifest), then rename it into place and point
    ``checkpoints/latest`` at it; keep the newest ``keep``."""
    root = checkpoints_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(state["step"])
    files = {WEIGHTS: safetensors_bytes(_plain_state(model)), **state_files(state)}
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    staging.chmod(usual_mode(0o777))
    try:
        for name, data in files.items():
            write_bytes(staging / name, data)
        write_text(staging / MANIFEST, manifest_text({name: sha256(data) for name, data in files.items()}))
        fsync_dir(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        fsync_dir(root)
        write_text(root / LATEST, final.name + "\n")
    except WriteFailed as err:  # named by the checkpoint, not by its removed staging folder
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteFailed(err.errno, err.strerror, str(final)) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in checkpoint_folders(root)[keep:]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_folders(root: Path) -> list[Path]:
    """The finished checkpoint folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()), reverse=True)


def verify_checkpoint(folder: Path) -> None:
    """CheckpointError unless every file of the checkpoint is present, a real file and matches its manifest."""
    if folder.is_symlink():
        raise CheckpointError(f"{folder}: is a symbolic link; checkpoints are read only from real folders")
    if (folder / LEGACY_STATE).exists() and not (folder / STATE).exists():
        raise CheckpointError(legacy_message(folder))
    for name in CHECKPOINT_FILES:
        read_checked(folder / name, required=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint folder whose files match their manifest, or None when the run has none yet.

    A newer checkpoint that is damaged (or incomplete) is reported with a warning and the next older one is used;
    when every checkpoint is damaged, CheckpointError names each problem. A checkpoint in the old pickled format
    or behind a symbolic link is refused outright.
    """
    root = checkpoints_root(run_dir)
    problems = []
    for folder in checkpoint_folders(root):
        if folder.is_symlink() or ((folder / LEGACY_STATE).exists() and not (folder / STATE).exists()):
            verify_checkpoint(folder)  # raises: never fall back past a planted link or an old-format run
        try:
            verify_checkpoint(folder)
        except CheckpointError as err:
            log.warning("aelf: warning: checkpoint %s is not usable (%s); trying an older one", folder.name, err)
            problems.append(str(err))
            continue
        return folder
    if problems:
        raise CheckpointError(f"no usable checkpoint in {root}: " + "; ".join(problems))
    return None


def load_checkpoint(folder: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load weights into ``model`` and return the training state of a checkpoint folder."""
    folder = Path(folder)
    state = read_state(folder)
    load_weights(model, folder / WEIGHTS)
    return state


def clean_staging(run_dir: str | Path) -> list[Path]:
    """Remove what an interrupted write leaves behind: temporary files (``.NAME.*.tmp``) in the run folder and its
    checkpoints folder, and half-written checkpoint folders (``checkpoints/.step-*``). Returns what was removed."""
    run_dir = Path(run_dir)
    root = checkpoints_root(run_dir)
    removed = []
    for folder in (run_dir, root):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                path.unlink()
                removed.append(path)
            elif folder == root and path.name.startswith(".step-") and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed.append(path)
    return removed
