"""Data: named datasets as in-memory tensors in [0, 1], the shifted test sets, and batching."""

from aelf.data.augment import augmentation_for, random_crop_flip
from aelf.data.cifar import read_cifar
from aelf.data.datasets import DATASETS, dataset_info, load_dataset
from aelf.data.idx import read_idx, read_idx_split
from aelf.data.loader import batch_generator, eval_batches, steps_per_epoch, train_batches
from aelf.data.shifts import DIRECTIONS, shift_images, shifted_test_sets

__all__ = [
    "DATASETS",
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
