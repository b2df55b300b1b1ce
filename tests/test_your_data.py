"""Issue 16: your own data through the CLI and the API (files the tests write), the best weights on every command
that evaluates a run, attacks from elsewhere in a suite, the model card command and validation curves in the report."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import aelf
from aelf.apps.cli import main
from aelf.core.attacks.external import ExternalAttackError
from aelf.core.config import load_config, make_config
from aelf.core.data.files import data_sha256, load_files
from aelf.core.errors import CheckpointError, ConfigError, DataError
from aelf.core.run import load_dataset, load_model, read_config
from aelf.core.train import train
from aelf.workflows.evaluation import masking
from aelf.workflows.evaluation.robustness import evaluate_model, evaluate_run_suite

SMALL = [
    "--set",
    "model.width=0.125",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.lr_milestones=[]",
    "--set",
    "eval.batch_size=50",
    "--set",
    "eval.attack.n_steps=2",
    "--set",
    "eval.attack.step_size=0.02",
]


def colour_images(n_per_class: int = 40, classes: int = 3, size: int = 32, seed: int = 0):
    """uint8 (N, size, size, 3) images whose class is the bright channel (learnable in an epoch), labels 0..K-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_per_class * classes) % classes
    x = (rng.random((len(y), size, size, 3)) * 90).astype(np.uint8)
    for k in range(classes):
        x[y == k, :, :, k] += 140
    return x, y


def write_npz(path: Path, **arrays) -> Path:
    if not arrays:
        x, y = colour_images()
        arrays = {"x": x, "y": y}
    np.savez(path, **arrays)
    return path


def one_line_error(capsys, phrase: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and err.startswith("aelf: error:"), err
    assert phrase in err, err
    return err


# ----------------------------------------------------------------------------------------------------------------------
# Settings


def test_files_settings_are_checked_when_the_config_loads():
    config = load_config(overrides=["data.name=files", "data.root=my.npz"])
    assert config.data.test_fraction == 0.2 and config.data.split_seed == 0 and config.data.family is None
    assert config.eval.attack.eps == pytest.approx(0.031), "a user's files default to the CIFAR family's attack"
    digits = load_config(overrides=["data.name=files", "data.root=my.npz", "data.family=mnist"])
    assert digits.eval.attack.eps == pytest.approx(0.3)
    for overrides, phrase in [
        (["data.name=files"], "data.root"),
        (["data.name=files", "data.root=a.npz", "data.test_fraction=1"], "test_fraction"),
        (["data.name=files", "data.root=a.npz", "data.family=svhn"], "data.family"),
        (["data.name=files", "data.root=a.npz", "data.layout=chw"], "data.layout"),
        (["data.name=files", "data.root=a.npz", "data.image_size=0"], "image_size"),
        (["data.split_seed=3"], "applies to your own files"),
        (["data.family=mnist"], "applies to your own files"),
    ]:
        with pytest.raises(ConfigError, match=phrase):
            load_config(overrides=overrides)


# ----------------------------------------------------------------------------------------------------------------------
# The whole CLI on a file the test writes


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    """``aelf train --data my.npz``: AT (2-step attack) with robust validation, 2 epochs, CNNb width 0.125."""
    root = tmp_path_factory.mktemp("yourdata")
    data = write_npz(root / "my.npz")
    run = root / "run"
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--method",
            "at",
            "--epochs",
            "2",
            "--out",
            str(run),
            "--no-progress",
            *SMALL,
            "--set",
            "method.attack.n_steps=2",
            "--set",
            "method.attack.step_size=0.02",
            "--set",
            "train.val_size=15",
            "--set",
            "data.test_fraction=0.25",
        ]
    )
    assert code == 0
    return data, run


def test_train_records_the_file_its_sha256_and_the_split(npz_run):
    data, run = npz_run
    config = read_config(run)
    assert config.data.name == "files" and config.data.root == str(data.resolve())
    record = json.loads((run / "meta.json").read_text())["data"]
    assert record["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest() == data_sha256(data)
    assert record["source"] == str(data.resolve()) and record["split"] == "stratified"
    assert record["n_train"] == 90 and record["n_test"] == 30 and record["image_shape"] == [3, 32, 32]
    assert record["classes"] == ["0", "1", "2"] and record["test_fraction"] == 0.25 and record["seed"] == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_adv_acc" in row for row in rows) and (run / "best.safetensors").is_file()


def test_the_run_reopens_the_same_split(npz_run):
    data, run = npz_run
    expected = load_files(data, test_fraction=0.25, seed=0)
    x, y = load_dataset(run, "test")
    assert torch.equal(x, expected.x_test) and torch.equal(y, expected.y_test)
    x_train, _ = aelf.load_dataset(run, "train")
    assert torch.equal(x_train, expected.x_train)
    model = load_model(run, weights="best")
    assert model(x[:2]).shape == (2, 3)


def test_eval_attention_check_curves_card_and_report_on_the_run(npz_run, tmp_path, capsys, monkeypatch):
    _, run = npz_run
    # aelf check's attacks with fewer steps and queries: this test is about the run's data, not the checks
    monkeypatch.setattr(masking, "check_model", functools.partial(masking.check_model, n_steps=4, n_queries=50))
    assert main(["eval", str(run), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"natural", "adversarial"} and 0 <= result["natural"]["N"] <= 100
    assert json.loads((run / "eval.json").read_text())["weights"] == "last"
    assert main(["eval", str(run), "--weights", "best", "--json", "--no-progress"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert json.loads((run / "eval-best.json").read_text())["weights"] == "best", "beside eval.json, not over it"
    assert main(["eval", str(run), "--suite", "quick", "--n-examples", "12", "--weights", "best", "--json"]) == 0
    suite = json.loads((run / "eval-suite-quick-best.json").read_text())
    assert suite["weights"] == "best" and suite["n_examples"] == 12
    assert main(["check", str(run), "--n-examples", "6", "--json"]) == 0
    assert json.loads((run / "check.json").read_text())["weights"] == "last"
    assert (
        main(
            [
                "curves",
                str(run),
                "--eps",
                "0,0.031",
                "--steps",
                "1,2",
                "--n-examples",
                "10",
                "--out",
                str(tmp_path / "curves"),
                "--weights",
                "best",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "curves" / "curves.json").read_text())["runs"]["run"]["weights"] == "best"
    assert (
        main(
            [
                "attention",
                str(run),
                "--images",
                "0,1",
                "--metrics",
                "--n-examples",
                "8",
                "--out",
                str(tmp_path / "attention"),
                "--weights",
                "best",
            ]
        )
        == 0
    )
    assert (tmp_path / "attention" / "attention.png").is_file()
    assert json.loads((tmp_path / "attention" / "attention-metrics-best.json").read_text())["weights"] == "best"
    assert "(best weights: best.safetensors)" in (run / "attention-metrics-best.md").read_text()
    assert not (run / "attention-metrics.json").exists(), "the best weights' metrics have files of their own"
    capsys.readouterr()

    assert main(["card", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"written: {run / 'MODEL_CARD.md'}"
    card = (run / "MODEL_CARD.md").read_text()
    record = json.loads((run / "meta.json").read_text())["data"]
    assert record["sha256"] in card and "stratified, 0.25 of each class" in card
    assert hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest() in card
    assert hashlib.sha256((run / "best.safetensors").read_bytes()).hexdigest() in card
    assert f"| natural (N) | {result['natural']['N']:.2f} | [" in card, "natural accuracy with its interval"
    assert f"| adversarial (N), best weights | {best['adversarial']['N']:.2f} | [" in card
    assert "worst case of suite quick, best weights" in card
    assert "of which 15 held out for robust validation" in card
    assert "- **Command**: `" in card and "- **Command**: not recorded" not in card, "the command that made the run"
    assert "Madry et al. 2018" in card and "## Configuration" in card

    page = tmp_path / "report.html"
    assert (
        main(["report", str(run), "--out", str(page), "--n-images", "1", "--n-examples", "8", "--weights", "best"]) == 0
    )
    html = page.read_text()
    assert "robust validation accuracy" in html and "best val_adv_acc (best.safetensors)" in html
    assert "With the best weights (best.safetensors; eval-best.json" in html
    assert "saved attention-metrics-best.json" in html


def test_a_changed_data_file_is_refused_when_the_run_is_reopened(tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "1", "--out", str(run), "--no-progress", *SMALL]) == 0
    x, y = colour_images(seed=1)
    write_npz(data, x=x, y=y)
    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress"]) == 2
    one_line_error(capsys, "changed since the run was trained")
    with pytest.raises(DataError, match="changed since the run was trained"):
        train(None, run, resume=True, progress=False)
    data.unlink()
    assert main(["attention", str(run), "--metrics"]) == 2
    one_line_error(capsys, "the run's data are not there any more")


def test_a_moved_data_file_is_read_at_its_new_place_when_its_sha256_is_the_recorded_one(tmp_path, capsys, caplog):
    data = write_npz(tmp_path / "d.npz")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "1", "--out", str(run), "--no-progress", *SMALL]) == 0
    moved = tmp_path / "elsewhere" / "renamed.npz"
    moved.parent.mkdir()
    data.rename(moved)
    capsys.readouterr()
    assert main(["eval", str(run), "--no-progress"]) == 2
    one_line_error(capsys, "aelf eval RUN --data NEW_PATH")
    with caplog.at_level(logging.WARNING):
        assert main(["eval", str(run), "--no-progress", "--json", "--data", str(moved)]) == 0
    assert f"reading {moved}, which has the sha256 the run recorded for {data}" in caplog.text
    assert set(json.loads(capsys.readouterr().out)) == {"natural", "adversarial"}
    assert json.loads((run / "eval.json").read_text())["natural"]["N"] >= 0

    x, y = colour_images(seed=1)
    other = write_npz(tmp_path / "other.npz", x=x, y=y)
    assert main(["eval", str(run), "--no-progress", "--data", str(other)]) == 2
    one_line_error(capsys, "not the run's data")


def labelled(x, y):
    return {"x": x, "y": y}


X, Y = colour_images(20)
BAD_FILES = [
    ({"x": X, "y": Y.astype(np.float32)}, "labels must be integers"),
    ({"x": X, "y": Y[:-1]}, "one label per image"),
    ({"x": X[..., None, None], "y": Y}, "images must be"),
    ({"x": X.astype(np.float32), "y": Y}, "float images must be in [0, 1]"),
    ({"x": X, "y": Y + 1}, "no image has label 0"),
    ({"images": X}, "missing 'labels'"),
    ({"x": X[:, :28, :28], "y": Y}, "data.image_size=32"),  # CNNb takes 32 x 32
]


@pytest.mark.parametrize("arrays,phrase", BAD_FILES, ids=[phrase for _, phrase in BAD_FILES])
def test_malformed_files_exit_2_with_one_line_and_nothing_written(tmp_path, capsys, arrays, phrase):
    data = write_npz(tmp_path / "bad.npz", **arrays)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--no-progress", *SMALL]) == 2
    one_line_error(capsys, phrase)
    assert not out.exists()


def test_unreadable_paths_and_conflicting_flags_exit_2(tmp_path, capsys):
    out = str(tmp_path / "run")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    for args, phrase in [
        (["--data", str(tmp_path / "missing.npz")], "data file not found"),
        (["--data", str(tmp_path / "notes.txt")], "unknown data format"),
        (["--data", str(tmp_path / "broken.npz")], "not a readable .npz file"),
        (["--data", str(tmp_path / "broken.npz"), "--dataset", "mnist5k"], "does not go with --dataset"),
        (["--dataset", "files"], "data.root"),
    ]:
        assert main(["train", "--out", out, "--no-progress", *args]) == 2, args
        one_line_error(capsys, phrase)
    assert not Path(out).exists()


def test_image_size_resizes_images_that_do_not_fit(tmp_path):
    x, y = colour_images(8, size=20)
    data = write_npz(tmp_path / "small.npz", x=x, y=y)
    config = make_config(
        {
            "data": {"name": "files", "root": str(data), "image_size": 32},
            "model": {"width": 0.125},
            "train": {"epochs": 1, "batch_size": 8, "lr_milestones": []},
        }
    )
    run = train(config, tmp_path / "run", progress=False)
    assert json.loads((run / "meta.json").read_text())["data"]["image_shape"] == [3, 32, 32]
    assert load_dataset(run, "test")[0].shape[1:] == (3, 32, 32)


def test_a_given_split_with_class_names_and_a_grey_image_folder(tmp_path):
    x, y = colour_images(12)
    grey = x.max(axis=3)  # (N, H, W): one channel
    data = write_npz(
        tmp_path / "given.npz",
        x_train=grey[:24],
        y_train=y[:24],
        x_test=grey[24:],
        y_test=y[24:],
        classes=np.array(["red", "green", "blue"]),
    )
    config = make_config(
        {
            "data": {"name": "files", "root": str(data), "family": "mnist"},
            "model": {"width": 0.125},
            "train": {"epochs": 1, "batch_size": 8, "lr_milestones": []},
        }
    )
    run = train(config, tmp_path / "run", progress=False)
    record = json.loads((run / "meta.json").read_text())["data"]
    assert record["split"] == "given" and record["classes"] == ["red", "green", "blue"]
    assert record["n_train"] == 24 and record["n_test"] == 12 and record["image_shape"] == [1, 32, 32]
    assert read_config(run).eval.attack.eps == pytest.approx(0.3)
    assert "the file's own train and test split" in aelf.apps.card.model_card(run)

    image_module = pytest.importorskip("PIL.Image")  # a folder of class folders is read with Pillow
    folder = tmp_path / "folder"
    for index, (image, label) in enumerate(zip(x, y, strict=True)):
        (folder / ["red", "green", "blue"][label]).mkdir(parents=True, exist_ok=True)
        image_module.fromarray(image).save(folder / ["red", "green", "blue"][label] / f"{index}.png")
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "frun"),
                "--no-progress",
                *SMALL,
                "--set",
                "train.batch_size=8",
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "frun" / "meta.json").read_text())["data"]
    assert record["classes"] == ["blue", "green", "red"] and record["sha256"] == data_sha256(folder)
    assert main(["eval", str(tmp_path / "frun"), "--json", "--no-progress"]) == 0
    (folder / "red" / "0.png").unlink()  # a removed image changes the folder's sha256
    assert main(["eval", str(tmp_path / "frun"), "--no-progress"]) == 2


# ----------------------------------------------------------------------------------------------------------------------
# Best weights, attacks from elsewhere, help texts


def test_best_weights_need_validation_and_the_help_says_last_is_the_default(tmp_path, capsys, trained_st_run):
    assert main(["eval", str(trained_st_run), "--weights", "best"]) == 2
    one_line_error(capsys, "train.val_size > 0")
    assert main(["reproduce", "table2", "--weights", "best", "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "--weights best")
    assert not (tmp_path / "r").exists()
    for command in ("eval", "reproduce", "attention", "report", "check", "curves"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "last (default" in " ".join(capsys.readouterr().out.split()), command


class SignNoise:
    """torchattacks' convention: bound to a model when built, called as attack(images, labels)."""

    def __init__(self, model, eps):
        self.model, self.eps = model, eps

    def __call__(self, images, labels):
        return (images + self.eps * torch.randn_like(images).sign()).clamp(0, 1)


def test_attacks_from_elsewhere_join_evaluate_model_and_a_runs_suite(npz_run):
    _, run = npz_run
    model = load_model(run)
    x, y = load_dataset(run, "test")
    x, y = x[:8], y[:8]
    eps = read_config(run).eval.attack.eps

    def nothing(model, x, y):  # (model, x, y) -> x_adv
        return x.clone()

    result = evaluate_model(model, x, y, "quick", eps, extra_attacks={"sign": SignNoise(model, eps), "none": nothing})
    assert list(result.correct) == ["clean", "FGSM", "PGD-CE-20", "PGD-margin-20-rs", "sign", "none"]
    assert result.to_dict()["attacks"][-1]["attack"]["convention"] == "model_first"
    suite = evaluate_run_suite(
        run, "quick", n_examples=4, individual=True, extra_attacks={"sign": lambda model: SignNoise(model, eps)}
    )
    assert "sign" in suite.alone and "sign" in (run / "eval-suite-quick.json").read_text()
    with pytest.raises(ConfigError, match="already an attack"):
        evaluate_model(model, x, y, "quick", eps, extra_attacks={"FGSM": nothing})
    with pytest.raises(ExternalAttackError, match="bound to another model"):
        evaluate_model(load_model(run), x[:2], y[:2], "quick", eps, extra_attacks={"sign": SignNoise(model, eps)})


def test_card_of_a_missing_or_unfinished_run_exits_2(tmp_path, capsys):
    assert main(["card", str(tmp_path / "none")]) == 2
    one_line_error(capsys, "not found")
    with pytest.raises(CheckpointError):
        aelf.apps.card.model_card(tmp_path / "none")
