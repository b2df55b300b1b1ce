"""`aelf reproduce` reuses the per-seed results of OUT/results.json for seeds whose run folders are gone."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from aelf.workflows.reproduction import reuse
from aelf.workflows.reproduction.experiment import Run
from aelf.workflows.reproduction.reproduce import plan, reproduce, results_settings

TINY = ["data.train_limit=32", "data.test_limit=10", "train.epochs=1", "train.batch_size=16", "train.lr_milestones=[]"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    """fig3 (ST and AT) at tiny settings, seed 3, its run folders then removed: what a repository keeps."""
    out = tmp_path_factory.mktemp("reuse")
    document = reproduce(
        "fig3", "quick", out, overrides=TINY, progress=False, log=lambda *_: None, autoattack=False, seeds=[3]
    )
    shutil.rmtree(out / "seed-3")
    return out, document


def test_results_of_seeds_without_run_folders_are_reused_from_the_results_file(study):
    out, first = study
    assert first["evaluation"]["autoattack"] is None and first["overrides"] == TINY
    messages: list[str] = []
    second = reproduce(
        "fig3", "quick", out, overrides=TINY, progress=False, log=messages.append, autoattack=False, seeds=[3]
    )
    for key in ("st", "at"):
        assert second["per_seed"][key]["3"] == first["per_seed"][key]["3"], key
        assert any(m.startswith(f"{key}: reusing seed 3's results from") for m in messages), key
    assert not any((out / "seed-3").iterdir()), "nothing trained again"
    assert second["measured"] == first["measured"] and second["comparisons"] == first["comparisons"]
    # the time each run took when it was trained and evaluated is kept, with the machine it was recorded on
    timing = first["timing"]["at"]["3"]
    assert timing["train_s"] > 0 and timing["eval_s"] > 0 and timing["epochs"] == 1 and timing["steps"] == 2
    assert second["timing"]["at"]["3"] == {**timing, "machine": first["machine"]}
    assert second["recorded_seconds"] == first["recorded_seconds"] and first["recorded_seconds"]["train_s"] > 0
    assert (
        first["machine"]["cores"] >= 1
        and "recorded over all runs and seeds: training" in (out / "results.md").read_text()
    )


def settings(overrides=TINY, autoattack=False, weights="last") -> dict:
    the_plan = plan("fig3", "quick", "x", overrides=overrides)
    return results_settings(the_plan if autoattack else replace(the_plan, autoattack=None), overrides, weights)


def test_only_results_of_the_same_settings_are_reused(study, tmp_path):
    out, _ = study
    path = out / "results.json"
    logged: list[str] = []
    assert set(reuse.previous_per_seed(path, settings(), logged.append)) == {"st", "at"}
    assert reuse.previous_per_seed(path, settings(weights="best"), logged.append) == {}
    assert logged[-1].endswith("written with other settings (evaluation), none of its results are reused")
    assert reuse.previous_per_seed(path, settings(overrides=[*TINY, "train.lr=0.05"]), logged.append) == {}
    assert "(overrides)" in logged[-1]
    assert reuse.previous_per_seed(tmp_path / "none.json", settings(), logged.append) == {}

    # A file from before the evaluation was recorded: matched on its test attacks and its AutoAttack column.
    legacy = json.loads(path.read_text())
    del legacy["evaluation"], legacy["overrides"]
    old = tmp_path / "results.json"
    old.write_text(json.dumps({**legacy, "overrides": TINY}))
    assert set(reuse.previous_per_seed(old, settings(), logged.append)["at"]) == {"3"}
    assert reuse.previous_per_seed(old, settings(autoattack=True), logged.append)["at"] == {}, "no AutoAttack column"
    old.write_text(json.dumps(legacy))  # no overrides recorded: the preset's own settings
    assert reuse.previous_per_seed(old, settings(), logged.append) == {}


def test_a_run_measured_now_keeps_what_it_needs_out_of_the_reused_results(tmp_path):
    runs = (
        Run("st", "ST", {}),
        Run("mid", "mid", {}, init="st"),
        Run("aelfs", "AELFs", {}, init="mid"),
        Run("at", "AT", {}),
        Run("at-bn", "AT, a variant", {}, of="at", evaluation="v"),
    )
    previous = {run.key: {"3": {"result": {}, "timing": None}} for run in runs}
    assert set(reuse.reusable(previous, 3, tmp_path, runs)) == {run.key for run in runs}
    del previous["aelfs"]["3"]  # aelfs is trained now: its start and its start's start must be there as folders
    assert set(reuse.reusable(previous, 3, tmp_path, runs)) == {"at", "at-bn"}
    del previous["at-bn"]["3"]  # the variant is measured now: it needs AT's weights
    assert reuse.reusable(previous, 3, tmp_path, runs) == {}
    assert reuse.reusable(previous, 4, tmp_path, runs) == {}
    previous["at-bn"]["3"] = {"result": {}, "timing": None}
    (tmp_path / "at").mkdir()  # a run folder that exists is trained or resumed, never replaced by the file
    assert reuse.reusable(previous, 3, tmp_path, runs) == {}
    # ... and a run folder removed beside present ones is trained again (st is in the file, but at is here)
    previous["aelfs"]["3"] = {"result": {}, "timing": None}
    assert "st" not in reuse.reusable(previous, 3, tmp_path, runs)


def test_a_rerun_from_the_file_keeps_the_wall_time_of_the_invocation_that_did_the_work(study):
    out, first = study
    assert first["seconds"] > 0 and "earlier_invocations" not in first, "nothing was reused the first time"
    second = reproduce(
        "fig3", "quick", out, overrides=TINY, progress=False, log=lambda *_: None, autoattack=False, seeds=[3]
    )
    assert second["earlier_invocations"][-1] == {
        "seconds": first["seconds"],
        "seeds": [3],
        "machine": first["machine"],
    }
    third = reproduce(
        "fig3", "quick", out, overrides=TINY, progress=False, log=lambda *_: None, autoattack=False, seeds=[3]
    )
    # a rerun that only reused results keeps the first one; its own fraction of a second is not recorded
    assert third["earlier_invocations"] == second["earlier_invocations"]
    assert "an earlier invocation of these results (seeds 3)" in (out / "results.md").read_text()


def test_a_rerun_from_cached_evaluations_keeps_the_wall_time_of_the_first(tmp_path):
    def run(seeds: list[int]) -> dict:
        return reproduce(
            "fig3",
            "quick",
            tmp_path,
            overrides=TINY,
            progress=False,
            log=lambda *_: None,
            autoattack=False,
            seeds=seeds,
        )

    first = run([3])
    assert first["runs_computed"] == 2 and first["seconds"] > 0  # ST and AT trained and measured
    again = run([3])  # every run folder and evaluation cache present: no work done, the first's time kept
    assert again["runs_computed"] == 0
    assert again["earlier_invocations"] == [{"seconds": first["seconds"], "seeds": [3], "machine": first["machine"]}]
    assert run([3])["earlier_invocations"] == again["earlier_invocations"], "a rerun that did no work adds no line"
    assert "earlier_invocations" not in run([4]), "a file of other seeds is not this one's history"
