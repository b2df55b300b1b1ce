"""One writer per run folder: an exclusive ``fcntl.flock`` on ``RUN/.lock``, which holds the writer's pid.

The writer removes the lock file when it leaves, however the block ends (a clean finish, an error, SIGINT/SIGTERM
turned into an exception), so a finished or interrupted run holds no ``.lock``. Only a process that cannot run its
clean-up (SIGKILL, a power cut) leaves one; the kernel releases its flock all the same, so such a file is not a
lock: the next writer takes it over and says so. A second live writer gets one :class:`RunLockedError` naming the
folder and the pid that holds it. flock is advisory and local to a machine (on network file systems it may not
exclude writers on other machines).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aelf.core.errors import AelfError
from aelf.core.run_folder import LOCK

log = logging.getLogger(__name__)


class RunLockedError(AelfError):
    """Another live process is writing the run folder."""


def _holder(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_writer(run_dir: str | Path) -> int | None:
    """The pid of another live process writing ``run_dir`` (training it), from its lock file; None when there is
    none. A lock file exists only while its writer runs, or after a SIGKILL (whose pid is no longer alive)."""
    try:
        pid = _holder((Path(run_dir) / LOCK).read_text(errors="replace")[:32])
    except OSError:
        return None
    return pid if pid and pid != os.getpid() and _alive(pid) else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a leaving writer may have removed it meanwhile)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _acquire(run_dir: Path, path: Path) -> int:
    """An fd of ``path`` holding its exclusive flock; RunLockedError if a live process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            text = os.pread(fd, 32, 0).decode(errors="replace")
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            pid = _holder(text)
            holder = f"process {pid}" if pid else "another process"
            raise RunLockedError(
                f"{run_dir} is being written by {holder} (it holds {path}); wait for it to finish or stop it"
            ) from None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # locked a file its last writer removed as it left: lock the one now at the path


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` for the block; RunLockedError if another process holds it.

    The folder is created if needed. When the block ends the lock file is removed, and so is the folder when this
    call created it and the block left nothing in it (bad input found before anything was written).
    """
    run_dir = Path(run_dir)
    created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    not_folder = next((f for f in (run_dir, *run_dir.parents) if f.exists() and not f.is_dir()), None)
    if not_folder is not None:
        raise AelfError(f"{run_dir}: {not_folder} exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    try:
        fd = _acquire(run_dir, path)
    except BaseException:
        _remove_if_empty(created)
        raise
    try:
        previous = _holder(os.pread(fd, 32, 0).decode(errors="replace"))
        if previous and previous != os.getpid() and not _alive(previous):
            log.warning(
                "aelf: warning: %s was left by process %d, which is no longer running; taking it over", path, previous
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still holding the flock: a writer waiting for it re-checks the path
        os.close(fd)
        _remove_if_empty(created)


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the folders this process created (innermost first) while they are empty."""
    for folder in created:
        if any(folder.iterdir()):
            return
        folder.rmdir()
