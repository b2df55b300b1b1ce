"""The model card (aelf.apps.card): written from a finished run's files, with the real sha256 and measured intervals."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from aelf.apps.card import model_card, write_model_card
from aelf.apps.card_rows import interval
from aelf.apps.cli import main
from aelf.core.checkpoint import record_digests
from aelf.core.errors import CheckpointError
from aelf.core.fileio import write_json
from aelf.core.run_folder import CARD
from aelf.workflows.evaluation.stats import wilson_interval

from conftest import tiny_config

N_TEST = 30


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """ST on 256 mnist5k digits for one epoch, evaluated (eval.json) on 30 test images with a 2-step PGD."""
    from aelf.core.train import train
    from aelf.workflows.evaluation.evaluate import evaluate_run

    out = tmp_path_factory.mktemp("card") / "st"
    config = tiny_config("st", data={"test_limit": N_TEST}, eval={"attack": {"n_steps": 2, "step_size": 0.15}})
    train(config, out, progress=False)
    evaluate_run(out, device="cpu")
    return out


@pytest.fixture
def run(evaluated_run, tmp_path):
    """A copy of the evaluated run that a test may change."""
    return shutil.copytree(evaluated_run, tmp_path / "run")


def row_with_interval(label: str, accuracy: float, n: int) -> str:
    lo, hi = wilson_interval(round(accuracy * n / 100), n)
    return f"| {label} | {accuracy:.2f} | [{100 * lo:.2f}, {100 * hi:.2f}] | {n} |"


def test_card_of_an_evaluated_run(evaluated_run):
    card = model_card(evaluated_run)
    weights = (evaluated_run / "model.safetensors").read_bytes()
    assert f"| model.safetensors | `{hashlib.sha256(weights).hexdigest()}` | {len(weights):,} |" in card
    assert "- **Method**: `st`, standard training (ST)" in card
    assert "Attention-based Interpretation and Response to The Trade-Off of Adversarial Training" in card
    result = json.loads((evaluated_run / "eval.json").read_text())
    assert row_with_interval("natural (N)", result["natural"]["N"], N_TEST) in card
    assert row_with_interval("adversarial (N)", result["adversarial"]["N"], N_TEST) in card
    assert "| PGD l-inf eps 0.3, 2 steps of 0.15 | eval.json |" in card
    assert "| AutoAttack | not measured |" in card
    assert "Not measured: AutoAttack accuracy, gradient-masking checks (aelf check)." in card
    assert "- **Test images**: 30 (the first 30 of 1,000)." in card
    assert "- **Train images**: 256 (the first 256 of 4,000)." in card
    meta = json.loads((evaluated_run / "meta.json").read_text())
    assert f"- **git revision**: {meta['git_revision'] or 'not recorded'}" in card
    assert "- **Command**: `" in card
    assert 'data: name="mnist5k" root=null train_limit=256 test_limit=30' in card
    assert "- **Epochs**: 1 of 1" in card


def test_write_model_card_next_to_the_weights(run):
    path = write_model_card(run)
    assert path == run / CARD and path.read_text() == model_card(run)


def test_suites_reproduce_results_and_recorded_data(run):
    (run / "eval.json").unlink()
    write_json(
        run / "reproduce-eval.json",
        {
            "key": {
                "test_attacks": {"A*(5)": {"eps": 0.031, "n_steps": 5, "step_size": 0.01}},
                "autoattack": {"eps": 0.031, "version": "quick"},
                "autoattack_examples": 20,
            },
            "result": {"natural": 40.0, "A*(5)": 20.0, "AutoAttack": 15.0},
        },
    )
    write_json(
        run / "eval-suite-standard.json",
        {
            "suite": "standard",
            "eps": 0.3,
            "n_examples": 25,
            "individual": True,
            "clean": 60.0,
            "worst_case": 12.0,
            "attacks": [
                {"name": "PGD-CE-20", "accuracy": 32.0, "after": 32.0, "attack": {"name": "PGD", "eps": 0.3}},
                {
                    "name": "AutoAttack-quick",
                    "accuracy": 16.0,
                    "after": 12.0,
                    "attack": {"name": "AutoAttack", "eps": 0.3, "version": "quick"},
                },
            ],
        },
    )
    meta = json.loads((run / "meta.json").read_text())
    meta["data"] = {
        "source": "mine.npz",
        "split": "stratified",
        "seed": 3,
        "test_fraction": 0.25,
        "n_train": 90,
        "n_test": 30,
        "image_shape": [1, 32, 32],
        "classes": ["cat", "dog"],
    }
    write_json(run / "meta.json", meta)
    card = model_card(run)
    assert row_with_interval("natural", 40.0, 30) in card
    assert row_with_interval("A*(5)", 20.0, 30) in card
    assert row_with_interval("AutoAttack", 15.0, 20) in card
    assert row_with_interval("natural (suite standard)", 60.0, 25) in card
    assert row_with_interval("PGD-CE-20 alone (suite standard)", 32.0, 25) in card
    assert row_with_interval("AutoAttack-quick alone (suite standard)", 16.0, 25) in card
    assert row_with_interval("worst case of suite standard (PGD-CE-20, AutoAttack-quick)", 12.0, 25) in card
    assert "not measured |" not in card and "Not measured: gradient-masking checks (aelf check)." in card
    assert "- **Split**: stratified, 0.25 of each class for testing, drawn with seed 3." in card
    assert "- **Classes** (2): cat, dog." in card and "- **Test images**: 30." in card


def test_nothing_measured(run):
    for name in ("eval.json", "metrics.jsonl"):
        (run / name).unlink()
    card = model_card(run)
    for kind in ("natural", "PGD", "AutoAttack"):
        assert f"| {kind} | not measured |" in card
    assert "Not measured: natural accuracy, PGD accuracy, AutoAttack accuracy" in card
    assert "- **Epochs**: not recorded (no metrics.jsonl); configured: 1." in card


def test_best_weights_are_listed_too(run):
    shutil.copy(run / "model.safetensors", run / "best.safetensors")
    record_digests(run, {"best.safetensors": hashlib.sha256((run / "best.safetensors").read_bytes()).hexdigest()})
    card = model_card(run)
    digest = hashlib.sha256((run / "best.safetensors").read_bytes()).hexdigest()
    assert card.index("| model.safetensors |") < card.index(f"| best.safetensors | `{digest}` |")


def test_not_a_finished_run(run, tmp_path):
    with pytest.raises(CheckpointError, match="run folder not found"):
        model_card(tmp_path / "nowhere")
    (run / "model.safetensors").rename(run / "elsewhere.bin")
    with pytest.raises(CheckpointError, match="training has not finished"):
        model_card(run)
    (run / "elsewhere.bin").rename(run / "model.safetensors")
    (run / "best.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(CheckpointError, match="best.safetensors: not listed in "):
        model_card(run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not a readable JSON file"):
        model_card(run)
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not an aelf run configuration"):
        model_card(run)


def test_the_last_epochs_numbers_are_rounded_like_the_training_lines(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[-1] |= {"lr": 0.1 * 0.1, "loss": 0.123456789}  # a decayed lr is 0.010000000000000002 in floats
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    card = model_card(run)
    assert "- **Last epoch**: step 4, lr 0.01, loss 0.123457," in card and "0.010000000000000002" not in card


def test_damaged_or_mismatched_weights_get_no_card(run, capsys):
    """The card once stated the sha256 of damaged weights, and the width of an edited config.json, with exit 0."""
    weights = run / "model.safetensors"
    good = weights.read_bytes()
    damaged = bytearray(good)
    damaged[-5] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    assert main(["card", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.safetensors: damaged" in err and not (run / CARD).exists()

    weights.write_bytes(good)
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] = 0.25  # the weights are of width 0.125
    (run / "config.json").write_text(json.dumps(config))
    assert main(["card", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights do not fit this model" in err and not (run / CARD).exists()


def test_interval_needs_a_consistent_image_count():
    lo, hi = wilson_interval(3, 30)
    assert interval(10.0, 30) == f"[{100 * lo:.2f}, {100 * hi:.2f}]"
    assert interval(10.0, None) == "-"
    assert interval(12.34, 30) == "-"  # no count of 30 images gives 12.34%
    assert interval(100.0, 7) == f"[{100 * wilson_interval(7, 7)[0]:.2f}, 100.00]"
