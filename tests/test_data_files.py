"""A user's own data files (aelf.core.data.files): every format, the split, and one clear error per malformed input."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from aelf.core.data.files import (
    channel_stats,
    check_image_shape,
    images_to_tensor,
    load_files,
    resize_images,
    stratified_split,
)
from aelf.core.errors import AelfError, ConfigError, DataError

RNG = np.random.default_rng(0)


def balanced(n_per_class: int = 10, k: int = 3, shape=(8, 8)) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose first pixel holds the image's index, labels sorted by class."""
    n = n_per_class * k
    x = RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x, np.repeat(np.arange(k), n_per_class)


def npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def fails(path, *phrases, error=DataError, **kwargs):
    with pytest.raises(error) as info:
        load_files(path, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, AelfError)
    for phrase in (str(path), *phrases):
        assert phrase in message, (phrase, message)
    return message


# ----------------------------------------------------------------------------------------------------------------------
# What is read


def test_npz_uint8_images_become_float_nchw_in_unit_range_with_a_stratified_split(tmp_path):
    x, y = balanced(10, 3)
    data = load_files(npz(tmp_path, x=x, y=y), test_fraction=0.2, seed=1)
    assert data.split == "stratified" and data.seed == 1 and data.test_fraction == 0.2
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.shape == (24, 1, 8, 8) and data.x_test.shape == (6, 1, 8, 8)
    assert data.classes == ("0", "1", "2") and data.in_channels == 1 and data.image_size == (8, 8)
    # each image keeps its own label and pixels (x / 255), and train and test together are the whole file
    for images, labels in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        index = torch.round(images[:, 0, 0, 0] * 255).long()
        assert torch.equal(labels, torch.from_numpy(y)[index])
        assert torch.allclose(images, torch.from_numpy(x[index.numpy()]).float().unsqueeze(1) / 255)
    seen = torch.cat([data.x_train, data.x_test])[:, 0, 0, 0].mul(255).round().long().sort().values
    assert torch.equal(seen, torch.arange(30))
    # stratified: 2 of each class's 10 in the test set, classes interleaved so that any prefix is balanced
    assert torch.bincount(data.y_test).tolist() == [2, 2, 2]
    assert data.y_test.tolist() == [0, 1, 2, 0, 1, 2] and data.y_train[:6].tolist() == [0, 1, 2, 0, 1, 2]


def test_the_split_depends_on_the_seed_only(tmp_path):
    x, y = balanced(10, 3)
    path = npz(tmp_path, x=x, y=y)
    first, again, other = (load_files(path, seed=s).x_test for s in (3, 3, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_float_colour_images_in_either_layout(tmp_path, layout):
    x = RNG.random((12, 5, 6, 3), dtype=np.float32)
    stored = x if layout == "nhwc" else x.transpose(0, 3, 1, 2)
    y = np.arange(12) % 2
    data = load_files(npz(tmp_path, images=stored, labels=y), test_fraction=0.5)
    assert data.x_train.shape[1:] == (3, 5, 6)
    expected = torch.from_numpy(x.transpose(0, 3, 1, 2))
    full = torch.cat([data.x_train, data.x_test])
    assert all(any(torch.equal(image, e) for e in expected) for image in full)


def test_a_given_split_is_kept_as_is_with_class_names(tmp_path):
    x, y = balanced(4, 2)
    path = npz(tmp_path, x_train=x[:6], y_train=y[:6], x_test=x[6:], y_test=y[6:], classes=np.array(["cat", "dog"]))
    data = load_files(path, seed=5)
    assert data.split == "given" and data.seed is None and data.classes == ("cat", "dog")
    assert torch.equal(data.y_train, torch.from_numpy(y[:6])) and torch.equal(data.y_test, torch.from_numpy(y[6:]))
    assert torch.equal(data.x_test[:, 0], torch.from_numpy(x[6:]).float() / 255)
    assert data.describe() == {
        "source": str(path),
        "split": "given",
        "seed": None,
        "test_fraction": None,
        "n_train": 6,
        "n_test": 2,
        "image_shape": [1, 8, 8],
        "classes": ["cat", "dog"],
    }


def test_safetensors_file_of_tensors(tmp_path):
    x, y = balanced(5, 2)
    path = tmp_path / "data.safetensors"
    save_file(
        {
            "x_train": torch.from_numpy(x[:8]).half() / 255,
            "y_train": torch.from_numpy(y[:8]),
            "x_test": torch.from_numpy(x[8:]),
            "y_test": torch.from_numpy(y[8:]),
        },
        path,
        metadata={"classes": '["a", "b"]'},
    )
    data = load_files(path)
    assert data.classes == ("a", "b") and data.x_train.shape == (8, 1, 8, 8) and data.x_test.dtype == torch.float32
    assert torch.allclose(data.x_train[:, 0], torch.from_numpy(x[:8]).float() / 255, atol=1e-3)
    assert torch.equal(data.x_test[:, 0], torch.from_numpy(x[8:]).float() / 255)


def test_pt_file_is_never_unpickled_and_the_error_says_how_to_convert_it(tmp_path):
    path = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    torch.save({"x": torch.zeros(4, 2, 2), "y": torch.tensor([0, 1, 0, 1]), "hook": RunsCode(str(marker))}, path)
    fails(path, "a .pt file is a pickle, which aelf never reads", "safetensors.torch.save_file")
    assert not marker.exists()


class RunsCode:
    """Unpickling this would create a file: a .pt file holding it must be refused, not executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_requested_class_count(tmp_path):
    x, y = balanced(4, 2)
    data = load_files(npz(tmp_path, x=x, y=y), num_classes=5)
    assert data.classes == ("0", "1", "2", "3", "4")
    fails(npz(tmp_path, "big.npz", x=x, y=y * 3), "label 3 is too large", num_classes=3)
    fails(npz(tmp_path, "named.npz", x=x, y=y, classes=np.array(["a", "b"])), "the model has 3", num_classes=3)


# ----------------------------------------------------------------------------------------------------------------------
# Malformed array files


def test_missing_and_unknown_files(tmp_path):
    fails(tmp_path / "nope.npz", "not found")
    (tmp_path / "data.csv").write_text("1,2\n")
    fails(tmp_path / "data.csv", "unknown data format")


@pytest.mark.parametrize(
    "arrays, phrase",
    [
        ({"x": np.zeros((4, 2, 2), np.uint8)}, "missing 'y'"),
        ({"labels": np.zeros(4, np.int64)}, "missing 'images'"),
        ({"weights": np.zeros(3)}, "the file has weights"),
        ({"x_train": np.zeros((4, 2, 2), np.uint8), "y_train": np.zeros(4, np.int64)}, "missing x_test, y_test"),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.zeros(4, np.int64), "x_test": np.zeros((1, 2, 2))}, "keep one"),
    ],
)
def test_missing_or_conflicting_keys(tmp_path, arrays, phrase):
    fails(npz(tmp_path, **arrays), phrase)


LABELS = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    "x, y, phrase",
    [
        (np.zeros((4, 16), np.uint8), LABELS, "2-D"),
        (np.zeros((4, 1, 2, 2, 1), np.uint8), LABELS, "5-D"),
        (np.zeros((0, 2, 2), np.uint8), np.zeros(0, np.int64), "no images"),
        (np.zeros((4, 2, 2), np.int64), LABELS, "must be uint8 (0-255) or floats in [0, 1], got int64"),
        (np.full((4, 2, 2), 255.0, np.float32), LABELS, "found values in [255, 255]"),
        (np.full((4, 2, 2), -0.5), LABELS, "must be in [0, 1]"),
        (np.array([np.nan, 0, 0, 0]).reshape(4, 1, 1), LABELS, "NaN"),
        (np.zeros((4, 3, 3, 3), np.uint8), LABELS, "cannot tell the channel axis"),
        (np.zeros((4, 2, 2), np.uint8), LABELS.astype(np.float32), "labels must be integers"),
        (np.zeros((4, 2, 2), np.uint8), np.eye(2, dtype=np.int64)[LABELS], "one-hot"),
        (np.zeros((4, 2, 2), np.uint8), np.array([0, 1, -1, 1]), "found -1"),
        (np.zeros((4, 2, 2), np.uint8), np.array([0, 1, 0]), "3 labels for 4 images"),
        (np.zeros((4, 2, 2), np.uint8), LABELS + 1, "no image has label 0"),
        (np.zeros((4, 2, 2), np.uint8), np.zeros(4, np.int64), "at least two classes"),
    ],
)
def test_malformed_arrays(tmp_path, x, y, phrase):
    fails(npz(tmp_path, x=x, y=y), phrase)


def test_explicit_layout_resolves_ambiguous_channels(tmp_path):
    x = RNG.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    path = npz(tmp_path, x=x, y=LABELS)
    nhwc = load_files(path, layout="nhwc", test_fraction=0.5)
    nchw = load_files(path, layout="nchw", test_fraction=0.5)
    assert not torch.equal(nhwc.x_train, nchw.x_train)
    with pytest.raises(ConfigError, match="layout must be one of auto, nchw, nhwc"):
        load_files(path, layout="hwc")


def test_split_parts_must_agree(tmp_path):
    path = npz(
        tmp_path,
        x_train=np.zeros((4, 2, 2), np.uint8),
        y_train=LABELS,
        x_test=np.zeros((2, 3, 3), np.uint8),
        y_test=LABELS[:2],
    )
    fails(path, "x_train images are 1 x 2 x 2", "x_test images are 1 x 3 x 3")


@pytest.mark.parametrize(
    "classes, phrase",
    [
        (np.array(["a", "a"]), "names a class twice"),
        (np.array([1, 2]), "list of class names"),
        (np.array(["a"]), "label 1 is too large"),
    ],
)
def test_bad_class_names(tmp_path, classes, phrase):
    fails(npz(tmp_path, x=np.zeros((4, 2, 2), np.uint8), y=LABELS, classes=classes), phrase)


def test_corrupt_and_unsafe_npz(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00not a zip at all" * 10)
    fails(junk, "not a zip archive")
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    fails(single, "not a zip archive")
    good = npz(tmp_path, x=np.zeros((40, 8, 8), np.uint8), y=np.arange(40) % 2)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:-200])
    fails(cut, "not a readable .npz file")
    objects = npz(tmp_path, "objects.npz", x=np.zeros((4, 2, 2), np.uint8), y=np.array([0, "a", None, 1], dtype=object))
    fails(objects, "holds Python objects")
    broken = tmp_path / "broken.npz"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("x.npy", b"not an npy header")
        archive.writestr("y.npy", b"nor this")
    fails(broken, "not a readable .npz file", "'x' is not a NumPy array")


def test_corrupt_safetensors_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"garbage" * 20)
    fails(junk, "not a readable .safetensors file")
    names = tmp_path / "names.safetensors"
    save_file({"x": torch.zeros(4, 2, 2), "y": torch.tensor([0, 1, 0, 1])}, names, metadata={"classes": "a, b"})
    fails(names, "must be a JSON list of class names")
    floats = tmp_path / "floats.safetensors"
    save_file({"x": torch.zeros(4, 2, 2), "y": torch.tensor([0.0, 1.0, 0.0, 1.0])}, floats)
    fails(floats, "labels must be integers")


def test_stratified_split_settings():
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    train, test = stratified_split(y, 0.34, seed=0)
    # one of each 3-image class to the test set; the single image of class 2 stays for training
    assert sorted(y[test].tolist()) == [0, 1] and sorted(y[train].tolist()) == [0, 0, 1, 1, 2]
    assert sorted(torch.cat([train, test]).tolist()) == list(range(7))
    for fraction in (0, 1, 1.5, "0.2"):
        with pytest.raises(ConfigError, match="strictly between 0 and 1"):
            stratified_split(y, fraction, seed=0)
    with pytest.raises(DataError, match="single image"):
        stratified_split(torch.tensor([0, 1, 2]), 0.2, seed=0, source="tiny.npz")


# ----------------------------------------------------------------------------------------------------------------------
# Model fit and helpers


def test_check_image_shape():
    x = torch.zeros(2, 1, 28, 28)
    check_image_shape(x, 1, 28)
    check_image_shape(x, 1, (28, 28))
    with pytest.raises(DataError) as info:
        check_image_shape(x, 3, 32, "mine.npz")
    message = str(info.value)
    assert "mine.npz" in message and "1 channel(s) where the model takes 3" in message
    assert "28 x 28 pixels where the model takes 32 x 32" in message and "resize_images(x, 32)" in message
    with pytest.raises(DataError, match="1 channel"):
        check_image_shape(x, 3, 28)


def test_resize_and_channel_stats():
    x = torch.rand(3, 2, 28, 28)
    resized = resize_images(x, 32)
    assert resized.shape == (3, 2, 32, 32) and 0 <= resized.min() and resized.max() <= 1
    check_image_shape(resized, 2, 32)
    x[:, 1] = 0.5
    mean, std = channel_stats(x)
    assert mean[1] == 0.5 and std[1] == 1.0  # a constant channel: no division by zero
    assert abs(mean[0] - float(x[:, 0].mean())) < 1e-4 and abs(std[0] - float(x[:, 0].std(unbiased=False))) < 1e-4


def test_images_to_tensor_accepts_tensors():
    x = torch.randint(0, 256, (2, 4, 4, 1), dtype=torch.uint8)
    assert torch.equal(images_to_tensor(x, "t"), x.permute(0, 3, 1, 2).float() / 255)


# ----------------------------------------------------------------------------------------------------------------------
# Folders of images


def pillow():
    return pytest.importorskip("PIL.Image", reason="reading image folders needs Pillow")


def write_png(path, value, size=(6, 5), mode="L"):
    image_module = pillow()
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 7)
    image_module.new(mode, size, colour).save(path)


def class_tree(root, counts=(("cat", 5), ("dog", 5)), mode="L"):
    for label, (name, count) in enumerate(counts):
        for i in range(count):
            write_png(root / name / f"{i:02d}.png", 10 * label + i, mode=mode)


def test_folder_of_class_folders(tmp_path):
    class_tree(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"ignored")
    data = load_files(tmp_path, test_fraction=0.4, seed=0)
    assert data.classes == ("cat", "dog") and data.split == "stratified"
    assert data.x_train.shape == (6, 1, 5, 6) and data.x_test.shape == (4, 1, 5, 6)
    assert torch.bincount(data.y_test).tolist() == [2, 2]
    # the grey value encodes class and index: each image carries its own folder's label
    full_x, full_y = torch.cat([data.x_train, data.x_test]), torch.cat([data.y_train, data.y_test])
    values = (full_x[:, 0, 0, 0] * 255).round().long()
    assert torch.equal(values // 10, full_y)
    assert sorted(values.tolist()) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


def test_folder_with_given_split_and_colour(tmp_path):
    class_tree(tmp_path / "train", (("a", 3), ("b", 2)))
    class_tree(tmp_path / "test", (("a", 1), ("b", 1)), mode="RGB")
    data = load_files(tmp_path)
    assert data.split == "given" and data.classes == ("a", "b")
    assert data.x_train.shape == (5, 3, 5, 6) and data.x_test.shape == (2, 3, 5, 6)
    assert data.y_train.tolist() == [0, 1, 0, 1, 0] and data.y_test.tolist() == [0, 1]
    assert torch.allclose(data.x_test[1, :, 0, 0] * 255, torch.tensor([10.0, 245.0, 7.0]))


def write_png16(path, values):
    """A 16-bit grey PNG of ``values`` (uint16, height x width)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pillow().fromarray(np.asarray(values, dtype=np.uint16)).save(path)


def test_16_bit_grey_pngs_are_read_at_their_depth_and_stay_grey(tmp_path):
    """0-65535 scaled to [0, 1], one channel (clipping to 8 bits and RGB saturated almost every pixel at 1.0)."""
    levels = np.array([[0, 1000, 30000], [40000, 65535, 257]], dtype=np.uint16)
    for label, name in enumerate(("cat", "dog")):
        for i in range(3):
            write_png16(tmp_path / name / f"{i}.png", levels // (1 + label + i))
    data = load_files(tmp_path, test_fraction=0.4, seed=0)
    x = torch.cat([data.x_train, data.x_test])
    assert x.shape == (6, 1, 2, 3) and x.dtype == torch.float32, "grey stays one channel"
    assert float(x.max()) == 1.0 and float((x == 1.0).float().mean()) < 0.1, "no pixel clipped to 1.0"
    read = {tuple((image * 65535).round().long().ravel().tolist()) for image in x}
    assert read == {tuple((levels // k).ravel().tolist()) for k in (1, 2, 3, 4)}, "every 16-bit level kept"

    # mixed depths: each image scaled from its own
    write_png16(tmp_path / "mixed" / "a" / "0.png", np.full((5, 6), 65535))
    write_png16(tmp_path / "mixed" / "a" / "1.png", np.full((5, 6), 13107))
    write_png(tmp_path / "mixed" / "b" / "0.png", 51)
    write_png(tmp_path / "mixed" / "b" / "1.png", 255)
    mixed = load_files(tmp_path / "mixed", test_fraction=0.5, seed=0)
    values = sorted(round(float(v), 4) for v in torch.cat([mixed.x_train, mixed.x_test])[:, 0, 0, 0])
    assert values == [0.2, 0.2, 1.0, 1.0]


def test_32_bit_and_float_images_are_refused(tmp_path):
    image_module = pillow()
    class_tree(tmp_path)
    image_module.fromarray(np.full((5, 6), 0.5, dtype=np.float32)).save(tmp_path / "cat" / "float.tif")
    fails(tmp_path, "float.tif", "floating-point pixels are not read")


def test_malformed_folders(tmp_path):
    pillow()
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "no class folders")
    class_tree(tmp_path / "sizes")
    write_png(tmp_path / "sizes" / "dog" / "99.png", 0, size=(7, 7))
    fails(tmp_path / "sizes", "99.png", "7 x 7 pixels", "same size")
    class_tree(tmp_path / "hollow")
    (tmp_path / "hollow" / "bird").mkdir()
    fails(tmp_path / "hollow", "bird", "holds no images")
    class_tree(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "cat" / "bad.png").write_bytes(b"\x89PNG not really")
    fails(tmp_path / "corrupt", "bad.png", "not a readable image")
    class_tree(tmp_path / "one", (("only", 3),))
    fails(tmp_path / "one", "at least two classes")
    class_tree(tmp_path / "split" / "train", (("a", 2), ("b", 2)))
    class_tree(tmp_path / "split" / "test", (("a", 1), ("zebra", 1)))
    fails(tmp_path / "split", "zebra", "not in the training classes")
    class_tree(tmp_path / "count")
    fails(tmp_path / "count", "2 class folders but the model has 3", num_classes=3)


def test_folder_without_pillow_says_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.png").write_bytes(b"")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "0.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)
    fails(tmp_path, "needs Pillow (pip install pillow)")
