"""Data: named datasets as in-memory tensors in [0, 1], the shifted test sets, and batching."""

from aelf.core.data.augment import random_crop_flip
from aelf.core.data.cifar import read_cifar
from aelf.core.data.datasets import DATASETS, augmentation_for, dataset_info, load_dataset
from aelf.core.data.families import FAMILIES, Family
from aelf.core.data.idx import read_idx, read_idx_split
from aelf.core.data.loader import batch_generator, eval_batches, steps_per_epoch, train_batches
from aelf.core.data.shifts import DIRECTIONS, shift_images, shifted_test_sets

__all__ = [
    "DATASETS",
    "FAMILIES",
    "Family",
    "augmentation_for",
    "batch_generator",
    "random_crop_flip",
    "read_cifar",
    "DIRECTIONS",
    "dataset_info",
    "eval_batches",
    "load_dataset",
    "read_idx",
    "read_idx_split",
    "shift_images",
    "steps_per_epoch",
    "shifted_test_sets",
    "train_batches",
]
