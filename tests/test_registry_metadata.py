"""Every registered thing carries what every consumer reads (the model card, the tables, the report, --help), and the
consumers read it from the registries instead of keeping their own copies."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from aelf.apps import card
from aelf.apps.parser import build_parser, registry_listing
from aelf.core.attacks import DEFAULT_TRAINING_ATTACK, TRAINING_ATTACKS, TradesKL
from aelf.core.config import family_defaults, make_config, to_dict
from aelf.core.data import load_dataset
from aelf.core.data.datasets import DATASETS
from aelf.core.data.families import FAMILIES
from aelf.core.methods import METHODS
from aelf.core.models import MODELS
from aelf.core.protocols import Method, SplitModel, TrainingAttack
from aelf.workflows.reproduction.tables import METHOD_LABELS

SRC = Path(__file__).resolve().parents[1] / "src" / "aelf"
METADATA = ("name", "label", "description", "reference")
BUDGET_KEYS = {"eps", "n_steps", "step_size"}


def check_metadata(cls, key: str) -> None:
    for field in METADATA:
        value = getattr(cls, field, None)
        assert isinstance(value, str) and value.strip(), (cls, field)
        assert "\n" not in value and len(value) <= 200, (cls, field, "one line")
    assert cls.name == key


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_its_metadata_and_contract(name):
    method = METHODS[name]
    check_metadata(method, name)
    assert dataclasses.is_dataclass(method) and method.__dataclass_params__.frozen
    instance = method()
    assert isinstance(instance, Method)
    assert to_dict(instance)["name"] == name


@pytest.mark.parametrize("name", sorted(TRAINING_ATTACKS))
def test_every_training_attack_has_its_metadata_and_budget(name):
    attack = TRAINING_ATTACKS[name]
    check_metadata(attack, name)
    fields = {f.name for f in dataclasses.fields(attack)}
    assert "eps" in set(attack.family_budget) <= BUDGET_KEYS & fields
    assert isinstance(attack(), TrainingAttack) and attack().eps >= 0


def test_the_attack_of_trades_has_its_metadata_too():
    check_metadata(TradesKL, TradesKL.name)
    assert isinstance(TradesKL(), TrainingAttack)
    assert set(TradesKL.family_budget) == BUDGET_KEYS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_its_metadata_and_takes_its_input_size(name):
    options = MODELS[name]
    check_metadata(options, name)
    size = options.input_size or options.min_input_size
    assert isinstance(size, int) and size >= 1
    model = options(width=0.0625).build(3, 7)
    assert isinstance(model, SplitModel)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats).shape == (2, 7)
    assert isinstance(model.head, torch.nn.Linear)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_has_its_sizes_channels_and_classes(name):
    info = DATASETS[name]
    assert info.name == name and info.family in FAMILIES.values()
    assert info.in_channels in (1, 3) and len(info.mean) == len(info.std) == info.in_channels
    assert info.num_classes >= 2
    assert isinstance(info.n_train, int) and isinstance(info.n_test, int) and min(info.n_train, info.n_test) > 0
    for text in (info.split, info.description, info.reference):
        assert isinstance(text, str) and text.strip() and "\n" not in text


def test_the_embedded_dataset_has_the_sizes_its_entry_states():
    info = DATASETS["mnist5k"]
    for split, count in (("train", info.n_train), ("test", info.n_test)):
        x, y = load_dataset("mnist5k", split)
        assert len(x) == len(y) == count and x.shape[1] == info.in_channels
        assert int(y.max()) + 1 == info.num_classes


def test_the_card_describes_exactly_the_registered_methods():
    described = {
        name for name in METHODS if card.method_text(name) == (METHODS[name].description, METHODS[name].reference)
    }
    assert described == set(METHODS)
    assert card.method_text("no_such_method")[1] == "no reference recorded for this method"
    assert card.dataset_sizes("mnist5k") == (DATASETS["mnist5k"].n_train, DATASETS["mnist5k"].n_test)
    assert card.model_settings({"name": "cnnb", "width": 1.0, "activation": "relu", "depth": 28}) == {
        "name": "cnnb",
        "width": 1.0,
        "activation": "relu",
    }


def test_tables_and_help_label_every_method_from_the_registry():
    assert METHOD_LABELS == {name: method.label for name, method in METHODS.items()}
    listing = registry_listing({"methods": METHODS, "models": MODELS, "datasets": DATASETS})
    for registry in (METHODS, MODELS):
        for name, entry in registry.items():
            assert f"{name}  " in listing and entry.description in listing
    for info in DATASETS.values():
        assert info.description in listing
    assert "methods (--method):" in build_parser()._subparsers._group_actions[0].choices["train"].epilog


def test_config_names_no_method_or_attack():
    """core/config.py picks classes by registry and type, never by the names of particular methods or attacks."""
    names = set(METHODS) | set(TRAINING_ATTACKS) | {TradesKL.name}
    tree = ast.parse((SRC / "core" / "config.py").read_text())
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not literals & names


@dataclass(frozen=True)
class ToyStep:
    """A training attack registered by a test: one signed step of eps, no noise."""

    name: ClassVar[str] = "toy_step"
    label: ClassVar[str] = "toy"
    description: ClassVar[str] = "one signed step"
    reference: ClassVar[str] = "a test"
    family_budget: ClassVar[tuple[str, ...]] = ("eps",)
    eps: float = 0.3

    def __call__(self, model, x, y):
        return x


def test_a_training_attack_is_one_class_plus_one_registration(monkeypatch):
    monkeypatch.setitem(TRAINING_ATTACKS, ToyStep.name, ToyStep)
    config = make_config({"data": {"name": "cifar10"}, "method": {"name": "at", "attack": {"name": "toy_step"}}})
    assert config.method.attack == ToyStep(eps=0.031)  # the family's eps, as its budget says
    assert to_dict(config)["method"]["attack"] == {"name": "toy_step", "eps": 0.031}
    assert "name" not in to_dict(make_config({"method": {"name": "at"}}))["method"]["attack"]
    assert DEFAULT_TRAINING_ATTACK in TRAINING_ATTACKS


def test_family_budget_decides_what_a_method_attack_takes_from_the_family():
    cifar = {"data": {"name": "cifar10"}}
    full = family_defaults({**cifar, "method": {"name": "at"}})["method"]["attack"]
    assert set(full) == BUDGET_KEYS
    single = family_defaults({**cifar, "method": {"name": "at", "attack": {"name": "fgsm_rs"}}})["method"]["attack"]
    assert single == {"eps": 0.031}
    trades = family_defaults({**cifar, "method": {"name": "trades"}})["method"]["attack"]
    assert set(trades) == BUDGET_KEYS
    assert "method" not in family_defaults({**cifar, "method": {"name": "st"}})
