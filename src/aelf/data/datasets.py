"""Datasets by name, as float tensors of pixels in [0, 1], shape (N, C, 32, 32), with int64 labels.

MNIST-family images are resized to 32 x 32 (Appendix C); CIFAR images are 32 x 32 already and are only scaled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aelf.data.cifar import FORMATS as CIFAR_FORMATS
from aelf.data.cifar import read_cifar
from aelf.data.idx import read_idx_split
from aelf.data.mnist5k import read_mnist5k
from aelf.errors import ConfigError, DataError

IMAGE_SIZE = 32  # Appendix C: MNIST inputs are resized to 32 x 32


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_root: str | None = None


DATASETS = {
    "mnist5k": DatasetInfo("mnist5k", 1, 10, (0.1307,), (0.3081,)),
    "mnist": DatasetInfo("mnist", 1, 10, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 10, (0.2860,), (0.3530,), "/usr/share/datasets/fashion-mnist"),
    # Per-channel mean and standard deviation over every training pixel, in [0, 1] units.
    "cifar10": DatasetInfo("cifar10", 3, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo("cifar100", 3, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (choose from: {', '.join(DATASETS)})")
    return DATASETS[name]


def resize_mnist(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 32, 32) in [0, 1], bilinear resize as in Appendix C."""
    # np.array copies: IDX arrays are read-only views of the file's bytes, which torch cannot wrap.
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255.0).unsqueeze(1)
    if x.shape[-1] != IMAGE_SIZE or x.shape[-2] != IMAGE_SIZE:
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0)


def scale_cifar(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> float (N, 3, 32, 32) in [0, 1]."""
    return torch.from_numpy(images).float().div_(255.0)


def data_root(name: str, root: str | None) -> Path:
    root = root or dataset_info(name).default_root
    if root is None:
        raise ConfigError(f"dataset {name!r} needs a folder: set data.root (e.g. --set data.root=/path/to/{name})")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"data folder not found: {path}")
    return path


def load_dataset(
    name: str, split: str, root: str | None = None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: x (N, C, 32, 32) float32 in [0, 1], y (N,) int64, for ``split`` in ``train`` or ``test``.

    ``limit`` keeps the first N examples. For mnist5k the split is fixed (see :mod:`aelf.data.mnist5k`). CIFAR files
    are checked against the official image counts (see :mod:`aelf.data.cifar`).
    """
    dataset_info(name)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test (got {split!r})")
    if name in CIFAR_FORMATS:
        images, labels = read_cifar(data_root(name, root), name, split)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return scale_cifar(images), torch.from_numpy(labels)
    if name == "mnist5k":
        images, labels = read_mnist5k(split)
    else:
        images, labels = read_idx_split(data_root(name, root), split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return resize_mnist(images), torch.from_numpy(labels.astype(np.int64))
