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
from aelf.workflows.reproduction.studies.fast_at_anchor import PGD40, PGD50_10, guard_row

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
    for key, config in the_plan.configs.items():  # the guard watches the single-step runs without holding out
        tc = config.train
        guard = (tc.val_size, tc.val_holdout, tc.val_attack_steps, tc.eval_every)
        assert guard == ((0, True, None, 1) if key == "at" else (200, False, 5, 1))


def test_the_anchors_figure_is_labelled_as_the_anchors():
    experiment = EXPERIMENTS[NAME]
    assert experiment.paper_rows == {"fgsm-1.25-noclip": {"natural": 98.50, "PGD-50x10": 88.38}}
    assert "full MNIST" in experiment.paper_label and "#20" in experiment.paper_label


def test_a_tiny_anchor_study_runs_end_to_end(tmp_path, monkeypatch):
    """The study's runs and recipe on 400 digits for one epoch, its attacks cut to two steps (two restarts)."""
    experiment = EXPERIMENTS[NAME]
    small = replace(
        experiment.presets["epochs10"],
        attack={**PGD40, "n_steps": 2, "step_size": 0.15},
        test_attacks={"PGD-50x10": {**PGD50_10, "n_steps": 2, "step_size": 0.15, "n_restarts": 2}},
    )
    monkeypatch.setitem(EXPERIMENTS, NAME, replace(experiment, presets={"epochs10": small}))
    overrides = ["data.train_limit=400", "data.test_limit=20", "train.epochs=1"]
    document = reproduce(
        NAME, "epochs10", out=tmp_path, overrides=overrides, progress=False, log=lambda *_: None, autoattack=False
    )
    assert set(document["measured"]) == {"fgsm-1.25-noclip", "fgsm-1.25-clip", "fgsm-1-noclip", "fgsm-1-clip", "at"}
    assert all(set(row) >= {"natural", "PGD-50x10"} for row in document["measured"].values())
    assert set(document["comparisons"]) == {"fgsm-1.25-noclip", "fgsm-1.25-clip", "fgsm-1-noclip", "fgsm-1-clip"}
    watched = [json.loads(line) for line in (tmp_path / "fgsm-1.25-noclip" / "metrics.jsonl").read_text().splitlines()]
    assert len(watched) == 1 and {"val_nat_acc", "val_adv_acc", "val_fgsm_acc"} <= set(watched[0])
    assert "val_adv_acc" not in (tmp_path / "at" / "metrics.jsonl").read_text()
    saved = json.loads((tmp_path / "fgsm-1.25-noclip" / "config.json").read_text())
    assert saved["method"]["attack"]["clip_start"] is False and saved["model"]["name"] == "wong_mnist"
    table = (tmp_path / "results.md").read_text()
    assert "anchor: Wong et al.'s released model, full MNIST" in table and "98.50" in table
    assert set(document["guard"]) == {"fgsm-1.25-noclip", "fgsm-1.25-clip", "fgsm-1-noclip", "fgsm-1-clip"}
    logged = document["guard"]["fgsm-1-clip"]["8"]
    assert logged["last"] == round(100 * watched_row(tmp_path / "fgsm-1-clip")["val_adv_acc"], 1)
    assert logged["test"] == document["per_seed"]["fgsm-1-clip"]["8"]["PGD-50x10"], "no AutoAttack: the PGD column"
    assert "## The overfitting guard's log" in table and "| fgsm_rs step 0.3, clipped start | 8 | " in table


def watched_row(run) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def test_the_guard_row_reads_a_collapse_from_the_metrics():
    rows = [
        {"epoch": 1, "val_adv_acc": 0.30, "val_fgsm_acc": 0.40},
        {"epoch": 2, "val_adv_acc": 0.55, "val_fgsm_acc": 0.60},
        {"epoch": 3, "val_adv_acc": 0.05, "val_fgsm_acc": 0.90, "overfit": "catastrophic"},
        {"epoch": 4, "val_adv_acc": 0.02, "val_fgsm_acc": 0.95},
    ]
    assert guard_row(rows) == {
        "warned_epoch": 3,
        "warned": "catastrophic",
        "best": 55.0,
        "best_epoch": 2,
        "last": 2.0,
        "last_fgsm": 95.0,
        "epochs": 4,
    }
    assert guard_row(rows[:2])["warned"] is None and guard_row([{"epoch": 1, "loss": 2.3}]) is None
