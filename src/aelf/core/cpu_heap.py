"""Keep freed CPU memory in the process's heap while a run trains or is evaluated (glibc), not handing it back.

PyTorch's CPU allocator is plain ``malloc``. glibc serves blocks above its mmap threshold (128 KiB at first, rising
to at most 32 MiB) with a fresh ``mmap`` and unmaps them on ``free``, and it returns the top of the heap to the
kernel once more than the trim threshold is free. A training step allocates and frees the same large activations
again and again (a CNNb activation of batch 128 is exactly 32 MiB), so every step faults in, and the kernel zeroes,
the same fresh pages again.

:func:`retained_heap` turns glibc's mmap off (``M_MMAP_MAX = 0``, so every block comes from the heap) and stops it
from trimming (``M_TRIM_THRESHOLD`` at its maximum): after the first step, freed memory is reused without page
faults. The price is memory: the heap keeps its high-water mark. The losses are the same bit for bit; what it saves
and costs is measured in BENCHMARKS.md ("CPU heap"). On exit the previous behaviour is restored, as far as
glibc allows (see :func:`retained_heap`), and the free memory is handed back with ``malloc_trim(0)``.

Nothing happens on other C libraries (macOS, musl) or for CUDA training, whose tensors use PyTorch's caching
allocator on the device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import torch

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536  # glibc's default number of mmapped blocks at a time
MAX_INT = 2**31 - 1  # mallopt takes an int


class HeapSetting(Protocol):
    """The part of a run's ``train`` settings this module reads."""

    @property
    def retain_cpu_heap(self) -> bool: ...


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc with ``mallopt`` and ``malloc_trim``, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def supported() -> bool:
    return glibc() is not None


_depth = 0  # retained_heap blocks now open: only the outermost one changes glibc's settings


@contextmanager
def retained_heap(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed CPU memory stays in the heap (see the module's text); yields whether it is retained.

    Blocks nest: an inner block inside a retaining one changes nothing. On exit of the outermost, the mmap limit goes
    back to glibc's default and the thresholds to fixed values that a long-running process reaches anyway (mmap above
    32 MiB, trim above 64 MiB); glibc's automatic raising of its thresholds (before the first mallopt) cannot be
    switched back on.
    """
    global _depth
    libc = glibc() if enabled else None
    if libc is None:
        yield _depth > 0
        return
    if _depth == 0:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, MAX_INT)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
            libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024)
            libc.malloc_trim(0)


def for_run(train_config: HeapSetting, device: torch.device) -> AbstractContextManager[bool]:
    """:func:`retained_heap` as a run's ``train.retain_cpu_heap`` asks, for its work on ``device`` (a
    :class:`torch.device`; only CPU work is affected)."""
    return retained_heap(train_config.retain_cpu_heap and device.type == "cpu")
