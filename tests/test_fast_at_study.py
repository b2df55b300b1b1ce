"""bench/fast_at.py, the single-step training study (issue 17): its smoke end to end (the files, the JSON's
structure, verdicts that follow from the numbers), then a second invocation that reuses every run and evaluation, and
a stopped run that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import fast_at

from aelf.core.checkpoint import WEIGHTS
from aelf.workflows.reproduction import reproduce

from conftest import torch_threads

KEYS = [f"{method}-{attack}" for method in ("at", "aelfs") for attack in ("pgd", "fgsm_rs", "n_fgsm")]
COLUMNS = {"natural", "pgd", "fgsm", "autoattack"}


def run_smoke(out: Path) -> dict:
    with torch_threads(1):  # tiny models on a shared 2-core machine: one thread waits on nobody
        assert fast_at.main(["--smoke", "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "fast_at.json").read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fast-at") / "study"
    run_smoke(out)
    return out


def test_the_smoke_writes_the_table_the_json_and_the_figure(smoke):
    document = json.loads((smoke / "fast_at.json").read_text())
    assert document["smoke"] is True and document["seeds"] == [8]
    assert list(document["runs"]["8"]) == ["st", *KEYS]
    for key in KEYS:
        run = document["runs"]["8"][key]
        assert run["epochs"] == 1 and 0 < run["train_minutes"] <= run["wall_minutes"] and run["sessions"] == 1
        # the time axis: the run's 3 steps (192 images in batches of 64) at its step time measured in turns
        assert run["step_seconds"] > 0 and run["step_minutes"] == pytest.approx(3 * run["step_seconds"] / 60, abs=1e-4)
        assert set(run["accuracy"]) == COLUMNS and all(0 <= v <= 100 for v in run["accuracy"].values())
        assert run["per_image"]["natural"]["n"] == 48 and run["per_image"]["autoattack"]["n"] == 16
    assert document["settings"]["train_attack_settings"]["fgsm_rs"] == {"name": "FGSMRS", "eps": 0.3, "step_size": None}
    assert document["settings"]["train_attack_settings"]["n_fgsm"]["noise_scale"] == 2.0
    assert list(document["variants"]) == KEYS
    flops = {key: row["lean_flops_per_image_F"] for key, row in document["variants"].items()}
    assert flops == {
        "at-pgd": 7,
        "at-fgsm_rs": 5,
        "at-n_fgsm": 5,
        "aelfs-pgd": 5,
        "aelfs-fgsm_rs": 4,
        "aelfs-n_fgsm": 4,
    }  # smoke PGD: K = 2
    for row in document["variants"].values():
        for column in COLUMNS:
            assert row[column]["lo"] <= row[column]["mean"] <= row[column]["hi"]
    assert document["verdict_column"] == "autoattack"
    for method in ("at", "aelfs"):
        verdict = document["verdicts"][method]
        assert set(verdict["variants"]) == {"fgsm_rs", "n_fgsm"}
        for check in verdict["variants"].values():
            assert check["lo"] <= check["difference"] <= check["hi"]
            assert check["answer"] == (check["within_margin"] == "shown" and check["time_ratio"] <= 0.25)
        assert verdict["answer"] == ("yes" if any(c["answer"] for c in verdict["variants"].values()) else "no")
    assert "time_ratio_with_st" in document["verdicts"]["aelfs"]["variants"]["fgsm_rs"]
    text = (smoke / "fast_at.md").read_text()
    assert "| method | training attack | min | epoch min | wall min | natural |" in text
    assert "| AT | fgsm_rs |" in text and "| AELFs | n_fgsm |" in text
    assert "**AT: is a single-step variant of AT within 2 points" in text and "**AELFs: " in text
    assert (smoke / "fast_at.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_invocation_reuses_every_run_and_evaluation(smoke, monkeypatch):
    before = json.loads((smoke / "fast_at.json").read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run or a cached evaluation was redone")

    monkeypatch.setattr(reproduce, "train", refuse)
    monkeypatch.setattr(fast_at, "correct_mask", refuse)
    after = run_smoke(smoke)
    assert after["runs"] == before["runs"] and after["verdicts"] == before["verdicts"]


def test_a_stopped_run_resumes_and_its_sessions_add_up(smoke):
    run = smoke / "seed-8" / "at-n_fgsm"
    (run / WEIGHTS).unlink()  # as if stopped after its last checkpoint
    before = json.loads((run / fast_at.TIMING).read_text())
    after = run_smoke(smoke)["runs"]["8"]["at-n_fgsm"]
    assert (run / WEIGHTS).is_file() and after["epochs"] == 1 and after["sessions"] == 2
    assert after["wall_minutes"] * 60 >= before["wall_s"]


@pytest.mark.parametrize("argv", [["--seeds", "8,x"], ["--seeds", "8,8"], ["--aa-images", "0"], ["--preset", "x"]])
def test_bad_arguments_are_one_line_errors(argv, tmp_path, capsys):
    assert fast_at.main(["--smoke", "--out", str(tmp_path / "study"), *argv]) == 2
    assert capsys.readouterr().err.startswith("fast_at: error: ")
    assert not (tmp_path / "study").exists()


def test_the_medium_preset_trains_the_larger_study_runs(tmp_path):
    quick = fast_at.study_configs(8, tmp_path, "cpu", [], smoke=False)
    medium = fast_at.study_configs(8, tmp_path, "cpu", [], smoke=False, preset="medium")
    assert list(medium) == list(quick)
    assert {c.model.width for c in medium.values()} == {0.5} and {c.train.epochs for c in medium.values()} == {10}
    table2 = reproduce.plan("table2", "medium", tmp_path, overrides=["train.seed=8"], device="cpu").configs
    for key, run in (("st", "st"), ("at-pgd", "at"), ("aelfs-pgd", "aelfs")):
        assert medium[key] == table2[run], "the PGD runs are table2's: linkable from its folder"
