"""Fuzz-style: random and truncated bytes fed to every file reader give data or the documented error, nothing else."""

from __future__ import annotations

import gzip
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from aelf.core.checkpoint import STATE, STATE_TENSORS, read_state, read_weights, record_digests, save_checkpoint
from aelf.core.data.cifar import read_cifar
from aelf.core.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from aelf.core.errors import CheckpointError, DataError
from aelf.core.models import CNNb
from aelf.core.run_folder import WEIGHTS
from aelf.core.serialize import sha256

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
def checkpoint_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    state = {"step": 7, "history": [{"loss": 0.5}], "rng": (3, torch.arange(4), None), "opt": {0: torch.ones(2)}}
    return save_checkpoint(root, CNNb(width=0.125), state)


@pytest.mark.parametrize("name", [STATE, STATE_TENSORS, WEIGHTS])
def test_checkpoint_readers_give_data_or_checkpoint_error(tmp_path, checkpoint_folder, name):
    """Damaged bytes fail their manifest; damaged bytes with a matching manifest (forged) fail their parser."""
    folder = tmp_path / "step"
    shutil.copytree(checkpoint_folder, folder)
    valid = (folder / name).read_bytes()
    errors = 0
    for forged in (False, True):
        for data in random_inputs(valid, seed=len(valid)):
            (folder / name).write_bytes(data)
            if forged:
                record_digests(folder, {name: sha256(data)})
            try:
                loaded = read_weights(folder / name) if name == WEIGHTS else read_state(folder)
            except CheckpointError as err:
                assert str(folder) in str(err)
                errors += 1
            else:
                assert forged and isinstance(loaded, dict)
    assert errors > N_RANDOM


def test_readers_of_missing_files_name_them(tmp_path: Path):
    for reader, error in ((read_state, CheckpointError), (read_weights, CheckpointError)):
        with pytest.raises(error, match="file not found|no manifest.json"):
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
