"""One writer per run folder: an exclusive ``fcntl.flock`` on ``RUN/.lock``, which holds the writer's pid.

The kernel releases a flock when its process ends, however it ends (SIGKILL included), so a lock file left by a
dead process is not a lock: the next writer takes it over and says so. A second live writer gets one
:class:`RunLockedError` naming the folder and the pid that holds it. flock is advisory and local to a machine
(on network file systems it may not exclude writers on other machines).
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

LOCK = ".lock"
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


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` for the block; RunLockedError if another process holds it.

    The folder is created if needed, and removed again if the block leaves nothing in it but the lock (bad input
    found before anything was written).
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            pid = _holder(os.pread(fd, 32, 0).decode(errors="replace"))
            holder = f"process {pid}" if pid else "another process"
            raise RunLockedError(
                f"{run_dir} is being written by {holder} (it holds {path}); wait for it to finish or stop it"
            ) from None
        previous = _holder(os.pread(fd, 32, 0).decode(errors="replace"))
        if previous and previous != os.getpid() and not _alive(previous):
            log.warning(
                "aelf: warning: %s was left by process %d, which is no longer running; taking it over", path, previous
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK]:
            path.unlink()
            run_dir.rmdir()
        os.close(fd)  # releases the flock; the file stays, holding the last writer's pid
