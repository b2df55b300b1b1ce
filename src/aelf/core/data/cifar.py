"""Readers for the official *binary* versions of CIFAR-10 and CIFAR-100 (never the pickled python version).

Each file is a sequence of fixed-size records: the label byte(s), then 3072 pixel bytes, channel-major (1024 red,
1024 green, 1024 blue, each 32 rows of 32), so a record's pixels reshape directly to (3, 32, 32).

- CIFAR-10: ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and ``test_batch.bin`` (test); 1 label byte (0-9).
- CIFAR-100: ``train.bin`` and ``test.bin``; 2 label bytes, coarse (0-19) then fine (0-99); the fine label is used.

Where the files are looked for, in order: the official folder inside ``root`` (``cifar-10-batches-bin/`` or
``cifar-100-binary/``), ``root`` itself, then the official archive in ``root`` (``cifar-10-binary.tar.gz`` or
``cifar-100-binary.tar.gz``), read member by member with :mod:`tarfile` and never extracted.

Integrity policy. Always checked, with a :class:`~aelf.core.errors.DataError` naming the file: a size that is not a
whole number of records ("truncated"), an empty file, labels out of range, missing files, and (archives) member paths
that are absolute or contain ``..``. The number of images in each file is also checked against the official counts
(:data:`OFFICIAL_COUNTS`) unless ``check_counts=False``: :func:`aelf.core.data.load_dataset` always checks, which
catches a file cut exactly at a record boundary; tests and users with hand-made subsets pass ``check_counts=False``.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from aelf.core.data.idx import read_bytes
from aelf.core.errors import DataError

PIXELS = 3 * 32 * 32  # bytes of one image, channel-major


@dataclass(frozen=True)
class CifarFormat:
    """Where a CIFAR variant's binary files live and how its records are laid out."""

    title: str
    folder: str  # the folder inside the official archive
    archive: str
    files: dict[str, tuple[str, ...]]  # split -> file names, read and concatenated in this order
    label_ranges: tuple[int, ...]  # number of classes of each label byte, in record order
    label_names: tuple[str, ...]
    pickle_names: tuple[str, ...]  # the python version's folder and archive, named in the error when found instead

    @property
    def label_bytes(self) -> int:
        return len(self.label_ranges)

    @property
    def record_size(self) -> int:
        return self.label_bytes + PIXELS


FORMATS = {
    "cifar10": CifarFormat(
        title="CIFAR-10",
        folder="cifar-10-batches-bin",
        archive="cifar-10-binary.tar.gz",
        files={"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
        label_ranges=(10,),
        label_names=("label",),
        pickle_names=("cifar-10-batches-py", "cifar-10-python.tar.gz"),
    ),
    "cifar100": CifarFormat(
        title="CIFAR-100",
        folder="cifar-100-binary",
        archive="cifar-100-binary.tar.gz",
        files={"train": ("train.bin",), "test": ("test.bin",)},
        label_ranges=(20, 100),
        label_names=("coarse label", "fine label"),
        pickle_names=("cifar-100-python", "cifar-100-python.tar.gz"),
    ),
}

# Images per file in the official release (CIFAR-10: 10,000 per batch file; CIFAR-100: 50,000 train, 10,000 test).
OFFICIAL_COUNTS = {
    "cifar10": {**{f"data_batch_{i}.bin": 10_000 for i in range(1, 6)}, "test_batch.bin": 10_000},
    "cifar100": {"train.bin": 50_000, "test.bin": 10_000},
}


def parse_records(
    data: bytes, fmt: CifarFormat, where: str, expected_count: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) (the last label byte: fine for CIFAR-100) of one file.

    ``where`` names the file in error messages; ``expected_count``, when given, is the number of images it must hold.
    """
    if not data:
        raise DataError(f"{where}: empty file (expected {fmt.title} records of {fmt.record_size} bytes)")
    count, remainder = divmod(len(data), fmt.record_size)
    if remainder:
        raise DataError(
            f"{where}: truncated: {len(data)} bytes is not a whole number of {fmt.record_size}-byte {fmt.title} "
            f"records ({count} records and {remainder} bytes)"
        )
    if expected_count is not None and count != expected_count:
        raise DataError(f"{where}: has {count} images, the official {fmt.title} file has {expected_count}")
    records = np.frombuffer(data, dtype=np.uint8).reshape(count, fmt.record_size)
    for column, (n_classes, name) in enumerate(zip(fmt.label_ranges, fmt.label_names, strict=True)):
        bad = np.flatnonzero(records[:, column] >= n_classes)
        if bad.size:
            value = records[bad[0], column]
            raise DataError(
                f"{where}: {name} {value} out of range 0-{n_classes - 1} (image {bad[0]}, {bad.size} bad in all)"
            )
    # ascontiguousarray copies: the rows are strided views of read-only bytes, which torch cannot wrap.
    images = np.ascontiguousarray(records[:, fmt.label_bytes :]).reshape(count, 3, 32, 32)
    labels = records[:, fmt.label_bytes - 1].astype(np.int64)
    return images, labels


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None


def member_file_name(archive: Path, name: str, fmt: CifarFormat) -> str | None:
    """The data file a member holds (``folder/file`` or ``file``), or None; DataError for an unsafe member path."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{archive}: unsafe member path {name!r} (absolute or with '..'); not reading this archive")
    if len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == fmt.folder):
        return path.name
    return None


def read_archive(
    archive: Path, fmt: CifarFormat, wanted: tuple[str, ...], expected_counts: dict[str, int] | None = None
) -> dict[str, tuple[str, bytes]]:
    """``{file name: (place for messages, bytes)}`` of the ``wanted`` data files in a .tar.gz, read in one pass.

    Nothing is extracted. Sizes are checked before a member is read, so a bogus member is not loaded into memory.
    """
    found: dict[str, tuple[str, bytes]] = {}
    # Decompress first (a truncated gzip stream is one clean DataError there; tarfile's own gzip stream reader fails
    # on it with a TypeError), then read the tar from memory, front to back, once.
    data = read_bytes(archive)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
            for member in tar:
                file_name = member_file_name(archive, member.name, fmt)
                if file_name not in wanted or file_name in found:
                    continue
                place = f"{archive}:{member.name}"
                if not member.isfile():
                    raise DataError(f"{place}: not a regular file")
                count, remainder = divmod(member.size, fmt.record_size)
                if remainder:
                    raise DataError(
                        f"{place}: truncated: {member.size} bytes is not a whole number of {fmt.record_size}-byte "
                        f"{fmt.title} records"
                    )
                if expected_counts is not None and count != expected_counts[file_name]:
                    raise DataError(
                        f"{place}: has {count} images, the official {fmt.title} file has {expected_counts[file_name]}"
                    )
                handle = tar.extractfile(member)
                if handle is None:
                    raise DataError(f"{place}: not a regular file")
                found[file_name] = (place, handle.read())
    except FileNotFoundError:
        raise DataError(f"{archive}: file not found") from None
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DataError(f"{archive}: corrupt or truncated archive ({err})") from None
    except OSError as err:
        raise DataError(f"{archive}: cannot read ({err.strerror or err})") from None
    missing = [name for name in wanted if name not in found]
    if missing:
        raise DataError(f"{archive}: missing member {fmt.folder}/{missing[0]}")
    return found


def locate(root: Path, fmt: CifarFormat, wanted: tuple[str, ...]) -> Path:
    """The folder holding all ``wanted`` files, else the archive; DataError naming what is missing."""
    folders = (root / fmt.folder, root)
    for folder in folders:
        if all((folder / name).is_file() for name in wanted):
            return folder
    if (root / fmt.archive).is_file():
        return root / fmt.archive
    for folder in folders:
        missing = [name for name in wanted if not (folder / name).is_file()]
        if len(missing) < len(wanted):
            raise DataError(f"{folder}: missing {missing[0]} ({fmt.title} binary version)")
    pickled = [name for name in fmt.pickle_names if (root / name).exists()]
    hint = (
        f"; found {pickled[0]}, the pickled python version, which aelf does not read (unpickling can run code)"
        if pickled
        else ""
    )
    raise DataError(
        f"{root}: no {fmt.title} binary data: expected {fmt.folder}/{wanted[0]} (or {wanted[0]} in the folder "
        f"itself) or the archive {fmt.archive}{hint}"
    )


def read_cifar(root: str | Path, name: str, split: str, check_counts: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) in 0-255 and labels int64 (N,) of ``split`` (``train``/``test``).

    ``name`` is ``cifar10`` or ``cifar100`` (fine labels). Training files are concatenated in their official order.
    ``check_counts`` compares each file's image count with :data:`OFFICIAL_COUNTS` (see the module docstring).
    """
    if name not in FORMATS:
        raise DataError(f"not a CIFAR dataset: {name!r} (choose from: {', '.join(FORMATS)})")
    if split not in ("train", "test"):
        raise DataError(f"split must be train or test (got {split!r})")
    fmt = FORMATS[name]
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    wanted = fmt.files[split]
    expected_counts = OFFICIAL_COUNTS[name] if check_counts else None
    source = locate(root, fmt, wanted)
    if source.is_dir():
        contents = {file_name: (str(source / file_name), read_file(source / file_name)) for file_name in wanted}
    else:
        contents = read_archive(source, fmt, wanted, expected_counts)
    parts = []
    for file_name in wanted:
        place, data = contents[file_name]
        parts.append(parse_records(data, fmt, place, expected_counts[file_name] if expected_counts else None))
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return images, labels


def read_cifar10(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_cifar(root, "cifar10", split)


def read_cifar100(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_cifar(root, "cifar100", split)
