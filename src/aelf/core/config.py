"""Every setting of a run, with its default, as nested dataclasses.

A run is described by one :class:`Config`. YAML files (``src/aelf/configs/*.yaml``) hold only what differs from the
defaults below, and ``--set key=value`` overrides single keys. Loading is strict: an unknown key, a value of the wrong
type or a value out of range raises :class:`~aelf.core.errors.ConfigError` before any work starts. Numbers may be
written as fractions (``8/255``); they are parsed with :class:`fractions.Fraction`, never evaluated.

The ``method`` section is special: its ``name`` picks the method's own frozen dataclass (``aelf.core.methods``), whose
fields are the rest of the section. The training attack lives inside the method (``method.attack``) because it is one
of the method's hyper-parameters; its ``name`` picks one of ``aelf.core.attacks.TRAINING_ATTACKS`` in the same way (no
name means ``pgd``, and a PGD attack is written without a name).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from aelf.core.attacks import DEFAULT_TRAINING_ATTACK, PGD, TRAINING_ATTACKS, AnyTrainingAttack
from aelf.core.config_text import load_yaml, nest, parse_override
from aelf.core.data.families import FAMILIES
from aelf.core.data.files import DEFAULT_TEST_FRACTION, LAYOUTS
from aelf.core.data.source import FILES, dataset_names, family_of
from aelf.core.errors import ConfigError
from aelf.core.methods import METHODS, ST, AnyMethod
from aelf.core.models import CUSTOM, MODELS, AnyModelOptions, CNNbOptions, CustomModelOptions, ModelOptions
from aelf.core.optim import OPTIMIZERS, SCHEDULES


@dataclass(frozen=True)
class DataConfig:
    """Which images to train and test on.

    ``name``: ``mnist5k`` (embedded real digits), ``mnist``, ``fashion-mnist`` (IDX files in ``root``), ``cifar10``,
    ``cifar100`` (the official binary version in ``root``, see :mod:`aelf.core.data.cifar`), or ``files``: your own
    ``.npz``/``.safetensors`` file or folder of class folders at ``root`` (:mod:`aelf.core.data.files`).
    ``train_limit``/``test_limit`` keep only the first N images of a split (quick runs); ``None`` keeps all.

    ``image_size`` resizes the images to that square size (bilinear); ``None``: a named dataset's images are 32 x 32
    (Appendix C resizes MNIST's 28 x 28 digits), a user's files keep their size. For the MNIST datasets 28 keeps the
    original digits (Wong et al.'s network, ``model.name: wong_mnist``, takes 28 x 28).

    Only for ``files`` (:mod:`aelf.core.data.source`): ``test_fraction`` and ``split_seed`` draw the stratified
    split of data that comes without one (a given split is kept); ``family`` (``cifar``, the default, or ``mnist``)
    picks the default training/evaluation attack and the augmentation; ``layout`` (``auto``, ``nchw``, ``nhwc``)
    says where the channels of 4-D images are.
    """

    name: str = "mnist5k"
    root: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0
    family: str | None = None
    layout: str = "auto"
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.name not in dataset_names():
            raise ConfigError(f"unknown dataset {self.name!r} (choose from: {', '.join(dataset_names())})")
        for key in ("train_limit", "test_limit", "image_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"data.{key} must be at least 1 (got {value})")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"data.test_fraction must be strictly between 0 and 1 (got {self.test_fraction})")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"data.layout must be one of {', '.join(LAYOUTS)} (got {self.layout!r})")
        if self.family is not None and self.family not in FAMILIES:
            raise ConfigError(f"unknown data.family {self.family!r} (choose from: {', '.join(FAMILIES)})")
        if self.name == FILES:
            if not self.root:
                raise ConfigError("data.name=files reads data.root: give the file or folder (aelf train --data PATH)")
            return
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        only_files = [
            key for key in ("test_fraction", "split_seed", "family", "layout") if getattr(self, key) != defaults[key]
        ]
        if only_files:
            raise ConfigError(f"data.{only_files[0]} applies to your own files (data.name=files), not to {self.name}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (Appendix C): SGD, lr 0.1 decayed by ``lr_gamma`` at ``lr_milestones`` (epochs), batch 128.

    Other recipes (:mod:`aelf.core.optim`): ``optimizer`` ``sgd`` (default) | ``adam`` | ``adamw`` (``momentum`` is
    SGD's only); ``schedule`` ``multistep`` (default; ``lr_milestones`` and ``lr_gamma`` apply to it only) | ``cosine``
    | ``cyclic`` (triangular 0 -> lr -> 0, the peak at ``peak_epoch``, default 2/5 of the epochs); ``warmup_epochs``: a
    linear warm-up from 0 over that many epochs (fractions allowed), under any schedule. All but a plain multi-step
    schedule change the rate every iteration.

    Robust validation (:mod:`aelf.core.validation`), off by default:

    - ``val_size``: images held out from the *training* data (after ``data.train_limit``), a stratified slice drawn
      from ``seed``; the rest is trained on. 0 (default) holds out nothing and validates nothing.
    - ``val_holdout``: whether that slice leaves the training data (default). ``false`` keeps training on every image
      and validates on the slice anyway, as Wong et al. 2020's early stop checks a training batch: the guard then
      watches a run without changing what it trains on (its weights are those of the run without validation), and
      catastrophic overfitting, which shows on training images as much as on new ones, is still seen; robust
      overfitting, a gap between the two, is not.
    - ``eval_every``: validate every this many epochs (and after the last one).
    - ``val_attack_steps``: steps of the validation attack, which is ``eval.attack`` with its step size scaled so
      that steps x step size stays the same (``None``: ``eval.attack`` as it is). FGSM accuracy at its eps is
      measured too (the overfitting guard compares the two).
    - ``overfit_drop``: warn (once per event, and ``overfit`` in metrics.jsonl) when validation robust accuracy falls
      more than this below its best, as a fraction (0.2 = 20 points); ``stop_on_overfit``: then also end training,
      keeping ``model.safetensors`` (last) and ``best.safetensors``, the weights of the best validation robust
      accuracy.
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = (20, 40)
    lr_gamma: float = 0.1
    optimizer: str = "sgd"
    schedule: str = "multistep"
    peak_epoch: float | None = None
    warmup_epochs: float = 0.0
    seed: int = 8
    init: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    device: str = "auto"
    deterministic: bool = True
    sync_batchnorm: bool = True
    dist_timeout_s: float = 600.0
    amp: str = "off"
    compile: bool = False
    retain_cpu_heap: bool = True  # CPU: freed memory stays in the heap (aelf.core.cpu_heap): faster steps, more memory
    val_size: int = 0
    val_holdout: bool = True
    eval_every: int = 1
    val_attack_steps: int | None = None
    overfit_drop: float = 0.2
    stop_on_overfit: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size must be at least 2 (got {self.batch_size})")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be positive (got {self.lr})")
        if self.weight_decay < 0 or self.momentum < 0:
            raise ConfigError("train.weight_decay and train.momentum must be non-negative")
        if list(self.lr_milestones) != sorted(self.lr_milestones) or any(m < 1 for m in self.lr_milestones):
            raise ConfigError(f"train.lr_milestones must be increasing epochs >= 1 (got {list(self.lr_milestones)})")
        self._check_recipe()
        if self.checkpoint_every < 0:
            raise ConfigError(f"train.checkpoint_every must be >= 0 steps (got {self.checkpoint_every})")
        if self.amp not in ("off", "bf16"):
            raise ConfigError(f"train.amp must be off or bf16 (got {self.amp!r})")
        if not self.dist_timeout_s > 0:
            raise ConfigError(f"train.dist_timeout_s must be positive (got {self.dist_timeout_s})")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be at least 1 (got {self.keep_checkpoints})")
        if self.val_size < 0:
            raise ConfigError(f"train.val_size must be >= 0 images (got {self.val_size})")
        if self.eval_every < 1:
            raise ConfigError(f"train.eval_every must be at least 1 epoch (got {self.eval_every})")
        if self.val_attack_steps is not None and self.val_attack_steps < 1:
            raise ConfigError(f"train.val_attack_steps must be at least 1 (got {self.val_attack_steps})")
        if not 0 < self.overfit_drop <= 1:
            raise ConfigError(f"train.overfit_drop must be in (0, 1], a fraction of accuracy (got {self.overfit_drop})")
        if self.stop_on_overfit and not self.val_size:
            raise ConfigError("train.stop_on_overfit needs robust validation: set train.val_size > 0")
        if not self.val_holdout and not self.val_size:
            raise ConfigError("train.val_holdout: false says where validation images come from: set train.val_size > 0")

    def _check_recipe(self) -> None:
        """The optimizer and the schedule (:mod:`aelf.core.optim`)."""
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if self.optimizer != "sgd" and self.momentum != TrainConfig.momentum:
            raise ConfigError(
                f"train.momentum is SGD's; {self.optimizer} uses torch's betas (0.9, 0.999): leave train.momentum out"
            )
        if self.peak_epoch is not None:
            if self.schedule != "cyclic":
                raise ConfigError(f"train.peak_epoch applies to schedule cyclic, not {self.schedule}")
            if not 0 < self.peak_epoch < self.epochs:
                raise ConfigError(
                    f"train.peak_epoch must be strictly between 0 and train.epochs {self.epochs} "
                    f"(got {self.peak_epoch})"
                )
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(
                f"train.warmup_epochs must be between 0 and train.epochs {self.epochs} (got {self.warmup_epochs})"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: the attack on the test sets and the pixel shift of N(L), N(R), N(U), N(D) (Fig. 3)."""

    attack: PGD = field(default_factory=PGD)
    shift_pixels: int = 8
    batch_size: int = 500

    def __post_init__(self) -> None:
        if self.shift_pixels < 0:
            raise ConfigError(f"eval.shift_pixels must be >= 0 (got {self.shift_pixels})")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be at least 1 (got {self.batch_size})")


DEFAULT_MODEL, DEFAULT_METHOD = CNNbOptions.name, ST.name  # what a config without model.name or method.name gets


@dataclass(frozen=True)
class Config:
    """One run: data, model, method (with its training attack), optimisation and evaluation."""

    data: DataConfig = field(default_factory=DataConfig)
    model: AnyModelOptions = field(default_factory=CNNbOptions)
    method: AnyMethod = field(default_factory=ST)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------------------------------------------------
# Loading: dict -> dataclasses, strictly.


def _parse_number(value: Any, kind: type, where: str) -> int | float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = Fraction(value.strip().replace("_", ""))
        except (ValueError, ZeroDivisionError):
            example = "an integer" if kind is int else "a number such as 0.3 or 8/255"
            raise ConfigError(f"{where}: expected {example}, got {value!r}") from None
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, Fraction) and value.denominator != 1:
            raise ConfigError(f"{where}: expected an integer, got {value}")
        if not isinstance(value, (int, float, Fraction)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if not isinstance(value, (int, float, Fraction)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, options[0], where)
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) or value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint in (int, float):
        return _parse_number(value, hint, where)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {where}")


def build_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """Build ``cls`` from a (possibly partial) dict, rejecting unknown keys and wrong types."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown setting {prefix}{unknown[0]} (valid: {', '.join(prefix + n for n in names)})")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        sub = f"{where}.{name}" if where else name
        builder = _REGISTRY_BUILDERS.get(hints[name])
        kwargs[name] = builder(data[name], sub) if builder else _coerce(data[name], hints[name], sub)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where + ': ' if where else ''}{err}") from None


def build_method(data: Any, where: str = "method") -> Any:
    """The method's dataclass, chosen by ``data['name']`` (default :data:`DEFAULT_METHOD`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a name, got {data!r}")
    data = dict(data)
    name = data.pop("name", DEFAULT_METHOD)
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r} (choose from: {', '.join(METHODS)})")
    return build_dataclass(METHODS[name], data, where)


# Options every model's section carried before each model had its own: a run folder written then still loads.
LEGACY_MODEL_OPTIONS = {"depth": 28, "widen_factor": 10, "dropout": 0.0}


def build_model_options(data: Any, where: str = "model") -> Any:
    """The model's options dataclass, chosen by ``data['name']`` (default :data:`DEFAULT_MODEL`)."""
    if isinstance(data, tuple(MODELS.values()) + (CustomModelOptions,)):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a name, got {data!r}")
    data = dict(data)
    name = data.pop("name", DEFAULT_MODEL)
    cls: type[ModelOptions]
    if name == CUSTOM:
        cls = CustomModelOptions
    elif name in MODELS:
        cls = MODELS[name]
    else:
        raise ConfigError(f"unknown model {name!r} (choose from: {', '.join(MODELS)})")
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, old_default in LEGACY_MODEL_OPTIONS.items():
        if key in data and key not in fields and _is_number(data[key]) and float(data[key]) == old_default:
            del data[key]
    return build_dataclass(cls, data, where)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def build_training_attack(data: Any, where: str = "method.attack") -> Any:
    """A method's training attack, chosen by ``data['name']`` (default ``pgd``)."""
    if isinstance(data, tuple(TRAINING_ATTACKS.values())):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {data!r}")
    data = dict(data)
    name = data.pop("name", DEFAULT_TRAINING_ATTACK)
    if not isinstance(name, str) or name not in TRAINING_ATTACKS:
        raise ConfigError(f"{where}: unknown training attack {name!r} (choose from: {', '.join(TRAINING_ATTACKS)})")
    return build_dataclass(TRAINING_ATTACKS[name], data, where)


# A field typed as one of the registries' unions is built by the registry's own builder, which picks the class by name.
_REGISTRY_BUILDERS: dict[Any, Callable[[Any, str], Any]] = {
    AnyMethod: build_method,
    AnyModelOptions: build_model_options,
    AnyTrainingAttack: build_training_attack,
}


def to_dict(obj: Any) -> Any:
    """Plain JSON/YAML-able form of a config (methods and models carry their ``name``; so do training attacks other
    than the default one, whose settings stay written without a name)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        kind: Any = type(obj)
        named = kind in (*METHODS.values(), *MODELS.values(), CustomModelOptions)
        if named or (kind in TRAINING_ATTACKS.values() and kind.name != DEFAULT_TRAINING_ATTACK):
            out["name"] = kind.name
        for f in dataclasses.fields(obj):
            out[f.name] = to_dict(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def family_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """The config layer of the dataset family's paper attacks (:mod:`aelf.core.data.families`) for ``settings``: the
    evaluation attack and, when the method makes adversarial examples, its training attack's budget. It goes under
    every other layer, so anything written in a file, a flag or a run's config.json wins."""
    data: dict[str, Any] = settings["data"] if isinstance(settings.get("data"), dict) else {}
    name, family = data.get("name", DataConfig.name), data.get("family")
    if not isinstance(name, str) or name not in dataset_names() or (family is not None and family not in FAMILIES):
        return {}  # the dataset's own error comes when the config is built
    attack = family_of(name, family).attack
    budget = {"eps": attack.eps, "n_steps": attack.n_steps, "step_size": attack.step_size}
    layer: dict[str, Any] = {"eval": {"attack": dict(budget)}}
    method: dict[str, Any] = settings["method"] if isinstance(settings.get("method"), dict) else {}
    attack_cls = _training_attack_class(method)
    if attack_cls is not None:
        keys: tuple[str, ...] = getattr(attack_cls, "family_budget", ("eps",))
        layer["method"] = {"attack": {key: budget[key] for key in keys}}
    return layer


def _training_attack_class(method: dict[str, Any]) -> type | None:
    """The class of the training attack that the method settings ``method`` choose: the one its ``attack.name``
    names when the method's ``attack`` field is :data:`~aelf.core.attacks.AnyTrainingAttack`, else the field's own
    type; None for a method without an attack (or an unknown method or attack: their errors come later)."""
    name = method.get("name", DEFAULT_METHOD)
    method_cls = METHODS.get(name) if isinstance(name, str) else None
    hint = typing.get_type_hints(method_cls).get("attack") if method_cls is not None else None
    if hint is None or hint != AnyTrainingAttack:
        return hint
    chosen: dict[str, Any] = method["attack"] if isinstance(method.get("attack"), dict) else {}
    attack_name = chosen.get("name", DEFAULT_TRAINING_ATTACK)
    return TRAINING_ATTACKS.get(attack_name) if isinstance(attack_name, str) else None


def make_config(*layers: dict[str, Any]) -> Config:
    """Merge partial dicts (later wins) over the dataset family's attacks (:func:`family_defaults`) and the defaults,
    and build a validated :class:`Config`."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer)
    return build_dataclass(Config, _merge(family_defaults(merged), merged))


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), **flat: Any) -> Config:
    """Defaults <- YAML file <- ``flat`` (dotted keys, e.g. ``{"train.epochs": 5}``) <- ``--set`` overrides."""
    layers = [load_yaml(path)] if path else []
    layers += [nest(key, value) for key, value in flat.items() if value is not None]
    layers += [parse_override(text) for text in overrides]
    return make_config(*layers)


def config_from_json(text_or_dict: str | dict[str, Any]) -> Config:
    data = json.loads(text_or_dict) if isinstance(text_or_dict, str) else text_or_dict
    return make_config(data)
