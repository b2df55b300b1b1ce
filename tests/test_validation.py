"""Issue 16 (second point) and 17's guard: robust validation while training, the best weights, the overfitting guard."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from aelf.apps.cli import main
from aelf.core.accuracy import count_correct
from aelf.core.attacks import FGSM, FGSMRS, PGD
from aelf.core.best import weights_file
from aelf.core.checkpoint import latest_checkpoint, read_weights
from aelf.core.config import load_config, make_config
from aelf.core.errors import CheckpointError, ConfigError
from aelf.core.models import CNNb
from aelf.core.run import load_dataset, load_model, read_config
from aelf.core.run_folder import BEST, BEST_INFO, WEIGHTS
from aelf.core.validation import (
    is_best,
    is_validation_epoch,
    overfit_event,
    overfit_message,
    stratified_split,
    validate,
    validation_attacks,
    validation_seed,
)

from conftest import TINY, stopped_run, trainer

VAL_KEYS = ("val_nat_acc", "val_adv_acc", "val_fgsm_acc")


def fast_config(**train):
    """AT with fgsm_rs on 192 mnist5k digits, 64 of them held out (4 steps of 32 an epoch); a 2-step eval attack with
    a random start (so that validation needs random numbers)."""
    return make_config(
        TINY,
        {
            "data": {"train_limit": 192, "test_limit": 50},
            "method": {"name": "at", "attack": {"name": "fgsm_rs"}},
            "eval": {"attack": {"n_steps": 2, "step_size": 0.15, "random_start": True}},
            "train": {"epochs": 2, "batch_size": 32, "val_size": 64, **train},
        },
    )


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in history]


# ----------------------------------------------------------------------------------------------------------------------
# The held-out slice


def test_the_split_is_stratified_disjoint_and_fixed_by_the_seed():
    y = torch.cat([torch.full((500,), 0), torch.full((300,), 1), torch.full((200,), 2)])[torch.randperm(1000)]
    train_index, val_index = stratified_split(y, 100, seed=8)
    assert len(val_index) == 100 and len(train_index) == 900
    assert torch.equal(torch.cat([train_index, val_index]).sort().values, torch.arange(1000))
    assert torch.equal(val_index, val_index.sort().values) and torch.equal(train_index, train_index.sort().values)
    assert torch.bincount(y[val_index]).tolist() == [50, 30, 20]
    assert torch.equal(stratified_split(y, 100, seed=8)[1], val_index)
    assert not torch.equal(stratified_split(y, 100, seed=9)[1], val_index)
    odd = stratified_split(y, 9, seed=8)[1]  # 4.5, 2.7, 1.8: the largest remainders take the two odd ones
    assert torch.bincount(y[odd], minlength=3).tolist() == [4, 3, 2]


@pytest.mark.parametrize("size", [0, 1000, 1200])
def test_a_split_that_leaves_nothing_is_refused(size):
    with pytest.raises(ConfigError, match="train.val_size"):
        stratified_split(torch.arange(1000) % 10, size, seed=0)


def test_fewer_validation_steps_keep_the_attacks_reach():
    attack, fgsm = validation_attacks(PGD(eps=0.3, n_steps=16, step_size=0.02, random_start=True), 4)
    assert (attack.n_steps, attack.step_size, attack.eps, attack.random_start) == (4, pytest.approx(0.08), 0.3, True)
    assert fgsm == FGSM(eps=0.3)
    same, _ = validation_attacks(PGD(eps=0.3, n_steps=16, step_size=0.02))
    assert same == PGD(eps=0.3, n_steps=16, step_size=0.02)


def test_validation_epochs():
    assert [e for e in range(1, 11) if is_validation_epoch(e, 3, 10)] == [3, 6, 9, 10]
    assert [e for e in range(1, 4) if is_validation_epoch(e, 1, 3)] == [1, 2, 3]


def test_validation_counts_like_evaluation_and_leaves_the_rng_alone():
    torch.manual_seed(0)
    model = CNNb(width=0.125)
    x, y = torch.rand(40, 1, 32, 32), torch.arange(40) % 10
    attacks = validation_attacks(PGD(eps=0.3, n_steps=2, step_size=0.15, random_start=True))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = validate(model, x, y, attacks, seed=5, batch_size=16)
    assert torch.equal(torch.get_rng_state(), before), "the training stream is not consumed"
    assert first == validate(model, x, y, attacks, seed=5, batch_size=16)
    assert set(first) == set(VAL_KEYS) and all(0.0 <= v <= 1.0 for v in first.values())
    assert first["val_nat_acc"] == round(count_correct(model, x, y) / 40, 6)
    assert first["val_fgsm_acc"] == round(count_correct(model, x, y, FGSM(eps=0.3)) / 40, 6)
    torch.manual_seed(5)
    assert first["val_adv_acc"] == round(count_correct(model, x, y, attacks[0], 16) / 40, 6)


# ----------------------------------------------------------------------------------------------------------------------
# The guard on planted sequences


def history(*values: tuple[float, float] | None) -> list[dict]:
    """Metrics rows from (robust, FGSM) validation accuracies per epoch; None: an epoch without validation."""
    out = []
    for epoch, value in enumerate(values, 1):
        row = {"epoch": epoch, "loss": 1.0}
        if value is not None:
            row |= {"val_nat_acc": 0.9, "val_adv_acc": value[0], "val_fgsm_acc": value[1]}
        out.append(row)
    return out


def events(rows: list[dict], drop: float = 0.2) -> list[tuple[int, str]]:
    """(epoch, kind) of every event the guard raises as the rows arrive one by one."""
    found = []
    for end in range(1, len(rows) + 1):
        kind = overfit_event(rows[:end], drop)
        if kind:
            found.append((rows[end - 1]["epoch"], kind))
    return found


def test_the_guard_is_silent_on_a_healthy_run():
    healthy = history((0.30, 0.50), (0.45, 0.60), (0.42, 0.62), None, (0.55, 0.70), (0.40, 0.66), (0.58, 0.72))
    assert events(healthy) == []
    assert events(history((0.60, 0.6), (0.40, 0.7))) == [], "a drop of exactly overfit_drop does not count"


def test_the_guard_fires_once_on_a_catastrophic_collapse_and_again_after_a_recovery():
    planted = history(
        (0.40, 0.50), (0.55, 0.60), (0.08, 0.85), (0.02, 0.95), None, (0.01, 0.97), (0.50, 0.6), (0.10, 0.9)
    )
    assert events(planted) == [(3, "catastrophic"), (8, "catastrophic")]
    message = overfit_message("catastrophic", planted[:3])
    assert "catastrophic overfitting" in message and "epoch 2" in message and "55.0%" in message and "8.0%" in message


def test_a_slow_robust_decline_is_robust_overfitting():
    planted = history((0.50, 0.60), (0.52, 0.62), (0.40, 0.55), (0.30, 0.45))
    assert events(planted) == [(4, "robust")]
    assert events(planted, drop=0.3) == []


def test_the_best_row_is_the_first_strictly_highest():
    assert is_best(history((0.3, 0.5)))
    assert is_best(history((0.3, 0.5), (0.4, 0.5)))
    assert not is_best(history((0.4, 0.5), (0.4, 0.5))), "a tie keeps the earlier epoch"
    assert not is_best(history((0.3, 0.5), None)), "an epoch without validation is never the best"


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.val_size=-1", "val_size must be >= 0"),
        ("train.eval_every=0", "eval_every must be at least 1"),
        ("train.val_attack_steps=0", "val_attack_steps must be at least 1"),
        ("train.overfit_drop=20", "overfit_drop must be in"),
        ("train.stop_on_overfit=true", "needs robust validation"),
        ("train.val_holdout=false", "val_holdout: false says where"),
    ],
)
def test_bad_validation_settings_are_rejected(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


# ----------------------------------------------------------------------------------------------------------------------
# Training with validation


def train_watching_inputs(config, out: Path) -> list:
    """Train ``config`` into ``out``; the training images of every epoch, as the trainer's batches received them."""
    seen = []
    original = trainer.train_batches

    def spy(x, y, *args):
        seen.append(x.detach().cpu().clone())
        return original(x, y, *args)

    trainer.train_batches = spy
    try:
        trainer.train(config, out, progress=False)
    finally:
        trainer.train_batches = original
    return seen


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory) -> tuple[Path, list]:
    """A finished fgsm_rs run with validation, and the training images it actually trained on."""
    out = tmp_path_factory.mktemp("validated") / "run"
    return out, train_watching_inputs(fast_config(), out)


def test_the_run_folder_reads_back_its_single_step_attack(validated_run):
    run, _ = validated_run
    config = read_config(run)
    assert config == fast_config() and isinstance(config.method.attack, FGSMRS)
    assert json.loads((run / "config.json").read_text())["method"]["attack"] == {
        "name": "fgsm_rs",
        "eps": 0.3,
        "step_size": None,
        "clip_start": True,
        "step_scale": None,
    }


def test_every_epoch_logs_validation_to_metrics_and_tensorboard(validated_run):
    run, _ = validated_run
    for row in rows(run):
        assert all(0.0 <= row[key] <= 1.0 for key in VAL_KEYS)
        assert "overfit" not in row
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events_ = EventAccumulator(str(run / "tensorboard")).Reload()
    for key in VAL_KEYS:
        assert [event.step for event in events_.Scalars(key)] == [1, 2]


def test_the_held_out_images_come_from_the_training_data_and_are_never_trained_on(validated_run):
    run, seen = validated_run
    config = read_config(run)
    x_all, y_all = load_dataset(run, "train")
    _, val_index = stratified_split(y_all, config.train.val_size, config.train.seed)
    trained = seen[0]
    assert len(trained) == len(x_all) - config.train.val_size
    flat_trained = {tuple(img.flatten().tolist()) for img in trained}
    flat_val = [tuple(img.flatten().tolist()) for img in x_all[val_index]]
    assert not any(img in flat_trained for img in flat_val)


def test_the_best_weights_are_those_of_the_best_validated_epoch(validated_run):
    run, _ = validated_run
    history_ = rows(run)
    best_epoch = max(history_, key=lambda row: row["val_adv_acc"])["epoch"]  # max keeps the first of equals
    info = json.loads((run / BEST_INFO).read_text())
    assert info["epoch"] == best_epoch and info["val_adv_acc"] == history_[best_epoch - 1]["val_adv_acc"]
    step = history_[best_epoch - 1]["step"]
    at_that_epoch = read_weights(run / "checkpoints" / f"step-{step:08d}" / WEIGHTS)
    best = read_weights(run / BEST)
    assert all(torch.equal(best[key], at_that_epoch[key]) for key in best)
    assert weights_file(run, "best") == run / BEST and weights_file(run) == run / WEIGHTS
    loaded = load_model(run, weights="best")
    assert all(torch.equal(loaded.state_dict()[key], best[key]) for key in best)


def test_without_validation_nothing_changes_and_there_is_no_best(trained_st_run):
    assert all(not any(key in row for key in VAL_KEYS) for row in rows(trained_st_run))
    assert not (trained_st_run / BEST).exists()
    with pytest.raises(CheckpointError, match="train.val_size > 0"):
        load_model(trained_st_run, weights="best")
    with pytest.raises(ConfigError, match="last, best"):
        weights_file(trained_st_run, "newest")


def test_validating_on_training_images_watches_the_run_without_changing_it(tmp_path):
    """train.val_holdout: false (Wong et al.'s early stop checks a training batch): every image is trained on, the
    validation rows are logged, and the weights are bit-identical to the same run without validation."""
    seen = train_watching_inputs(fast_config(val_holdout=False), tmp_path / "watched")
    trainer.train(fast_config(val_size=0), tmp_path / "plain", progress=False)
    assert len(seen[0]) == 192, "the validation slice stays in the training data"
    assert all(all(key in row for key in VAL_KEYS) for row in rows(tmp_path / "watched"))
    assert (tmp_path / "watched" / BEST).is_file()
    watched, plain = read_weights(tmp_path / "watched" / WEIGHTS), read_weights(tmp_path / "plain" / WEIGHTS)
    assert all(torch.equal(watched[key], plain[key]) for key in plain)
    trained = [{k: v for k, v in row.items() if k not in VAL_KEYS} for row in rows(tmp_path / "watched")]
    assert without_times(trained) == without_times(rows(tmp_path / "plain"))
    assert main(["card", str(tmp_path / "watched")]) == 0
    card = (tmp_path / "watched" / "MODEL_CARD.md").read_text()
    assert "all trained on; 64 of them also validated on (train.val_holdout: false)" in card
    assert "training images it was also trained on" in card and "held out" not in card


def test_a_validation_slice_larger_than_the_data_fails_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="train.val_size"):
        trainer.train(fast_config(val_size=256), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def planted_validation(sequence):
    """A stand-in for aelf.core.validation.validate returning (robust, FGSM) accuracies from ``sequence`` in turn."""
    calls = iter(sequence)

    def fake(*args, **kwargs):
        adv, fgsm = next(calls)
        return {"val_nat_acc": 0.9, "val_adv_acc": adv, "val_fgsm_acc": fgsm}

    return fake


COLLAPSE = [(0.6, 0.6), (0.05, 0.95), (0.03, 0.97), (0.02, 0.98)]


def test_a_forced_collapse_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setattr(trainer, "validate", planted_validation(COLLAPSE))
    with caplog.at_level(logging.WARNING, logger="aelf.core.train"):
        trainer.train(fast_config(epochs=4), tmp_path / "run", progress=False)
    progress = capsys.readouterr().out.splitlines()
    assert "val_adv_acc 0.05" in progress[1] and "overfit catastrophic" in progress[1], "the epoch's progress line"
    warnings = [r.getMessage() for r in caplog.records if r.name == "aelf.core.train"]
    assert len(warnings) == 1 and "catastrophic overfitting" in warnings[0] and "epoch 2" in warnings[0]
    assert [row.get("overfit") for row in rows(tmp_path / "run")] == [None, "catastrophic", None, None]
    assert json.loads((tmp_path / "run" / BEST_INFO).read_text())["epoch"] == 1


def test_stop_on_overfit_ends_training_cleanly_and_stays_ended(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(trainer, "validate", planted_validation(COLLAPSE))
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="aelf.core.train"):
        trainer.train(fast_config(epochs=4, stop_on_overfit=True), run, progress=False)
    assert "training stops" in caplog.records[-1].getMessage()
    assert [row["epoch"] for row in rows(run)] == [1, 2] and rows(run)[-1]["overfit"] == "catastrophic"
    assert (run / WEIGHTS).is_file() and (run / BEST).is_file() and latest_checkpoint(run) is not None
    assert json.loads((run / BEST_INFO).read_text())["epoch"] == 1
    last = read_weights(run / WEIGHTS)
    trainer.train(None, run, resume=True, progress=False)  # nothing left to do: no third epoch
    assert [row["epoch"] for row in rows(run)] == [1, 2]
    assert all(torch.equal(value, read_weights(run / WEIGHTS)[key]) for key, value in last.items())


def test_an_interrupted_run_with_validation_resumes_exactly(tmp_path, monkeypatch):
    config = fast_config(checkpoint_every=3)  # 4 steps an epoch
    reference = trainer.train(config, tmp_path / "reference", progress=False)
    # step 3 of epoch 2; the newest checkpoint before it is step 6, mid-epoch 2
    stopped_run(config, tmp_path / "run", monkeypatch, 7, "sigterm")
    assert len(rows(tmp_path / "run")) == 1
    trainer.train(None, tmp_path / "run", resume=True, progress=False)
    run = tmp_path / "run"
    assert without_times(rows(run)) == without_times(rows(reference))
    for name in (WEIGHTS, BEST):
        ours, theirs = read_weights(run / name), read_weights(reference / name)
        assert all(torch.equal(ours[key], theirs[key]) for key in theirs), name
    assert (run / BEST_INFO).read_text() == (reference / BEST_INFO).read_text()


def test_torchrun_ranks_validate_their_shares_and_agree_with_one_process(tmp_path):
    from test_distributed import torchrun

    out = tmp_path / "run"
    done = torchrun(
        "-m",
        "aelf",
        "train",
        "--out",
        str(out),
        "--method",
        "at",
        "--epochs",
        "2",
        "--no-progress",
        "--set",
        "data.train_limit=160",
        "--set",
        "data.test_limit=40",
        "--set",
        "model.width=0.125",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.lr_milestones=[]",
        "--set",
        "train.device=cpu",
        "--set",
        "method.attack.name=n_fgsm",
        "--set",
        "train.val_size=32",
        "--set",
        "eval.attack.n_steps=2",
        "--set",
        "eval.attack.step_size=0.15",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = rows(out)[-1]
    config = read_config(out)
    x, y = load_dataset(out, "train")
    _, val_index = stratified_split(y, 32, config.train.seed)
    attacks = validation_attacks(config.eval.attack)
    alone = validate(load_model(out), x[val_index], y[val_index], attacks, validation_seed(config.train.seed, 2))
    for key in VAL_KEYS:  # the same counts, up to one image flipped by another batch size's float rounding
        assert abs(alone[key] - last[key]) <= 1 / 32 + 1e-9, key
    assert (out / BEST).is_file()
