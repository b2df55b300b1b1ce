import io
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aelf.core.data import augmentation_for, cifar, dataset_info, load_dataset, random_crop_flip
from aelf.core.data.cifar import read_cifar
from aelf.core.errors import ConfigError, DataError

CIFAR10_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]


def records(images: np.ndarray, *label_columns: np.ndarray) -> bytes:
    """Official binary records: the label bytes, then the image's 3072 bytes in (3, 32, 32) order."""
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return b"".join(row.tobytes() + image.tobytes() for row, image in zip(labels, images, strict=True))


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(folder, per_file: int = 2):
    """Five tiny training batches and a test batch; returns {file name: (images, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, name in enumerate([*CIFAR10_TRAIN, "test_batch.bin"]):
        images = random_images(per_file, index)
        labels = (np.arange(per_file) + index) % 10
        (folder / name).write_bytes(records(images, labels))
        written[name] = (images, labels)
    return written


def write_cifar100(folder, n: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, name in enumerate(["train.bin", "test.bin"]):
        images = random_images(n, 10 + index)
        coarse, fine = np.arange(n) % 20, (np.arange(n) * 37 + index) % 100
        (folder / name).write_bytes(records(images, coarse, fine))
        written[name] = (images, fine)
    return written


def make_archive(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_record_layout_is_label_then_channel_major_pixels(tmp_path):
    # One hand-written record: red plane all 10, green all 20 except row 2, column 3 = 99, blue all 30.
    pixels = bytearray([10] * 1024 + [20] * 1024 + [30] * 1024)
    pixels[1024 + 2 * 32 + 3] = 99
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(bytes([7]) + bytes(pixels))
    images, labels = read_cifar(tmp_path, "cifar10", "test", check_counts=False)
    assert images.dtype == np.uint8 and images.shape == (1, 3, 32, 32)
    assert labels.dtype == np.int64 and labels.tolist() == [7]
    assert (images[0, 0] == 10).all() and (images[0, 2] == 30).all()
    assert images[0, 1, 2, 3] == 99 and (images[0, 1] == 20).sum() == 1023


def test_cifar10_folder_and_root_read_every_batch_in_order(tmp_path):
    written = write_cifar10(tmp_path / "cifar-10-batches-bin")
    images, labels = read_cifar(tmp_path, "cifar10", "train", check_counts=False)
    assert np.array_equal(images, np.concatenate([written[n][0] for n in CIFAR10_TRAIN]))
    assert labels.tolist() == np.concatenate([written[n][1] for n in CIFAR10_TRAIN]).tolist()
    flat = write_cifar10(tmp_path / "flat")
    images, labels = read_cifar(tmp_path / "flat", "cifar10", "test", check_counts=False)
    assert np.array_equal(images, flat["test_batch.bin"][0]) and labels.tolist() == flat["test_batch.bin"][1].tolist()


def test_cifar100_uses_the_fine_label(tmp_path):
    written = write_cifar100(tmp_path / "cifar-100-binary")
    for split in ("train", "test"):
        images, labels = read_cifar(tmp_path, "cifar100", split, check_counts=False)
        expected_images, fine = written[f"{split}.bin"]
        assert np.array_equal(images, expected_images) and labels.tolist() == fine.tolist()
    assert labels.max() > 19, "the fine label (0-99), not the coarse one"


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_reads_like_the_folder(tmp_path, name):
    fmt = cifar.FORMATS[name]
    folder = tmp_path / "extracted"
    (write_cifar10 if name == "cifar10" else write_cifar100)(folder / fmt.folder)
    members = {"readme.html": b"<html></html>"}
    members.update({f"{fmt.folder}/{path.name}": path.read_bytes() for path in sorted((folder / fmt.folder).iterdir())})
    (tmp_path / "archived").mkdir()
    make_archive(tmp_path / "archived" / fmt.archive, members)
    for split in ("train", "test"):
        from_folder = read_cifar(folder, name, split, check_counts=False)
        from_archive = read_cifar(tmp_path / "archived", name, split, check_counts=False)
        assert all(np.array_equal(a, b) for a, b in zip(from_folder, from_archive, strict=True))


@pytest.mark.parametrize("evil", ["../evil", "/etc/evil", "cifar-10-batches-bin/../../evil"])
def test_archive_with_unsafe_member_path_is_rejected(tmp_path, evil):
    make_archive(tmp_path / "cifar-10-binary.tar.gz", {evil: b"x", "cifar-10-batches-bin/test_batch.bin": b""})
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz: unsafe member path .*evil"):
        read_cifar(tmp_path, "cifar10", "test", check_counts=False)
    assert not (tmp_path.parent / "evil").exists()


def test_truncated_file_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10(folder)
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"data_batch_3.bin: truncated: 6141 bytes is not a whole number of 3073"):
        read_cifar(tmp_path, "cifar10", "train", check_counts=False)


def test_truncated_archive_member_and_corrupt_archive(tmp_path):
    data = records(random_images(2, 0), np.array([1, 2]))
    make_archive(tmp_path / "cifar-10-binary.tar.gz", {"cifar-10-batches-bin/test_batch.bin": data[:-1]})
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz:cifar-10-batches-bin/test_batch.bin: truncated"):
        read_cifar(tmp_path, "cifar10", "test", check_counts=False)
    make_archive(tmp_path / "cifar-10-binary.tar.gz", {"cifar-10-batches-bin/test_batch.bin": data})
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz: corrupt or truncated"):
        read_cifar(tmp_path, "cifar10", "test", check_counts=False)


def test_labels_out_of_range_name_the_file(tmp_path):
    (tmp_path / "test_batch.bin").write_bytes(records(random_images(3, 0), np.array([1, 10, 2])))
    with pytest.raises(DataError, match=r"test_batch.bin: label 10 out of range 0-9 \(image 1"):
        read_cifar(tmp_path, "cifar10", "test", check_counts=False)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "test.bin").write_bytes(records(random_images(2, 0), np.array([3, 4]), np.array([99, 100])))
    with pytest.raises(DataError, match=r"test.bin: fine label 100 out of range 0-99"):
        read_cifar(tmp_path, "cifar100", "test", check_counts=False)
    (folder / "test.bin").write_bytes(records(random_images(1, 0), np.array([20]), np.array([5])))
    with pytest.raises(DataError, match=r"test.bin: coarse label 20 out of range 0-19"):
        read_cifar(tmp_path, "cifar100", "test", check_counts=False)


def test_official_counts_are_checked_by_default(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="test_batch.bin: has 2 images, the official CIFAR-10 file has 10000"):
        read_cifar(tmp_path, "cifar10", "test")
    archive_root = tmp_path / "archived"
    archive_root.mkdir()
    data = (tmp_path / "test_batch.bin").read_bytes()
    make_archive(archive_root / "cifar-10-binary.tar.gz", {"cifar-10-batches-bin/test_batch.bin": data})
    with pytest.raises(DataError, match="test_batch.bin: has 2 images, the official CIFAR-10 file has 10000"):
        read_cifar(archive_root, "cifar10", "test")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"no CIFAR-10 binary data: expected cifar-10-batches-bin/data_batch_1.bin"):
        read_cifar(tmp_path, "cifar10", "train")
    (tmp_path / "cifar-100-python").mkdir()
    with pytest.raises(DataError, match="found cifar-100-python, the pickled python version"):
        read_cifar(tmp_path, "cifar100", "train")
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10(folder)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match="cifar-10-batches-bin: missing data_batch_4.bin"):
        read_cifar(tmp_path, "cifar10", "train", check_counts=False)
    (folder / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError, match="test_batch.bin: empty file"):
        read_cifar(tmp_path, "cifar10", "test", check_counts=False)
    archive_root = tmp_path / "archived"
    archive_root.mkdir()
    make_archive(archive_root / "cifar-10-binary.tar.gz", {"cifar-10-batches-bin/test_batch.bin": b""})
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz: missing member cifar-10-batches-bin/data_batch_1"):
        read_cifar(archive_root, "cifar10", "train")


def test_load_dataset_scales_cifar_to_float_in_0_1(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path / "cifar-100-binary", n=5)
    monkeypatch.setitem(cifar.OFFICIAL_COUNTS, "cifar100", {"train.bin": 5, "test.bin": 5})
    x, y = load_dataset("cifar100", "train", root=str(tmp_path), limit=4)
    images, fine = written["train.bin"]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(images[:4]).float() / 255) and y.tolist() == fine[:4].tolist()
    assert dataset_info("cifar100").num_classes == 100 and dataset_info("cifar10").in_channels == 3
    with pytest.raises(ConfigError, match="'cifar10' needs a folder: set data.root"):
        load_dataset("cifar10", "test")


def test_tiny_cifar_run_trains_and_loads_back(tmp_path, monkeypatch):
    from aelf.core.config import make_config
    from aelf.core.run import load_model
    from aelf.core.train import train

    write_cifar10(tmp_path / "cifar-10-batches-bin", per_file=8)
    monkeypatch.setitem(cifar.OFFICIAL_COUNTS, "cifar10", dict.fromkeys(cifar.OFFICIAL_COUNTS["cifar10"], 8))
    config = make_config(
        {
            "data": {"name": "cifar10", "root": str(tmp_path)},
            "model": {"name": "wrn", "depth": 10, "widen_factor": 1, "width": 0.25, "dropout": 0.2},
            "train": {"epochs": 1, "batch_size": 16, "lr_milestones": []},
            "eval": {"batch_size": 8, "attack": {"eps": "8/255", "n_steps": 1, "step_size": "8/255"}},
        }
    )
    run = train(config, tmp_path / "run", progress=False)
    model = load_model(run)
    assert model.head.out_features == 10 and model.stem.in_channels == 3 and model.blocks[0].dropout.p == 0.2


# ----------------------------------------------------------------------------------------------------------------------
# Augmentation


def reference_crop_flip(x, padding, seed):
    """The same draws as random_crop_flip, applied one image at a time with slicing and torch.flip."""
    generator = torch.Generator().manual_seed(seed)
    n = len(x)
    rows = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    cols = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator)
    padded = F.pad(x, (padding,) * 4)
    out = []
    for i in range(n):
        crop = padded[i, :, rows[i] : rows[i] + x.shape[2], cols[i] : cols[i] + x.shape[3]]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


def test_crop_flip_shape_range_and_determinism():
    x = torch.rand(64, 3, 32, 32)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_flip_matches_a_per_image_computation():
    x = torch.rand(40, 3, 8, 6)
    for padding in (0, 2, 3):
        got = random_crop_flip(x, padding=padding, generator=torch.Generator().manual_seed(padding))
        assert torch.equal(got, reference_crop_flip(x, padding, seed=padding))


def first_draws(seed: int, padding: int) -> tuple[int, int, int]:
    """Row offset, column offset and flip flag that random_crop_flip draws for a one-image batch."""
    generator = torch.Generator().manual_seed(seed)
    offsets = [torch.randint(0, 2 * padding + 1, (1,), generator=generator).item() for _ in range(2)]
    return offsets[0], offsets[1], torch.randint(0, 2, (1,), generator=generator).item()


def test_crop_flip_by_hand():
    # Seed chosen so the first image gets row offset 0, column offset 3 and a flip: with padding 2 the crop holds
    # two zero rows on top, its columns are padded columns 3..6 (image columns 1..3 and one zero column), reversed.
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4) / 16
    seed = next(s for s in range(1000) if first_draws(s, padding=2) == (0, 3, 1))
    got = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(seed))[0, 0] * 16
    expected = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 4, 3, 2], [0, 8, 7, 6]], dtype=torch.float32)
    assert torch.equal(got, expected)


def test_augmentation_per_dataset():
    assert augmentation_for("cifar10") is random_crop_flip and augmentation_for("cifar100") is random_crop_flip
    for name in ("mnist5k", "mnist", "fashion-mnist"):
        assert augmentation_for(name) is None, "Appendix C: no augmentation on the MNIST family"
    with pytest.raises(ConfigError, match="unknown dataset"):
        augmentation_for("svhn")
    with pytest.raises(ConfigError, match="padding must be >= 0"):
        random_crop_flip(torch.rand(2, 3, 4, 4), padding=-1)
