"""Fuzz-style: random and truncated bytes fed to every file reader give data or the documented error, nothing else."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from aelf.core.checkpoint import read_state, read_weights, save_checkpoint
from aelf.core.data.cifar import read_cifar
from aelf.core.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from aelf.core.errors import CheckpointError, DataError
from aelf.core.models import CNNb

N_RANDOM = 150


def random_inputs(valid: bytes, seed: int) -> list[bytes]:
    """Every kind of damage: truncations of a valid file, flipped bytes, random bytes with and without its header."""
    rng = random.Random(seed)
    cuts = sorted({0, 1, 2, 3, 4, 7, 8, 15, 16, len(valid) - 1} | {rng.randrange(len(valid)) for _ in range(30)})
    damaged = [valid[:cut] for cut in cuts if 0 <= cut < len(valid)]
    for _ in range(N_RANDOM // 3):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        damaged.append(bytes(data))
    for _ in range(N_RANDOM // 3):
        damaged.append(rng.randbytes(rng.randint(0, 2048)))
        damaged.append(valid[:16] + rng.randbytes(rng.randint(0, 2048)))
    damaged.append(gzip.compress(valid)[: rng.randint(1, 40)])  # a truncated gzip stream
    return damaged


def idx_file(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


@pytest.mark.parametrize("magic,shape", [(IMAGES_MAGIC, (5, 28, 28)), (LABELS_MAGIC, (5,))])
def test_idx_reader_gives_data_or_data_error(tmp_path, magic, shape):
    valid = idx_file(np.arange(np.prod(shape), dtype=np.uint8).reshape(shape), magic)
    path = tmp_path / "file-idx"
    outcomes = {"data": 0, "error": 0}
    for data in random_inputs(valid, seed=magic):
        path.write_bytes(data)
        try:
            array = read_idx(path, magic)
        except DataError as err:
            assert str(path) in str(err)
            outcomes["error"] += 1
        else:
            assert array.dtype == np.uint8 and array.ndim == len(shape)
            outcomes["data"] += 1
    assert outcomes["error"] > N_RANDOM // 2, "truncated and random inputs must be rejected"
    assert outcomes["data"] > 0, "flipped pixel bytes still make a valid file"


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory) -> tuple[bytes, bytes]:
    root = tmp_path_factory.mktemp("ckpt")
    folder = save_checkpoint(root, CNNb(width=0.125), {"step": 7, "history": [{"loss": 0.5}]})
    return (folder / "state.pt").read_bytes(), (folder / "model.safetensors").read_bytes()


@pytest.mark.parametrize("which", ["state", "weights"])
def test_checkpoint_readers_give_data_or_checkpoint_error(tmp_path, checkpoint_files, which):
    valid = checkpoint_files[0] if which == "state" else checkpoint_files[1]
    reader = read_state if which == "state" else read_weights
    path = tmp_path / ("state.pt" if which == "state" else "model.safetensors")
    errors = 0
    for data in random_inputs(valid, seed=len(valid)):
        path.write_bytes(data)
        try:
            loaded = reader(path)
        except CheckpointError as err:
            assert str(path) in str(err)
            errors += 1
        else:
            assert isinstance(loaded, dict)
    assert errors > N_RANDOM // 2


def test_readers_of_missing_files_name_them(tmp_path: Path):
    for reader, error in ((read_state, CheckpointError), (read_weights, CheckpointError)):
        with pytest.raises(error, match="file not found"):
            reader(tmp_path / "nothing")
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nothing", IMAGES_MAGIC)


@pytest.mark.parametrize("name,file_name", [("cifar10", "test_batch.bin"), ("cifar100", "test.bin")])
def test_cifar_reader_gives_data_or_data_error(tmp_path, name, file_name):
    from test_cifar import write_cifar10, write_cifar100

    folder = tmp_path / ("cifar-10-batches-bin" if name == "cifar10" else "cifar-100-binary")
    (write_cifar10 if name == "cifar10" else write_cifar100)(folder)
    valid = (folder / file_name).read_bytes()
    outcomes = {"data": 0, "error": 0}
    for data in random_inputs(valid, seed=len(file_name)):
        (folder / file_name).write_bytes(data)
        try:
            images, labels = read_cifar(tmp_path, name, "test", check_counts=False)
        except DataError as err:
            assert file_name in str(err)
            outcomes["error"] += 1
        else:
            assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32) and len(labels) == len(images)
            outcomes["data"] += 1
    assert outcomes["error"] > N_RANDOM // 3 and outcomes["data"] > 0


def test_cifar_archive_reader_gives_data_or_data_error(tmp_path):
    from test_cifar import make_archive, write_cifar10

    written = write_cifar10(tmp_path / "files")
    members = {f"cifar-10-batches-bin/{n}": (tmp_path / "files" / n).read_bytes() for n in written}
    make_archive(tmp_path / "valid.tar.gz", members)
    valid = (tmp_path / "valid.tar.gz").read_bytes()
    root = tmp_path / "root"
    root.mkdir()
    errors = 0
    for data in random_inputs(valid, seed=3):
        (root / "cifar-10-binary.tar.gz").write_bytes(data)
        try:
            read_cifar(root, "cifar10", "test", check_counts=False)
        except DataError as err:
            assert "cifar-10-binary.tar.gz" in str(err)
            errors += 1
    assert errors > N_RANDOM // 3
