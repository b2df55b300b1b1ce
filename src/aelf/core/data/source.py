"""A run's data, whichever kind: a named dataset (:data:`~aelf.core.data.datasets.DATASETS`) or a user's own files
(``data.name: files``, read by :mod:`aelf.core.data.files` from ``data.root``), with what a model needs to know of it.

A user's files have no registry line, so what the registry says of a named dataset comes from the data:

- channels, classes and the per-channel mean and std of the training pixels (the model's input normalisation);
- the family (``data.family``, default :data:`DEFAULT_FILES_FAMILY`): the default training and evaluation attack and
  the training augmentation, as a named dataset's family gives them;
- a record (:meth:`RunData.record`) that the run folder keeps in ``meta.json`` under ``data``: the file's absolute
  path and sha256, the split and its sizes, the image shape, the classes and the normalisation. A finished run is
  reopened from the recorded path, and the sha256 must match, so that evaluating it sees the run's own test split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from aelf.core.data.datasets import DATASETS, dataset_info, load_dataset
from aelf.core.data.families import FAMILIES, Family
from aelf.core.data.files import channel_stats, data_sha256, load_files, resize_images
from aelf.core.errors import ConfigError, DataError

FILES = "files"  # data.name of a user's own .npz / .safetensors file or image folder
# CIFAR's budget (PGD(0.031, 10, 0.0062), random crops and flips) is the field's usual setting for natural images;
# data.family=mnist gives MNIST's (PGD(0.3, 16, 0.02), no augmentation) for digit-like data.
DEFAULT_FILES_FAMILY = "cifar"
RECORD_KEYS = ("source", "sha256", "split", "seed", "test_fraction", "image_shape", "classes")
log = logging.getLogger(__name__)


def dataset_names() -> tuple[str, ...]:
    """Every valid ``data.name``: the registry's datasets and ``files``."""
    return (*DATASETS, FILES)


def family_of(name: str, family: str | None = None) -> Family:
    """The family of ``data.name`` (``data.family`` for a user's files, default :data:`DEFAULT_FILES_FAMILY`)."""
    if name == FILES:
        chosen = family or DEFAULT_FILES_FAMILY
        if chosen not in FAMILIES:
            raise ConfigError(f"unknown data.family {chosen!r} (choose from: {', '.join(FAMILIES)})")
        return FAMILIES[chosen]
    return dataset_info(name).family


class DataSettings(Protocol):
    """The ``data`` section of a run's settings (:class:`aelf.core.config.DataConfig`), as this module reads it."""

    @property
    def name(self) -> str: ...
    @property
    def root(self) -> str | None: ...
    @property
    def train_limit(self) -> int | None: ...
    @property
    def test_limit(self) -> int | None: ...
    @property
    def test_fraction(self) -> float: ...
    @property
    def split_seed(self) -> int: ...
    @property
    def family(self) -> str | None: ...
    @property
    def layout(self) -> str: ...
    @property
    def image_size(self) -> int | None: ...


@dataclass(frozen=True)
class DataSpec:
    """What building a model needs to know of its data."""

    in_channels: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class RunData:
    """A run's images (float32 (N, C, H, W) in [0, 1]) and labels; a split not asked for is None."""

    x_train: torch.Tensor | None
    y_train: torch.Tensor | None
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    spec: DataSpec
    family: Family
    source: str  # what error messages name: the dataset or the file
    record: dict[str, Any] | None = None  # a user's files only: what the run folder keeps (meta.json "data")

    def pair(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``split`` (``train`` or ``test``); ValueError when that split was not loaded."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        if x is None or y is None:
            raise ValueError(f"the {split} split was not loaded")
        return x, y

    def meta(self) -> dict[str, Any]:
        """``{"data": record}`` for meta.json (nothing for a named dataset)."""
        return {"data": self.record} if self.record is not None else {}


def load_run_data(
    data: Any,
    splits: tuple[str, ...] = ("train", "test"),
    expected: dict[str, Any] | None = None,
    moved_to: str | Path | None = None,
) -> RunData:
    """The images of ``data`` (a :class:`~aelf.core.config.DataConfig`), limits applied.

    For a user's files ``expected`` is the record of the run being reopened or resumed: its path is read (not
    ``data.root``, which may be relative to another folder) and its sha256 must match. ``moved_to``: the file or
    folder at a new place, read instead of the recorded path when its sha256 is the recorded one (a note says so).
    """
    family = family_of(data.name, data.family)
    if data.name != FILES:
        info = dataset_info(data.name)
        limits = {"train": data.train_limit, "test": data.test_limit}
        loaded = {split: load_dataset(data.name, split, data.root, limits[split], data.image_size) for split in splits}
        (x_train, y_train), (x_test, y_test) = loaded.get("train", (None, None)), loaded.get("test", (None, None))
        spec = DataSpec(info.in_channels, info.num_classes, info.mean, info.std)
        return RunData(x_train, y_train, x_test, y_test, spec, family, data.name)
    path = _files_path(data, expected, moved_to)
    sha256 = _checked_sha256(path, expected, moved_to)
    user = load_files(path, data.test_fraction, data.split_seed, data.layout)
    x_train, y_train = user.x_train[: data.train_limit], user.y_train[: data.train_limit]
    x_test, y_test = user.x_test[: data.test_limit], user.y_test[: data.test_limit]
    if data.image_size is not None:
        x_train, x_test = resize_images(x_train, data.image_size), resize_images(x_test, data.image_size)
    mean, std = channel_stats(x_train)
    spec = DataSpec(int(x_train.shape[1]), user.num_classes, mean, std)
    record = {
        **user.describe(),
        "source": str(path),
        "sha256": sha256,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "image_shape": [int(s) for s in x_train.shape[1:]],
        "mean": list(mean),
        "std": list(std),
    }
    if expected:
        _check_record(path, record, expected, moved_to)
        spec = spec_from_record(expected)
    keep = set(splits)
    return RunData(
        x_train if "train" in keep else None,
        y_train if "train" in keep else None,
        x_test if "test" in keep else None,
        y_test if "test" in keep else None,
        spec,
        family,
        str(path),
        record,
    )


def _files_path(data: Any, expected: dict[str, Any] | None, moved_to: str | Path | None) -> Path:
    """Where a user's files are read: the new place (``moved_to``), else the run's recorded path, else data.root."""
    if not data.root:
        raise ConfigError("data.name=files reads data.root: give the file or folder (aelf train --data PATH)")
    if moved_to is not None and not expected:
        raise ConfigError("a new place of the data (--data) applies to reopening a run trained on your own files")
    path = Path(moved_to).resolve() if moved_to is not None else Path(expected["source"]) if expected else None
    path = path or Path(data.root).resolve()
    if expected and moved_to is None and not path.exists():
        raise DataError(
            f"{path}: the run's data are not there any more; if they moved, aelf eval RUN --data NEW_PATH reads "
            "them at their new place (the sha256 must be the recorded one)"
        )
    return path


def _checked_sha256(path: Path, expected: dict[str, Any] | None, moved_to: str | Path | None) -> str:
    """The sha256 of the files at ``path``; DataError when a reopened run's data are not the ones it recorded."""
    sha256 = data_sha256(path)
    recorded: dict[str, Any] = expected or {}
    if moved_to is not None and recorded.get("sha256") != sha256:
        raise DataError(
            f"{path}: not the run's data (sha256 {sha256[:12]}..., the run recorded {str(recorded.get('sha256'))[:12]}"
            f"... for {recorded.get('source')})"
        )
    if moved_to is not None and str(path) != recorded.get("source"):
        log.warning(
            "aelf: note: reading %s, which has the sha256 the run recorded for %s", path, recorded.get("source")
        )
    if expected and expected.get("sha256") != sha256:
        raise DataError(
            f"{path}: changed since the run was trained (sha256 {sha256[:12]}..., recorded "
            f"{str(expected.get('sha256'))[:12]}...): its split would not be the run's; restore the "
            "file or train again"
        )
    return sha256


def _check_record(path: Path, record: dict[str, Any], expected: dict[str, Any], moved_to: str | Path | None) -> None:
    """DataError when the data read now differ from the reopened run's record in anything its split depends on."""
    compared = [key for key in RECORD_KEYS if moved_to is None or key != "source"]
    changed = [key for key in compared if key in expected and expected[key] != record[key]]
    if changed:
        raise DataError(
            f"{path}: the run recorded another {', '.join(changed)} for this data; its split cannot be rebuilt"
        )


def spec_from_record(record: dict[str, Any], where: str = "the run's record of its data") -> DataSpec:
    """The :class:`DataSpec` a run recorded for its files (its model is rebuilt from it)."""
    try:
        return DataSpec(
            int(record["image_shape"][0]), len(record["classes"]), tuple(record["mean"]), tuple(record["std"])
        )
    except (KeyError, TypeError, IndexError, ValueError):
        raise DataError(f"{where}: no readable data record (image_shape, classes, mean, std)") from None
