"""Issue 28, item 1: optimizers (sgd, adam, adamw) and schedules (multistep, cosine, cyclic, warm-up), resumable
bit for bit, with the paper's recipe unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aelf.core.checkpoint import latest_checkpoint, read_state, read_weights
from aelf.core.config import TrainConfig, make_config
from aelf.core.errors import ConfigError
from aelf.core.methods import ST
from aelf.core.optim import lr_factor, make_optimizer, make_scheduler, per_iteration, step_lr
from aelf.core.run_folder import WEIGHTS
from aelf.workflows.reproduction.experiment import EXPERIMENTS
from aelf.workflows.reproduction.reproduce import plan
from aelf.workflows.reproduction.studies import STUDIES

from conftest import TINY, stopped_run, tiny_config, trainer


def recipe(**train) -> TrainConfig:
    return make_config({"train": train}).train


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"optimizer": "rmsprop"}, "train.optimizer must be one of sgd, adam, adamw"),
        ({"schedule": "step"}, "train.schedule must be one of multistep, cosine, cyclic"),
        ({"optimizer": "adam", "momentum": 0.5}, "train.momentum is SGD's"),
        ({"peak_epoch": 3}, "train.peak_epoch applies to schedule cyclic"),
        ({"schedule": "cyclic", "epochs": 10, "peak_epoch": 10}, "strictly between 0 and train.epochs 10"),
        ({"warmup_epochs": 60}, "train.warmup_epochs must be between 0 and train.epochs 50"),
    ],
)
def test_bad_recipes_are_refused_naming_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        recipe(**settings)


def test_the_defaults_are_the_papers_sgd_and_per_epoch_multistep():
    tc = TrainConfig()
    optimizer = make_optimizer(ST(), torch.nn.Linear(2, 2), tc)
    scheduler = make_scheduler(optimizer, tc, steps_per_epoch=10)
    assert type(optimizer) is torch.optim.SGD and not per_iteration(tc)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    assert type(scheduler) is torch.optim.lr_scheduler.MultiStepLR


def test_every_paper_experiment_keeps_sgd_and_its_multistep_schedule():
    """Every preset of every paper experiment resolves to the recipe it had before these options existed."""
    seen = 0
    for name, experiment in EXPERIMENTS.items():
        if experiment in STUDIES:
            continue
        for preset in experiment.presets:
            for config in plan(name, preset, "unused").configs.values():
                tc = config.train
                assert (tc.optimizer, tc.schedule, tc.peak_epoch, tc.warmup_epochs) == ("sgd", "multistep", None, 0)
                seen += 1
    assert seen > 100


def test_adam_and_adamw_are_torchs_own_with_the_runs_weight_decay():
    model = torch.nn.Linear(2, 2)
    adam = make_optimizer(ST(), model, recipe(optimizer="adam", weight_decay=0, lr=5e-3))
    adamw = make_optimizer(ST(), model, recipe(optimizer="adamw", weight_decay=0.01))
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 5e-3 and adam.defaults["weight_decay"] == 0
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.01


def test_cyclic_is_wong_et_als_triangle_evaluated_at_the_end_of_each_step():
    tc = recipe(schedule="cyclic", epochs=10, lr=5e-3)  # the peak defaults to 2/5 of the epochs: epoch 4
    n = 40
    ours = [step_lr(tc, n, k) for k in range(10 * n)]
    # locuslab/fast_adversarial MNIST/train_mnist.py: lr_schedule(epoch + (i + 1) / len(loader))
    theirs = [np.interp([e + (i + 1) / n], [0, 10 * 2 // 5, 10], [0, 5e-3, 0])[0] for e in range(10) for i in range(n)]
    assert np.allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert max(ours) == pytest.approx(5e-3) and ours.index(max(ours)) == 4 * n - 1 and ours[-1] == 0


def test_cosine_warmup_and_multistep_factors():
    cosine = lr_factor(recipe(schedule="cosine", epochs=2), 4)
    assert [round(cosine(k), 6) for k in range(8)] == [
        round((1 + np.cos(np.pi * (k + 1) / 8)) / 2, 6) for k in range(8)
    ]
    warm = lr_factor(recipe(schedule="multistep", epochs=4, lr_milestones=[2], warmup_epochs=1), 4)
    assert [warm(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]  # linear from 0, full after one epoch
    assert warm(7) == 1.0 and warm(8) == pytest.approx(0.1)  # then the milestone's x0.1 at epoch 2
    assert per_iteration(recipe(warmup_epochs=0.5)) and per_iteration(recipe(schedule="cosine"))


def test_a_cyclic_adam_run_logs_its_rates_and_saves_both_states_in_the_checkpoint(tmp_path):
    config = tiny_config(
        "st", train={"epochs": 2, "optimizer": "adam", "schedule": "cyclic", "warmup_epochs": 0.5, "weight_decay": 0}
    )
    out = trainer.train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    n = 4  # 256 images, batch 64
    assert [row["lr"] for row in rows] == [step_lr(config.train, n, n - 1), step_lr(config.train, n, 2 * n - 1)]
    assert rows[-1]["lr"] == 0.0  # the cyclic schedule ends at 0
    saved = read_state(latest_checkpoint(out))
    assert saved["scheduler"]["last_epoch"] == 2 * n, "LambdaLR stepped once per iteration"
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(next(iter(saved["optimizer"]["state"].values())))


RECIPES = [
    {"optimizer": "sgd", "schedule": "cosine"},
    {"optimizer": "adam", "schedule": "cyclic", "warmup_epochs": 1, "weight_decay": 0},
    {"optimizer": "adamw", "schedule": "multistep", "lr_milestones": [1], "warmup_epochs": 0.5},
]


def metrics(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in rows]


@pytest.mark.parametrize("train", RECIPES, ids=lambda t: f"{t['optimizer']}-{t['schedule']}")
def test_each_recipe_resumes_bit_for_bit(tmp_path, monkeypatch, train):
    """Stopped mid-epoch (SIGTERM: a checkpoint of that step; a crash: the last periodic one), then resumed: the same
    weights and metrics as the uninterrupted run. AT with fgsm_rs, so the random starts must replay too."""
    config = make_config(
        TINY,
        {"data": {"train_limit": 128, "test_limit": 20}},
        {"method": {"name": "at", "attack": {"name": "fgsm_rs", "eps": 0.3}}},
        {"train": {"epochs": 2, "batch_size": 32, "checkpoint_every": 3, "lr": 0.01, **train}},
    )
    reference = trainer.train(config, tmp_path / "reference", progress=False)
    # 4 steps an epoch: step 5 is the first of epoch 2; after a crash at step 7 the newest checkpoint is step 6
    for how, after_step, newest in (("sigterm", 5, "step-00000005"), ("crash", 7, "step-00000006")):
        out = tmp_path / how
        stopped_run(config, out, monkeypatch, after_step, how)
        assert latest_checkpoint(out).name == newest
        trainer.train(None, out, resume=True, progress=False)
        ours, theirs = read_weights(out / WEIGHTS), read_weights(reference / WEIGHTS)
        assert all(torch.equal(ours[key], theirs[key]) for key in theirs), how
        assert metrics(out) == metrics(reference)
