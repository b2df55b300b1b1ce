"""Datasets by name, as float tensors of pixels in [0, 1], shape (N, C, 32, 32), with int64 labels.

Adding a dataset: a reader ``read(root, split) -> (images, labels)`` (uint8 arrays; images (N, H, W) or (N, C, H, W))
in a file of its own, plus one :class:`DatasetInfo` line in :data:`DATASETS` naming its family
(:mod:`aelf.core.data.families`: the default attacks and the augmentation). MNIST-family images are resized to
32 x 32 (Appendix C); CIFAR images are 32 x 32 already and are only scaled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aelf.core.data.cifar import read_cifar10, read_cifar100
from aelf.core.data.families import CIFAR, MNIST, Family
from aelf.core.data.idx import read_idx_split
from aelf.core.data.mnist5k import read_mnist5k
from aelf.core.errors import ConfigError, DataError

IMAGE_SIZE = 32  # Appendix C: MNIST inputs are resized to 32 x 32


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset's registry entry: what the model needs (channels, classes, normalisation), how to read it,
    and what the model card and ``--help`` say about it (sizes, split, description, reference)."""

    name: str
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]  # per channel, over every training pixel, in [0, 1] units (the model's normalisation)
    std: tuple[float, ...]
    family: Family
    read: Callable[[Any, str], tuple[np.ndarray, np.ndarray]]  # (root or None, split) -> uint8 images, labels
    needs_root: bool = True  # read from files in data.root (else embedded in the package)
    default_root: str | None = None
    n_train: int | None = None  # images of the full splits (a run's sizes are stated from its limits)
    n_test: int | None = None
    split: str = "the dataset's official train and test sets"  # how train and test are divided, in words
    description: str = ""  # one line
    reference: str = ""


def _embedded_mnist5k(root: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_mnist5k(split)


DATASETS = {
    info.name: info
    for info in (
        DatasetInfo(
            "mnist5k",
            1,
            10,
            (0.1307,),
            (0.3081,),
            MNIST,
            _embedded_mnist5k,
            needs_root=False,
            n_train=4000,
            n_test=1000,
            split="fixed: within each class the first 400 digits train, the last 100 test",
            description="5,000 real MNIST digits embedded in the package, 500 per class",
            reference="a subset of MNIST, LeCun et al. 1998",
        ),
        DatasetInfo(
            "mnist",
            1,
            10,
            (0.1307,),
            (0.3081,),
            MNIST,
            read_idx_split,
            n_train=60000,
            n_test=10000,
            description="handwritten digits, IDX files in data.root",
            reference="LeCun et al. 1998",
        ),
        DatasetInfo(
            "fashion-mnist",
            1,
            10,
            (0.2860,),
            (0.3530,),
            MNIST,
            read_idx_split,
            default_root="/usr/share/datasets/fashion-mnist",
            n_train=60000,
            n_test=10000,
            description="images of clothing in MNIST's format, IDX files in data.root",
            reference="Xiao et al. 2017",
        ),
        DatasetInfo(
            "cifar10",
            3,
            10,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            CIFAR,
            read_cifar10,
            n_train=50000,
            n_test=10000,
            description="32 x 32 colour images of 10 classes, the official binary version in data.root",
            reference="Krizhevsky 2009",
        ),
        DatasetInfo(
            "cifar100",
            3,
            100,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            CIFAR,
            read_cifar100,
            n_train=50000,
            n_test=10000,
            description="32 x 32 colour images of 100 classes, the official binary version in data.root",
            reference="Krizhevsky 2009",
        ),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (choose from: {', '.join(DATASETS)})")
    return DATASETS[name]


def augmentation_for(dataset_name: str) -> Callable[..., torch.Tensor] | None:
    """The training augmentation of a dataset's family (Appendix C: random crops and flips on CIFAR, none on the MNIST
    family), called as ``augment(x, generator=generator)``; ConfigError for an unknown dataset."""
    return dataset_info(dataset_name).family.augment


def to_pixels(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float (N, C, size, size) in [0, 1] (``size`` None: 32); other sizes are
    resized bilinearly, as Appendix C resizes MNIST's 28 x 28 digits (``size`` 28 keeps them as they are)."""
    size = IMAGE_SIZE if size is None else size
    # np.array copies: IDX arrays are read-only views of the file's bytes, which torch cannot wrap.
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x


def data_root(name: str, root: str | None) -> Path:
    root = root or dataset_info(name).default_root
    if root is None:
        raise ConfigError(f"dataset {name!r} needs a folder: set data.root (e.g. --set data.root=/path/to/{name})")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"data folder not found: {path}")
    return path


def load_dataset(
    name: str, split: str, root: str | None = None, limit: int | None = None, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: x (N, C, 32, 32) float32 in [0, 1], y (N,) int64, for ``split`` in ``train`` or ``test``.

    ``limit`` keeps the first N examples; ``size`` gives square images of that size instead of 32 (``data.image_size``;
    28 keeps MNIST's digits as they are). For mnist5k the split is fixed (see :mod:`aelf.core.data.mnist5k`). CIFAR
    files are checked against the official image counts (see :mod:`aelf.core.data.cifar`).
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test (got {split!r})")
    images, labels = info.read(data_root(name, root) if info.needs_root else None, split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return to_pixels(images, size), torch.from_numpy(np.asarray(labels).astype(np.int64))
