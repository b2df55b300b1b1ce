"""Each kind of thing is added in one place plus one registration: a toy dataset, a toy model and a toy experiment
are registered here and run end to end; the dataset family's attacks are the defaults; old run configs load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import aelf
from aelf.core.config import config_from_json, load_config, to_dict
from aelf.core.data.datasets import DATASETS, DatasetInfo
from aelf.core.data.families import CIFAR, MNIST
from aelf.core.errors import ConfigError
from aelf.core.models import MODELS, ModelOptions
from aelf.workflows.reproduction.experiment import EXPERIMENTS, Experiment, Preset, Run, register_experiment
from aelf.workflows.reproduction.reproduce import reproduce


def toy_reader(root, split):
    """Three classes of 8 x 8 images: a bright row, column or diagonal, plus noise."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    n = 96 if split == "train" else 30
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, size=(n, 8, 8))
    for i, label in enumerate(labels):
        if label == 0:
            images[i, 3, :] = 255
        elif label == 1:
            images[i, :, 3] = 255
        else:
            images[i][np.eye(8, dtype=bool)] = 255
    return images.astype(np.uint8), labels


class ToyMLP(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, hidden: int):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 32 * 32, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f):
        return self.head(f)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@dataclass(frozen=True)
class ToyMLPOptions(ModelOptions):
    name: ClassVar[str] = "toy_mlp"
    hidden: int = 16

    def build(self, in_channels, num_classes, mean=None, std=None) -> nn.Module:
        return ToyMLP(in_channels, num_classes, self.hidden)


@pytest.fixture
def toy_registrations(monkeypatch):
    monkeypatch.setitem(DATASETS, "toy", DatasetInfo("toy", 1, 3, (0.2,), (0.3,), MNIST, toy_reader, needs_root=False))
    monkeypatch.setitem(MODELS, ToyMLPOptions.name, ToyMLPOptions)
    tiny = {
        "data": {"name": "toy"},
        "model": {"name": "toy_mlp", "hidden": 8},
        "train": {"epochs": 1, "batch_size": 32, "lr_milestones": []},
    }
    experiment = Experiment(
        name="toy-table",
        title="a toy experiment",
        kind="robust",
        dataset="toy",
        runs=(Run("st", "ST", {"method": {"name": "st"}}), Run("at", "AT", {"method": {"name": "at"}})),
        presets={
            "quick": Preset(
                settings=tiny,
                attack={"eps": 0.1, "n_steps": 2, "step_size": 0.05},
                test_attacks={"A": {"eps": 0.1, "n_steps": 2, "step_size": 0.05}},
                note="toy",
            )
        },
        paper_rows={},
        paper_label="none",
    )
    register_experiment(experiment)
    yield experiment
    EXPERIMENTS.pop(experiment.name)


def test_a_toy_dataset_model_and_experiment_run_from_one_registration_each(toy_registrations, tmp_path):
    config = load_config(
        None,
        [
            "data.name=toy",
            "model.name=toy_mlp",
            "model.hidden=8",
            "train.epochs=1",
            "train.batch_size=32",
            "method.name=at",
            "method.attack.n_steps=1",
        ],
    )
    assert config.eval.attack == MNIST.attack and config.method.attack.eps == MNIST.attack.eps  # the toy's family
    run = aelf.train(config, tmp_path / "run", progress=False)
    model = aelf.load_model(run)
    assert isinstance(model, ToyMLP) and model.features[1].out_features == 8
    assert aelf.read_config(run).model == ToyMLPOptions(hidden=8)

    document = reproduce("toy-table", "quick", tmp_path / "toy", progress=False, autoattack=False)
    assert set(document["measured"]) >= {"st", "at"}
    assert (tmp_path / "toy" / "results.md").is_file()


def test_registering_an_experiment_twice_is_refused(toy_registrations):
    with pytest.raises(ConfigError, match="registered already"):
        register_experiment(toy_registrations)


def test_attacks_default_to_the_dataset_familys_paper_attack():
    cifar = load_config(None, ["data.name=cifar10", "method.name=at"])
    assert cifar.eval.attack == CIFAR.attack and cifar.method.attack == CIFAR.attack
    assert (CIFAR.attack.eps, CIFAR.attack.n_steps, CIFAR.attack.step_size) == (0.031, 10, 0.0062)
    mnist = load_config(None, ["method.name=trades"])
    assert mnist.eval.attack == MNIST.attack and mnist.method.attack.eps == 0.3 and mnist.method.attack.n_steps == 16
    single_step = load_config(None, ["data.name=cifar100", "method.name=aelfs", "method.attack.name=fgsm_rs"])
    assert single_step.method.attack.eps == 0.031 and single_step.method.attack.step_size is None
    chosen = load_config(
        None, ["data.name=cifar10", "method.name=at", "method.attack.eps=8/255", "eval.attack.n_steps=20"]
    )
    assert chosen.method.attack.eps == pytest.approx(8 / 255) and chosen.method.attack.n_steps == 10
    assert chosen.eval.attack.n_steps == 20 and chosen.eval.attack.eps == 0.031
    assert to_dict(cifar)["eval"]["attack"]["eps"] == 0.031  # written into each run's config.json


def test_old_run_configs_with_every_models_options_still_load():
    legacy = {
        "model": {"name": "cnnb", "width": 0.5, "activation": "relu", "depth": 28, "widen_factor": 10, "dropout": 0.0}
    }
    assert to_dict(config_from_json(legacy).model) == {"name": "cnnb", "width": 0.5, "activation": "relu"}
    with pytest.raises(ConfigError, match="unknown setting model.depth"):
        config_from_json({"model": {"name": "cnnb", "depth": 40}})
    wrn = config_from_json({"model": {"name": "wrn", "depth": 16, "widen_factor": 2, "dropout": 0.2}})
    assert (wrn.model.depth, wrn.model.widen_factor, wrn.model.dropout) == (16, 2, 0.2)


def test_each_model_carries_only_its_own_options():
    with pytest.raises(ConfigError, match="unknown setting model.widen_factor"):
        load_config(None, ["model.name=preact_resnet18", "model.widen_factor=2"])
    assert torch.is_tensor(next(load_config(None, []).model.build(1, 10).parameters()))
