"""The run folder: the one owner of the names of a run's files and of the readers that parse them.

A run folder holds

- ``config.json``: the resolved configuration (every setting, defaults included; :meth:`RunFolder.config`);
- ``meta.json``: seed, processes, git revision, versions, command line, start time and, for a user's own files, the
  ``data`` record they are reopened from (:class:`Meta`);
- ``metrics.jsonl``: one JSON object per finished epoch (:meth:`RunFolder.metrics`, parsed once per folder object);
- ``checkpoints/``: resumable training states (:mod:`aelf.core.checkpoint` owns their format);
- ``model.safetensors``: the final weights, written when training has finished;
- ``best.safetensors`` and ``best.json``: the weights of the best robust validation accuracy and where they come
  from (with ``train.val_size > 0``; :class:`BestInfo`);
- what the commands measure: ``eval.json`` (``aelf eval``; ``eval-best.json`` with ``--weights best``;
  :class:`EvalResult`), ``eval-suite-SUITE.json`` (``aelf eval --suite``), ``check.json`` (``aelf check``),
  ``reproduce-eval.json`` (``aelf reproduce``'s cached measurements; :class:`CachedResult`), ``MODEL_CARD.md``
  (``aelf card``);
- ``.lock`` while a process writes into it (:mod:`aelf.core.runlock`).

Every other module names these files through this one; a test checks that no other source file spells them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aelf.core.config import Config, config_from_json
from aelf.core.errors import CheckpointError, ConfigError
from aelf.core.fileio import read_json

CONFIG = "config.json"
META = "meta.json"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
BEST = "best.safetensors"
BEST_INFO = "best.json"
EVAL = "eval.json"
EVAL_BEST = "eval-best.json"  # aelf eval --weights best: kept beside eval.json, the last weights' evaluation
REPRODUCE_EVAL = "reproduce-eval.json"
CHECK = "check.json"
SUITE_PATTERN = "eval-suite-*.json"
CARD = "MODEL_CARD.md"
LOCK = ".lock"
CHECKPOINTS = "checkpoints"


def suite_name(suite: str, weights: str = "last") -> str:
    """``eval-suite-SUITE.json``; ``eval-suite-SUITE-best.json`` for the best weights."""
    return SUITE_PATTERN.replace("*", f"{suite}{'-best' if weights == 'best' else ''}")


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a missing, damaged or older file)."""
    return value if isinstance(value, dict) else {}


def parse_metrics(text: str, where: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` text: one JSON object per non-empty line (other JSON values are skipped);
    CheckpointError naming the line that is not JSON."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise CheckpointError(f"{where}: line {number} is not JSON") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Meta:
    """``meta.json``: what a run records about where it comes from (absent entries are None, ``data`` {})."""

    seed: int | None = None
    world_size: int = 1
    command: list[str] | str | None = None
    git_revision: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)  # aelf, torch, python
    platform: str | None = None
    started: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # a user's files: source, sha256, split, sizes, classes
    raw: dict[str, Any] = field(default_factory=dict)  # the whole document

    @classmethod
    def from_json(cls, document: Any) -> Meta:
        raw = as_dict(document)
        world_size = raw.get("world_size", 1)
        return cls(
            seed=raw.get("seed"),
            world_size=world_size if isinstance(world_size, int) else 1,
            command=raw.get("command"),
            git_revision=raw.get("git_revision"),
            versions={key: raw[key] for key in ("aelf", "torch", "python") if key in raw},
            platform=raw.get("platform"),
            started=raw.get("started"),
            data=as_dict(raw.get("data")),
            raw=raw,
        )


@dataclass(frozen=True)
class EvalResult:
    """``eval.json`` (or ``eval-best.json``): accuracy in percent per test set (N, N(L), ...), natural and attacked."""

    natural: dict[str, Any]
    adversarial: dict[str, Any]
    attack: dict[str, Any] | None = None
    n_examples: int | None = None
    weights: str | None = None

    @classmethod
    def from_json(cls, document: Any) -> EvalResult | None:
        """None unless ``document`` holds the natural and adversarial tables."""
        if not is_shift_result(document):
            return None
        n = document.get("n_examples")
        attack = document.get("attack")
        return cls(
            document["natural"],
            document["adversarial"],
            attack if isinstance(attack, dict) else None,
            n if isinstance(n, int) else None,
            document.get("weights"),
        )


def is_shift_result(document: Any) -> bool:
    """Whether a result holds natural and adversarial accuracy tables per test set."""
    return (
        isinstance(document, dict)
        and isinstance(document.get("natural"), dict)
        and isinstance(document.get("adversarial"), dict)
    )


@dataclass(frozen=True)
class BestInfo:
    """``best.json``: the epoch and step of the best weights and their validation accuracies (fractions)."""

    epoch: Any = None
    step: Any = None
    val_nat_acc: Any = None
    val_adv_acc: Any = None
    val_fgsm_acc: Any = None

    @classmethod
    def from_json(cls, document: Any) -> BestInfo | None:
        if not isinstance(document, dict):
            return None
        return cls(*(document.get(key) for key in ("epoch", "step", "val_nat_acc", "val_adv_acc", "val_fgsm_acc")))


@dataclass(frozen=True)
class CachedResult:
    """``reproduce-eval.json``: the measurements of one run (``result``) and what they were measured with (``key``:
    the test attacks, the AutoAttack settings, ...)."""

    key: dict[str, Any]
    result: dict[str, Any]

    @classmethod
    def from_json(cls, document: Any) -> CachedResult | None:
        if not isinstance(document, dict) or not isinstance(document.get("result"), dict):
            return None
        return cls(as_dict(document.get("key")), document["result"])


@dataclass(frozen=True)
class RunFolder:
    """The files of the run folder at ``path`` and typed readers of them. Reading a missing optional file gives None
    (or an empty value); a file that exists but cannot be parsed is a CheckpointError naming it."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- names ---------------------------------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def meta_file(self) -> Path:
        return self.path / META

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def weights(self) -> Path:
        """``model.safetensors``: the last weights, present once training has finished."""
        return self.path / WEIGHTS

    @property
    def best_weights(self) -> Path:
        return self.path / BEST

    @property
    def best_file(self) -> Path:
        return self.path / BEST_INFO

    def eval_file(self, weights: str = "last") -> Path:
        """``eval.json``, or ``eval-best.json`` for the best weights."""
        return self.path / (EVAL_BEST if weights == "best" else EVAL)

    @property
    def reproduce_file(self) -> Path:
        return self.path / REPRODUCE_EVAL

    @property
    def check_file(self) -> Path:
        return self.path / CHECK

    def suite_file(self, suite: str, weights: str = "last") -> Path:
        return self.path / suite_name(suite, weights)

    def suite_files(self) -> list[Path]:
        """Every ``eval-suite-*.json`` of the folder, by name."""
        return sorted(self.path.glob(SUITE_PATTERN))

    @property
    def card_file(self) -> Path:
        return self.path / CARD

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def is_run(self) -> bool:
        """Whether the folder holds a run (its ``config.json``)."""
        return self.config_file.is_file()

    def is_finished(self) -> bool:
        return self.weights.is_file()

    # -- readers -------------------------------------------------------------------------------------------------------

    def config(self) -> Config:
        """The run's configuration; CheckpointError when the folder or its config.json is missing or invalid."""
        if not self.path.is_dir():
            raise CheckpointError(f"run folder not found: {self.path}")
        if not self.config_file.exists():
            raise CheckpointError(
                f"{self.path}: not an aelf run folder (no {CONFIG}; aelf train writes one into each run)"
            )
        try:
            return config_from_json(read_json(self.config_file))
        except ConfigError as err:
            raise CheckpointError(f"{self.config_file}: {err}") from None

    def config_document(self) -> Any:
        """``config.json`` as JSON (for showing settings as written); CheckpointError when unreadable."""
        return read_json(self.config_file)

    def meta(self) -> Meta:
        """``meta.json`` (an empty :class:`Meta` when absent)."""
        return Meta.from_json(self.optional(self.meta_file))

    @cached_property
    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl``, one per finished epoch ([] when absent), parsed once."""
        if not self.metrics_file.is_file():
            return []
        return parse_metrics(self.metrics_file.read_text(), self.metrics_file)

    def eval(self, weights: str = "last") -> EvalResult | None:
        return EvalResult.from_json(self.optional(self.eval_file(weights)))

    def best(self) -> BestInfo | None:
        """``best.json`` when the run kept best weights (``best.safetensors``), else None."""
        return BestInfo.from_json(self.optional(self.best_file)) if self.best_weights.is_file() else None

    def reproduced(self) -> CachedResult | None:
        return CachedResult.from_json(self.optional(self.reproduce_file))

    def check(self) -> dict[str, Any] | None:
        document = self.optional(self.check_file)
        return document if isinstance(document, dict) else None

    @staticmethod
    def optional(path: Path) -> Any:
        """The JSON document at ``path``, or None when the file is absent."""
        return read_json(path) if path.is_file() else None
