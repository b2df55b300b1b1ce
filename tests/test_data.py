import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from aelf.core.data import load_dataset, read_idx, read_idx_split
from aelf.core.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from aelf.core.errors import ConfigError, DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray, compress: bool) -> None:
    prefix = "train" if split == "train" else "t10k"
    for stem, array, magic in (
        (f"{prefix}-images-idx3-ubyte", images, IMAGES_MAGIC),
        (f"{prefix}-labels-idx1-ubyte", labels, LABELS_MAGIC),
    ):
        data = idx_bytes(array, magic)
        if compress:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = (np.arange(12) % 10).astype(np.uint8)
    write_split(tmp_path, "train", images, labels, compress=True)
    write_split(tmp_path, "test", images[:5], labels[:5], compress=False)
    return tmp_path, images, labels


def test_idx_round_trip_gzip_and_raw(idx_folder):
    root, images, labels = idx_folder
    got_images, got_labels = read_idx_split(root, "train")
    assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    got_images, got_labels = read_idx_split(root, "test")
    assert np.array_equal(got_images, images[:5])


def test_folder_dataset_is_resized_to_32_and_scaled(idx_folder):
    root, images, labels = idx_folder
    x, y = load_dataset("mnist", "train", root=str(root))
    assert x.shape == (12, 1, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.tolist() == labels.tolist()


def test_bad_magic_names_file_and_problem(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8), IMAGES_MAGIC)[:3] + b"\x01" + b"\0" * 12)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: bad IDX magic number 2049 \(expected 2051"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_file_names_sizes(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8), IMAGES_MAGIC)[:-10])
    with pytest.raises(DataError, match=r"x.idx: truncated: header promises \(3, 28, 28\)"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_header_and_trailing_bytes(tmp_path):
    path = tmp_path / "h.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8), IMAGES_MAGIC)[:9])
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path, IMAGES_MAGIC)
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8), LABELS_MAGIC) + b"extra")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path, LABELS_MAGIC)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(40, np.uint8), LABELS_MAGIC))[:20])
    with pytest.raises(DataError, match="labels.gz: corrupt or truncated gzip"):
        read_idx(path, LABELS_MAGIC)


def test_count_mismatch_between_images_and_labels(idx_folder):
    root, images, labels = idx_folder
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels[:7], LABELS_MAGIC)))
    with pytest.raises(DataError, match="12 images but 7 labels"):
        read_idx_split(root, "train")


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_dataset("fashion-mnist", "train", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        load_dataset("mnist", "train", root=str(tmp_path))
    with pytest.raises(ConfigError, match="needs a folder"):
        load_dataset("mnist", "train")


def test_mnist5k_fixed_split():
    x_train, y_train = load_dataset("mnist5k", "train")
    x_test, y_test = load_dataset("mnist5k", "test")
    assert x_train.shape == (4000, 1, 32, 32) and x_test.shape == (1000, 1, 32, 32)
    assert torch.bincount(y_train).tolist() == [400] * 10
    assert torch.bincount(y_test).tolist() == [100] * 10
    assert y_train[:10].tolist() == list(range(10)), "classes are interleaved so prefixes are balanced"
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.9
    train_rows = {row.numpy().tobytes() for row in x_train.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in x_test.flatten(1)[:200])


def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar99'"):
        load_dataset("cifar99", "train")
    with pytest.raises(ConfigError, match="split must be train or test"):
        load_dataset("mnist5k", "valid")


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    x, y = load_dataset("fashion-mnist", "test", limit=50)
    assert x.shape == (50, 1, 32, 32)
    images, labels = read_idx_split(FASHION, "test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert os.path.getsize(FASHION / "t10k-labels-idx1-ubyte.gz") > 0
