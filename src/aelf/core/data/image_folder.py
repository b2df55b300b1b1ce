"""A folder of images with one sub-folder per class, read with Pillow: which files count, the depth and channels
each image is read at, and the labels from the folder names (:mod:`aelf.core.data.files` splits and checks them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aelf.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GREY_MODES = ("1", "L", "LA", "La")
DEEP_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's 16-bit grey


def require_pillow(where: Path | None = None) -> Any:
    try:
        from PIL import Image
    except ImportError:
        prefix = f"{where}: " if where is not None else ""
        raise DataError(
            f"{prefix}reading a folder of images needs Pillow (pip install pillow); or save the images "
            "and labels as an .npz file"
        ) from None
    return Image


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders (expected {root}/<class name>/<image files>)")
    return folders


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _depth(file: Path, image: Any) -> int:
    """The bits per channel the pixels of ``image`` are read at: 8, or 16 (16-bit grey PNG and TIFF, read at their
    depth). Other deep modes (32-bit integer or float pixels) have no range to scale from and are refused."""
    if image.mode in DEEP_GREY_MODES or (image.mode == "I" and image.format == "PNG"):  # PNG "I": 16-bit grey
        return 16
    if image.mode in ("I", "F"):
        raise DataError(
            f"{file}: {'32-bit integer' if image.mode == 'I' else 'floating-point'} pixels are not read (their range "
            "is unknown); save the image as 8- or 16-bit PNG, or the images as an .npz file of floats in [0, 1]"
        )
    return 8


def _pixels(file: Path, image: Any, depth: int, grey: bool) -> np.ndarray:
    """The image's pixels, (H, W) when ``grey`` else (H, W, 3): uint8 at depth 8, else floats in [0, 1]."""
    if depth == 8:
        return np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8)
    values = np.asarray(image, dtype=np.float32) / np.float32(65535.0)
    return values if grey else np.repeat(values[..., None], 3, axis=-1)


def _read_images(files: list[Path]) -> np.ndarray:
    """(N, H, W) or (N, H, W, 3): grey when every image is grey, else RGB. uint8 when every image is 8-bit; with a
    16-bit grey image among them, float32 in [0, 1], each image scaled from its own depth (never clipped)."""
    image_module = require_pillow()
    opened = []
    for file in files:
        try:
            with image_module.open(file) as image:
                image.load()
                opened.append((file, image.copy(), _depth(file, image)))
        except (OSError, ValueError, SyntaxError) as err:  # Pillow's errors for unreadable or corrupt files
            raise DataError(f"{file}: not a readable image ({first_line(err)})") from None
    grey = all(image.mode in GREY_MODES or depth == 16 for _, image, depth in opened)
    deep = any(depth == 16 for _, _, depth in opened)
    first_file, first, _ = opened[0]
    arrays = []
    for file, image, depth in opened:
        if image.size != first.size:
            raise DataError(
                f"{file}: image is {image.size[0]} x {image.size[1]} pixels (width x height) but "
                f"{first_file} is {first.size[0]} x {first.size[1]}; every image of a folder must have "
                "the same size"
            )
        try:
            pixels = _pixels(file, image, depth, grey)
        except (OSError, ValueError) as err:
            raise DataError(f"{file}: cannot convert image mode {image.mode} ({first_line(err)})") from None
        arrays.append(pixels.astype(np.float32) / np.float32(255.0) if deep and depth == 8 else pixels)
    return np.stack(arrays)


def read_class_tree(root: Path, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images and labels of ``root/<class>/...``, classes interleaved; ``classes``: names fixed by another split."""
    folders = _class_folders(root)
    names = [folder.name for folder in folders]
    if classes is not None:
        unknown = [name for name in names if name not in classes]
        if unknown:
            raise DataError(f"{root}: class folder(s) {', '.join(unknown)} not in the training classes")
    else:
        classes = names
    files: list[tuple[int, int, Path]] = []  # (position within its class, label, file)
    for folder in folders:
        label = classes.index(folder.name)
        files += [(i, label, file) for i, file in enumerate(_image_files(folder))]
    files.sort(key=lambda t: (t[0], t[1]))
    return _read_images([f for _, _, f in files]), np.array([label for _, label, _ in files], dtype=np.int64), classes


def check_folder_classes(root: Path, classes: list[str], num_classes: int | None) -> None:
    if len(classes) < 2:
        raise DataError(f"{root}: one class folder ({classes[0]}); a classifier needs at least two classes")
    if num_classes is not None and len(classes) != num_classes:
        raise DataError(f"{root}: {len(classes)} class folders but the model has {num_classes} classes")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
