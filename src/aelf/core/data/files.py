"""Your own data: an ``.npz`` file, a ``.safetensors`` file, or a folder of images with one sub-folder per class.

What is read
------------
- ``.npz`` (``numpy.savez``): arrays ``x`` and ``y`` (or ``images`` and ``labels``), or a given split as
  ``x_train``, ``y_train``, ``x_test``, ``y_test``. Read with ``allow_pickle=False``: no code runs.
- ``.safetensors`` (``safetensors.torch.save_file``), the same keys; class names, if any, as the metadata entry
  ``classes``, a JSON list. ``.pt``/``.pth`` files are pickles, which are never read (loading one can run code):
  the error says how to convert one.
- Either file may name the classes with ``classes`` (or ``class_names``): a list of strings, label k names class k.
- A folder: ``ROOT/<class>/<image>`` (classes sorted by folder name, label k = k-th name), or a given split as
  ``ROOT/train/<class>/...`` and ``ROOT/test/<class>/...``. Image files are read with Pillow (a dependency of
  matplotlib, so normally present); the common formats (PNG, JPEG, BMP, GIF, TIFF, WebP) are read, other files and
  hidden files are skipped. Grey images give one channel; if any image has colour, all are read as RGB; an alpha
  channel is dropped. 16-bit grey images (PNG, TIFF) are read at their depth (0-65535 scaled to [0, 1]), never
  clipped to 8 bits; 32-bit integer or float images are refused. Every image of a folder must have the same size.

Images are (N, H, W), (N, H, W, C) or (N, C, H, W), as uint8 (0-255) or floats in [0, 1]; labels are integers
0..K-1. Out come float32 (N, C, H, W) in [0, 1], int64 labels and the class names (:class:`UserData`).

Split
-----
A given train/test split is used as is. Otherwise a stratified split drawn from ``seed``: in each class a share
``test_fraction`` (rounded, at least one image and at least one left for training when the class has two or more)
goes to the test set. Within each split of a drawn split, and of a folder, the classes are interleaved (0, 1, ...,
K-1, 0, 1, ...), so that the first N images (``data.train_limit``/``data.test_limit``) stay balanced.

Every malformed input is one :class:`~aelf.core.errors.DataError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F

from aelf.core.data.image_folder import (
    IMAGE_SUFFIXES,
    check_folder_classes,
    first_line,
    read_class_tree,
    require_pillow,
)
from aelf.core.errors import ConfigError, DataError

ARRAY_SUFFIXES = (".npz", ".safetensors")
PICKLE_SUFFIXES = (".pt", ".pth")
PAIRS = (("x", "y"), ("images", "labels"))
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
CLASS_KEYS = ("classes", "class_names")
LAYOUTS = ("auto", "nchw", "nhwc")
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class UserData:
    """A user's data set, split: images float32 (N, C, H, W) in [0, 1], labels int64 in 0..K-1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    source: str
    split: str  # "given" or "stratified"
    seed: int | None = None
    test_fraction: float | None = None

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the training pixels (for a model's input normalisation)."""
        return channel_stats(self.x_train)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (for meta.json and the model card): source, split, sizes, image shape and classes."""
        return {
            "source": self.source,
            "split": self.split,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "n_train": len(self.y_train),
            "n_test": len(self.y_test),
            "image_shape": [self.in_channels, *self.image_size],
            "classes": list(self.classes),
        }


def load_files(
    path: str | Path,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    layout: str = "auto",
    num_classes: int | None = None,
) -> UserData:
    """Read a ``.npz``/``.safetensors`` file or an image folder (see the module's text) and split it.

    ``test_fraction`` and ``seed`` set the stratified split of data that comes without one; a given split is kept.
    ``layout`` says where the channels of 4-D images are: ``auto`` (the axis of size 1 to 4 among axes 1 and 3; if
    both are, the one of size 1 or 3; else an error), ``nchw`` or ``nhwc``. ``num_classes``: the class count the
    labels must fit (a trained model's), when known.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    path = Path(path)
    if path.is_dir():
        return _from_folder(path, test_fraction, seed, num_classes)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise DataError(
            f"{path}: a {path.suffix} file is a pickle, which aelf never reads (loading one can run code); if you "
            "trust it, convert it once: safetensors.torch.save_file({'x': images, 'y': labels}, 'data.safetensors', "
            "metadata={'classes': json.dumps(names)}) or numpy.savez('data.npz', x=..., y=...)"
        )
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise DataError(
            f"{path}: unknown data format (give an .npz or .safetensors file, or a folder of class folders)"
        )
    arrays = read_npz(path) if path.suffix.lower() == ".npz" else read_safetensors(path)
    return _from_arrays(path, arrays, test_fraction, seed, layout, num_classes)


# ----------------------------------------------------------------------------------------------------------------------
# Files of arrays


def read_npz(path: Path) -> dict[str, object]:
    """The named arrays of an ``.npz`` file, read without pickle."""
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path}: not a readable .npz file (not a zip archive of arrays; save with numpy.savez(path, x=..., y=...))"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(
                f"{path}: holds Python objects, which are not read (no code from a data file runs); "
                "save plain numeric arrays"
            ) from None
        raise DataError(f"{path}: not a readable .npz file ({first_line(err)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, pickle.UnpicklingError) as err:
        raise DataError(f"{path}: not a readable .npz file ({first_line(err)})") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # NpzFile hands back the raw bytes of a member that is not .npy
            raise DataError(f"{path}: not a readable .npz file (member {key!r} is not a NumPy array)")
    return arrays


def read_safetensors(path: Path) -> dict[str, object]:
    """The tensors of a ``.safetensors`` file as arrays, and its ``classes`` metadata (a JSON list) if any."""
    try:
        data = path.read_bytes()
        tensors = safetensors.torch.load(data)
        metadata = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
    except Exception as err:  # any failure to parse an untrusted file: corrupt or truncated
        raise DataError(f"{path}: not a readable .safetensors file ({first_line(err)})") from None
    out: dict[str, object] = {}
    for key, value in tensors.items():
        out[key] = (value.float() if value.dtype in (torch.bfloat16, torch.float16) else value).numpy()
    for key in CLASS_KEYS:
        if key in metadata:
            try:
                out[key] = json.loads(metadata[key])
            except ValueError:
                raise DataError(f"{path}: metadata {key!r} must be a JSON list of class names") from None
    return out


def _select(path: Path, arrays: dict[str, object]) -> tuple[dict[str, object], bool]:
    """``({"x_train", "y_train", "x_test", "y_test"} or {"x", "y"}, given_split)`` from the file's keys."""
    split_present = [key for key in SPLIT_KEYS if key in arrays]
    pair = next(((x, y) for x, y in PAIRS if x in arrays or y in arrays), None)
    if split_present and pair:
        raise DataError(f"{path}: has both {pair[0]!r}/{pair[1]!r} and a split ({', '.join(split_present)}); keep one")
    if split_present:
        missing = [key for key in SPLIT_KEYS if key not in arrays]
        if missing:
            raise DataError(f"{path}: a split needs {', '.join(SPLIT_KEYS)}; missing {', '.join(missing)}")
        return {key: arrays[key] for key in SPLIT_KEYS}, True
    if pair is None:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise DataError(
            f"{path}: no images found: expected arrays x and y (or images and labels, or x_train, y_train, "
            f"x_test, y_test); the file has {found}"
        )
    missing = [key for key in pair if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing {missing[0]!r} (images and labels come as {pair[0]!r} and {pair[1]!r})")
    return {"x": arrays[pair[0]], "y": arrays[pair[1]]}, False


def _class_names(
    path: Path, arrays: dict[str, object], labels: list[torch.Tensor], num_classes: int | None
) -> tuple[str, ...]:
    """The class names, one per label 0..K-1: the file's ``classes``, else "0", "1", ...; checks the labels' range."""
    key = next((k for k in CLASS_KEYS if k in arrays), None)
    names = None
    if key is not None:
        value = arrays[key]
        listed = value.tolist() if isinstance(value, np.ndarray) else value
        if not isinstance(listed, list | tuple) or not all(isinstance(n, str) for n in listed):
            raise DataError(f"{path}: {key!r} must be a list of class names (strings)")
        names = [str(n) for n in listed]
        if len(set(names)) != len(names):
            raise DataError(f"{path}: {key!r} names a class twice")
        if num_classes is not None and len(names) != num_classes:
            raise DataError(f"{path}: {key!r} names {len(names)} classes but the model has {num_classes}")
    check_labels(torch.cat(labels), str(path), num_classes if names is None else len(names))
    if names is None:
        return tuple(str(k) for k in range(num_classes or 1 + max(int(y.max()) for y in labels)))
    return tuple(names)


def check_labels(y: torch.Tensor, source: str, num_classes: int | None = None) -> None:
    """DataError unless the labels are 0..K-1 with K >= 2: below ``num_classes`` when it is given, else every class
    0..max(y) present (a label that skips classes, such as labels 1..10, is most likely a mistake)."""
    largest = int(y.max())
    if num_classes is not None:
        if largest >= num_classes:
            raise DataError(
                f"{source}: label {largest} is too large: {num_classes} classes take labels 0..{num_classes - 1}"
            )
        k = num_classes
    else:
        k = largest + 1
        absent = sorted(set(range(k)) - set(torch.unique(y).tolist()))
        if absent:
            shown = ", ".join(str(a) for a in absent[:5]) + (", ..." if len(absent) > 5 else "")
            raise DataError(
                f"{source}: labels must be 0..K-1; no image has label {shown} (labels that start at 1: "
                "subtract 1; a class that really has no images: name the classes with 'classes')"
            )
    if k < 2:
        raise DataError(f"{source}: every label is 0; a classifier needs at least two classes")


def _from_arrays(
    path: Path, arrays: dict[str, object], test_fraction: float, seed: int, layout: str, num_classes: int | None
) -> UserData:
    chosen, given = _select(path, arrays)
    if given:
        x_train = images_to_tensor(chosen["x_train"], f"{path}: x_train", layout)
        x_test = images_to_tensor(chosen["x_test"], f"{path}: x_test", layout)
        y_train = labels_to_tensor(chosen["y_train"], f"{path}: y_train", len(x_train))
        y_test = labels_to_tensor(chosen["y_test"], f"{path}: y_test", len(x_test))
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(f"{path}: x_train images are {_shape(x_train)} but x_test images are {_shape(x_test)}")
        classes = _class_names(path, arrays, [y_train, y_test], num_classes)
        return UserData(x_train, y_train, x_test, y_test, classes, str(path), "given")
    x_key, y_key = next((x, y) for x, y in PAIRS if x in arrays)
    x = images_to_tensor(chosen["x"], f"{path}: {x_key}", layout)
    y = labels_to_tensor(chosen["y"], f"{path}: {y_key}", len(x))
    classes = _class_names(path, arrays, [y], num_classes)
    train, test = stratified_split(y, test_fraction, seed, str(path))
    return UserData(x[train], y[train], x[test], y[test], classes, str(path), "stratified", seed, test_fraction)


# ----------------------------------------------------------------------------------------------------------------------
# Checks and conversion


def images_to_tensor(images: object, where: str, layout: str = "auto") -> torch.Tensor:
    """uint8 (0-255) or float ([0, 1]) images, (N, H, W), (N, H, W, C) or (N, C, H, W) -> float32 (N, C, H, W).

    ``where`` names the file and array in the error message.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise DataError(f"{where}: expected an array of images, got {type(images).__name__}")
    if images.ndim not in (3, 4):
        raise DataError(
            f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got shape "
            f"{tuple(images.shape)} ({images.ndim}-D)"
        )
    if len(images) == 0:
        raise DataError(f"{where}: no images (the array is empty)")
    if images.dtype == np.uint8:
        x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    elif np.issubdtype(images.dtype, np.floating):
        values = np.asarray(images, dtype=np.float32)
        if not np.isfinite(values).all():
            raise DataError(f"{where}: images hold NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"{where}: float images must be in [0, 1], found values in [{low:g}, {high:g}] "
                "(divide 0-255 images by 255, or save them as uint8)"
            )
        x = torch.from_numpy(np.array(values))
    else:
        raise DataError(
            f"{where}: images must be uint8 (0-255) or floats in [0, 1], got {images.dtype} "
            "(convert with x.astype(numpy.uint8) or x / 255)"
        )
    if x.ndim == 3:
        return x.unsqueeze(1).contiguous()
    return x.permute(0, 3, 1, 2).contiguous() if _channels_last(x.shape, where, layout) else x.contiguous()


def _channels_last(shape: tuple[int, ...], where: str, layout: str) -> bool:
    if layout != "auto":
        return layout == "nhwc"
    first, last = shape[1] <= 4, shape[3] <= 4
    if first and not last:
        return False
    if last and not first:
        return True
    common_first, common_last = shape[1] in (1, 3), shape[3] in (1, 3)  # tiny images: grey or RGB is the likely one
    if common_first != common_last:
        return common_last
    raise DataError(
        f"{where}: cannot tell the channel axis of images of shape {tuple(shape)} (expected 1 to 4 "
        "channels on axis 1 or 3); give the layout (nchw or nhwc)"
    )


def labels_to_tensor(labels: object, where: str, n_images: int) -> torch.Tensor:
    """Integer labels (N,) >= 0, one per image -> int64 tensor."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        raise DataError(f"{where}: expected an array of labels, got {type(labels).__name__}")
    if labels.ndim != 1:
        hint = " (one-hot labels: save y.argmax(1))" if labels.ndim == 2 else ""
        raise DataError(f"{where}: labels must be 1-D (N,), got shape {tuple(labels.shape)}{hint}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers 0..K-1, got {labels.dtype} (convert with y.astype(int))")
    if len(labels) != n_images:
        raise DataError(f"{where}: {len(labels)} labels for {n_images} images; there must be one label per image")
    if len(labels) and int(labels.min()) < 0:
        raise DataError(f"{where}: labels must be 0..K-1, found {int(labels.min())}")
    return torch.from_numpy(labels.astype(np.int64))


def stratified_split(
    y: torch.Tensor, test_fraction: float, seed: int, source: str = "data"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors ``(train, test)``: ``test_fraction`` of each class to the test set, drawn from ``seed``, each
    split's classes interleaved (0, 1, ..., 0, 1, ...) so that any first N of it stays balanced."""
    if not isinstance(test_fraction, float | int) or not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test fraction must be strictly between 0 and 1 (got {test_fraction!r})")
    generator = torch.Generator().manual_seed(int(seed))
    train: list[tuple[int, int, int]] = []  # (position within its class, class, index)
    test: list[tuple[int, int, int]] = []
    for label in torch.unique(y).tolist():
        members = (y == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        n_test = round(len(members) * test_fraction)
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        else:
            n_test = 0
        test += [(i, label, index) for i, index in enumerate(members[:n_test])]
        train += [(i, label, index) for i, index in enumerate(members[n_test:])]
    if not test:
        raise DataError(f"{source}: too few images to split: every class has a single image")
    return torch.tensor([t[2] for t in sorted(train)]), torch.tensor([t[2] for t in sorted(test)])


def check_image_shape(
    x: torch.Tensor, in_channels: int, image_size: int | tuple[int, int], source: str = "data"
) -> None:
    """DataError unless x (N, C, H, W) has ``in_channels`` channels of ``image_size`` (an int: square) pixels."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if x.ndim != 4:
        raise DataError(f"{source}: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    channels, h, w = (int(s) for s in x.shape[1:])
    problems = []
    if channels != in_channels:
        problems.append(f"{channels} channel(s) where the model takes {in_channels}")
    if (h, w) != (height, width):
        problems.append(
            f"{h} x {w} pixels where the model takes {height} x {width} (resize_images(x, "
            f"{height if height == width else (height, width)}) resizes them)"
        )
    if problems:
        raise DataError(f"{source}: images do not fit the model: " + "; ".join(problems))


def resize_images(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) images in [0, 1] (as the MNIST 28 -> 32 resize of Appendix C)."""
    square = (size, size) if isinstance(size, int) else (size[0], size[1])
    if tuple(x.shape[-2:]) == square:
        return x
    return F.interpolate(x, size=square, mode="bilinear", align_corners=False).clamp_(0.0, 1.0)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of (N, C, H, W) pixels; a zero deviation is given as 1."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    std = flat.std(dim=1, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(round(v, 4) for v in flat.mean(dim=1).tolist()), tuple(round(v, 4) for v in std.tolist())


# ----------------------------------------------------------------------------------------------------------------------
# Folders of images


def _from_folder(root: Path, test_fraction: float, seed: int, num_classes: int | None) -> UserData:
    require_pillow(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_images, train_labels, classes = read_class_tree(root / "train", None)
        check_folder_classes(root / "train", classes, num_classes)
        test_images, test_labels, _ = read_class_tree(root / "test", classes)
        if train_images.ndim != test_images.ndim:  # one split all grey, the other with colour: both as RGB
            train_images, test_images = (
                a if a.ndim == 4 else np.repeat(a[..., None], 3, axis=-1) for a in (train_images, test_images)
            )
        if train_images.shape[1:] != test_images.shape[1:]:
            raise DataError(
                f"{root}: train images are {train_images.shape[1:]} and test images {test_images.shape[1:]}"
                " (height, width[, channels]); both must be the same"
            )
        return UserData(
            images_to_tensor(train_images, str(root / "train")),
            torch.from_numpy(train_labels),
            images_to_tensor(test_images, str(root / "test")),
            torch.from_numpy(test_labels),
            tuple(classes),
            str(root),
            "given",
        )
    images, labels, classes = read_class_tree(root, None)
    check_folder_classes(root, classes, num_classes)
    x, y = images_to_tensor(images, str(root)), torch.from_numpy(labels)
    train, test = stratified_split(y, test_fraction, seed, str(root))
    return UserData(x[train], y[train], x[test], y[test], tuple(classes), str(root), "stratified", seed, test_fraction)


def data_sha256(path: str | Path) -> str:
    """The sha256 of a data file, or of a folder: of every image file's path (relative, '/'-separated) and bytes, in
    sorted order, so that an added, removed, renamed or changed image changes it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _shape(x: torch.Tensor) -> str:
    return " x ".join(str(int(s)) for s in x.shape[1:]) + " (channels x height x width)"
