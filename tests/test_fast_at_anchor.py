"""Issue 28, item 5: the anchor study ``fast-at-anchor`` (Wong et al.'s MNIST recipe on mnist5k), its settings and a
tiny run of it end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from aelf.core.attacks import FGSMRS, PGD
from aelf.core.data import steps_per_epoch
from aelf.core.models import WongMNISTOptions
from aelf.core.optim import peak_epoch
from aelf.workflows.reproduction.experiment import EXPERIMENTS
from aelf.workflows.reproduction.reproduce import plan, reproduce
from aelf.workflows.reproduction.studies.fast_at_anchor import PGD40, PGD50_10

NAME = "fast-at-anchor"


@pytest.mark.parametrize(("preset", "epochs", "steps"), [("epochs10", 10, 400), ("steps6000", 150, 6000)])
def test_every_run_is_wong_et_als_recipe(preset, epochs, steps):
    the_plan = plan(NAME, preset, "unused")
    assert list(the_plan.configs) == ["fgsm-1.25-noclip", "fgsm-1.25-clip", "fgsm-1-noclip", "fgsm-1-clip", "at"]
    for config in the_plan.configs.values():
        tc = config.train
        assert config.data.name == "mnist5k" and config.data.image_size == 28 and config.data.train_limit is None
        assert config.model == WongMNISTOptions()
        assert (tc.optimizer, tc.lr, tc.weight_decay, tc.schedule, tc.batch_size) == ("adam", 5e-3, 0, "cyclic", 100)
        assert tc.epochs == epochs and steps_per_epoch(4000, tc.batch_size) * tc.epochs == steps
        assert peak_epoch(tc) == pytest.approx(0.4 * epochs)  # epoch 4 of 10, as theirs
        assert config.method.name == "at" and config.method.attack_mode == "eval"
    attacks = {key: config.method.attack for key, config in the_plan.configs.items()}
    assert attacks["fgsm-1.25-noclip"] == FGSMRS(eps=0.3, step_scale=1.25, clip_start=False)
    assert attacks["fgsm-1-clip"] == FGSMRS(eps=0.3, step_scale=1.0, clip_start=True)
    assert attacks["fgsm-1.25-noclip"].step == pytest.approx(0.375) and attacks["fgsm-1-clip"].step == 0.3
    assert attacks["at"] == PGD(eps=0.3, n_steps=40, step_size=0.01, random_start=True)
    (test,) = the_plan.test_attacks.values()
    assert test == PGD(eps=0.3, n_steps=50, step_size=0.01, random_start=True, n_restarts=10)
    assert the_plan.autoattack.version == "standard" and the_plan.autoattack.eps == 0.3
    assert the_plan.autoattack_examples is None, "AutoAttack on every test digit"


def test_the_anchors_figure_is_labelled_as_the_anchors():
    experiment = EXPERIMENTS[NAME]
    assert experiment.paper_rows == {"fgsm-1.25-noclip": {"natural": 98.50, "PGD-50x10": 88.38}}
    assert "full MNIST" in experiment.paper_label and "#20" in experiment.paper_label


def test_a_tiny_anchor_study_runs_end_to_end(tmp_path, monkeypatch):
    """The study's runs and recipe on 200 digits for one epoch, its attacks cut to two steps (two restarts)."""
    experiment = EXPERIMENTS[NAME]
    small = replace(
        experiment.presets["epochs10"],
        attack={**PGD40, "n_steps": 2, "step_size": 0.15},
        test_attacks={"PGD-50x10": {**PGD50_10, "n_steps": 2, "step_size": 0.15, "n_restarts": 2}},
    )
    monkeypatch.setitem(EXPERIMENTS, NAME, replace(experiment, presets={"epochs10": small}))
    overrides = ["data.train_limit=200", "data.test_limit=20", "train.epochs=1"]
    document = reproduce(
        NAME, "epochs10", out=tmp_path, overrides=overrides, progress=False, log=lambda *_: None, autoattack=False
    )
    assert set(document["measured"]) == {"fgsm-1.25-noclip", "fgsm-1.25-clip", "fgsm-1-noclip", "fgsm-1-clip", "at"}
    assert all(set(row) >= {"natural", "PGD-50x10"} for row in document["measured"].values())
    assert set(document["comparisons"]) == {"fgsm-1.25-noclip", "fgsm-1.25-clip", "fgsm-1-noclip", "fgsm-1-clip"}
    saved = json.loads((tmp_path / "fgsm-1.25-noclip" / "config.json").read_text())
    assert saved["method"]["attack"]["clip_start"] is False and saved["model"]["name"] == "wong_mnist"
    table = (tmp_path / "results.md").read_text()
    assert "anchor: Wong et al.'s released model, full MNIST" in table and "98.50" in table
