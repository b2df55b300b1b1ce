"""Writing and reading the files of aelf: each write is atomic and durable, each read of JSON one clear error.

- Every write goes to a temporary name in the target's folder (``.NAME.*.tmp``), is fsynced, then renamed over the
  target and the folder fsynced: a crash or a full disk leaves the previous file as it was.
- Files get the usual permissions (0o666 less the umask), not the private ones of :mod:`tempfile`: run folders are
  shared on clusters.
- JSON is written indented with a final newline; reading a missing or malformed file is a
  :class:`~aelf.core.errors.CheckpointError` naming it.
- A cached result (:func:`write_cached`) is stored with the key it was computed for and read back only under that key.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aelf.core.errors import CheckpointError, WriteFailed


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def usual_mode(base: int) -> int:
    """``base`` (0o666 for files, 0o777 for folders) less the process umask: what ``open`` and ``mkdir`` give. The
    temporary names of :mod:`tempfile` start private (0o600, 0o700); run folders are shared on clusters."""
    try:  # Linux says it without changing it (os.umask sets it for every thread while it reads)
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:"))
        mask = int(line.split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return base & ~mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, fsync it and rename it to ``path``; on any failure ``path`` is untouched. An
    operating-system error is raised as :class:`~aelf.core.errors.WriteFailed` naming ``path``."""
    path = Path(path)
    try:
        _atomic_write(path, write)
    except WriteFailed:
        raise
    except OSError as err:
        raise WriteFailed(err.errno, err.strerror or str(err), str(path)) from err


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(usual_mode(0o666))
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json_text(data))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None


def read_cached(path: str | Path, key: Any) -> Any | None:
    """The ``result`` that :func:`write_cached` stored at ``path`` under ``key`` (compared as it reads back from
    JSON); None when the file is missing, damaged or holds another key."""
    try:
        saved = read_json(path)
    except CheckpointError:
        return None
    if isinstance(saved, dict) and saved.get("key") == json.loads(json_text(key)):
        return saved.get("result")
    return None


def write_cached(path: str | Path, key: Any, result: Any, **extra: Any) -> None:
    """Store ``result`` under ``key``; ``extra``: more fields beside them (e.g. how long the result took)."""
    write_json(path, {"key": key, "result": result, **extra})
