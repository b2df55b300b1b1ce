"""Reusing what exists instead of training it again: the per-seed results of an earlier results file when the run
folders that produced them are gone, and finished runs of another study trained from the same settings.

A repository keeps a study's results file (``OUT/results.json``, every seed's results with per-image outcomes) but
not its run folders. When ``aelf reproduce`` is run again with more seeds, the seeds whose run folders are absent are
taken from that file instead of being trained again, provided the file was written with the same settings: the
experiment, preset and its version, dataset, ``--set`` overrides, test attacks and evaluation (AutoAttack settings,
weights, versions of the attention and per-image measurements). The file is read before anything is trained, so the
document it will be replaced by can never be its own source.

Results files written before the evaluation was recorded in them (``evaluation`` missing) are matched on what they
do hold: the test attacks, and for AutoAttack whether each run has its column and on how many images; its version is
then taken to be the preset's (the only one ``aelf reproduce`` has ever used for a preset).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aelf.core.config import Config, to_dict
from aelf.core.errors import AelfError, CheckpointError
from aelf.core.fileio import json_text, read_json
from aelf.core.run import read_config
from aelf.core.run_folder import CHECKPOINTS, LOCK, REPRODUCE_EVAL, WEIGHTS
from aelf.workflows.reproduction.evidence import AUTOATTACK, n_images
from aelf.workflows.reproduction.experiment import Run

# What a results file must share with this invocation for its per-seed results to be reused.
SETTINGS = ("experiment", "preset", "preset_version", "dataset", "overrides", "test_attacks", "evaluation")
LEGACY_VERSIONS = {"attention": 1, "per_image": 1}  # what files without ``evaluation`` were measured with


def as_json(data) -> object:
    """``data`` as it reads back from a JSON file (tuples become lists, keys strings)."""
    return json.loads(json_text(data))


def previous_per_seed(path: Path, settings: dict, log: Callable[[str], None] = print) -> dict[str, dict[str, dict]]:
    """``{run key: {seed: {"result": ..., "timing": ...}}}`` of the results file at ``path`` when it was written with
    ``settings`` (as :data:`SETTINGS` names them); ``{}`` when it is absent, unreadable or from other settings (said
    in ``log``). ``timing``: the run's recorded seconds (:mod:`aelf.workflows.reproduction.timing`) with the file's
    machine, ``None`` where the file recorded none."""
    if not path.is_file():
        return {}
    try:
        document = read_json(path)
    except CheckpointError:
        log(f"{path}: unreadable, none of its results are reused")
        return {}
    wanted: Any = as_json(settings)
    if not isinstance(document, dict) or not isinstance(document.get("per_seed"), dict):
        return {}
    found: dict[str, Any] = {name: document.get(name, [] if name == "overrides" else None) for name in SETTINGS}
    legacy = "evaluation" not in document
    if legacy:
        found["evaluation"] = wanted["evaluation"]
    differing = [name for name in SETTINGS if found[name] != wanted[name]]
    if legacy and not legacy_evaluation_matches(wanted["evaluation"]):
        differing.append("evaluation")
    if differing:
        log(f"{path}: written with other settings ({', '.join(differing)}), none of its results are reused")
        return {}
    expected_aa = wanted["evaluation"]["autoattack_examples"] if wanted["evaluation"]["autoattack"] else None
    timings: dict[str, Any] = document["timing"] if isinstance(document.get("timing"), dict) else {}
    return {
        key: {
            seed: {"result": result, "timing": recorded_timing(timings, key, seed, document.get("machine"))}
            for seed, result in runs.items()
            if usable(result, legacy, wanted["evaluation"]["autoattack"] is not None, expected_aa)
        }
        for key, runs in document["per_seed"].items()
        if isinstance(runs, dict)
    }


def recorded_timing(timings: dict, key: str, seed: str, machine: object) -> dict | None:
    found = timings.get(key, {}).get(seed) if isinstance(timings.get(key), dict) else None
    if not isinstance(found, dict):
        return None
    return {**found, "machine": found.get("machine", machine)}


def legacy_evaluation_matches(evaluation: dict) -> bool:
    """Whether a file that does not record its evaluation can have been measured like ``evaluation``."""
    return "weights" not in evaluation and all(evaluation.get(k) == v for k, v in LEGACY_VERSIONS.items())


def usable(result: object, legacy: bool, with_autoattack: bool, aa_examples: int | None) -> bool:
    """A result with per-image outcomes; for a legacy file, with the AutoAttack column on as many images as now."""
    if not isinstance(result, dict) or not isinstance(result.get("per_image"), dict):
        return False
    if not legacy:
        return True
    per_image = result["per_image"]
    if AUTOATTACK not in per_image:
        return not with_autoattack
    if not with_autoattack:
        return False
    n = n_images(result)
    return per_image[AUTOATTACK].get("n") == min(aa_examples or n, n)


def reusable(previous: dict[str, dict[str, dict]], seed: int, folder: Path, runs: Sequence[Run]) -> dict[str, dict]:
    """``{run key: {"result", "timing"}}`` of one seed taken from ``previous``: runs whose folder under ``folder`` (a
    run that evaluates another's weights: that run's folder) is absent and whose result the file holds, except those
    a run measured now needs (its ``init``, its ``of``), which must be there as folders. ``runs``: in training
    order. Nothing is taken when any of the seed's run folders is there: a run folder removed among present ones is
    a run to train again, and the file stands in only for a seed none of whose runs are present."""
    if any((folder / (run.of or run.key)).exists() for run in runs):
        return {}
    found = {
        run.key: previous[run.key][str(seed)]
        for run in runs
        if not (folder / (run.of or run.key)).exists() and str(seed) in previous.get(run.key, {})
    }
    for run in reversed(runs):  # what a run needs is listed before it: one pass from the end frees whole chains
        if run.key not in found:
            for needed in (run.init, run.of):
                if needed is not None:
                    found.pop(needed, None)
    return found


def earlier_invocations(path: Path) -> list[dict]:
    """The invocations that produced the results file at ``path``, as its successor records them: the file's own
    earlier invocations, then the file's invocation (its wall time, seeds and machine, ``None`` where it recorded
    none) when it trained or measured a run (``runs_computed``). Used when its successor continues it (reuses its
    results, or the cached evaluations of its seeds' run folders), so that a study's cost stays on record after a rerun
    that did no work, or after its run folders are gone."""
    try:
        document = read_json(path)
    except CheckpointError:
        return []
    if not isinstance(document, dict):
        return []
    found = [entry for entry in document.get("earlier_invocations", []) if isinstance(entry, dict)]
    seconds, computed = document.get("seconds"), document.get("runs_computed", 1)  # files before the count: worked
    if isinstance(seconds, int | float) and seconds > 0 and computed:
        found.append({"seconds": seconds, "seeds": document.get("seeds"), "machine": document.get("machine")})
    return found


# Left out of a run folder copied from another study: its training checkpoints and logs, its lock, and the other
# study's evaluation caches (measured with that study's attacks).
NOT_COPIED = (CHECKPOINTS, "tensorboard", LOCK, f"{Path(REPRODUCE_EVAL).stem}*.json")


def comparable(config: Config) -> dict:
    """A run's resolved config up to where it ran: the device, and the folder of its start (its name kept)."""
    data = to_dict(config)
    init = data["train"]["init"]
    data["train"] = {**data["train"], "init": Path(init).name if init else None, "device": None}
    return data


def copy_finished_run(config: Config, run_dir: Path, donor: Path, log: Callable[[str], None] = print) -> bool:
    """Copy into ``run_dir`` (absent) a finished run of ``donor`` (another study's folder of the same seed) trained
    from the same resolved config (:func:`comparable`); False when there is none."""
    if run_dir.exists() or not donor.is_dir():
        return False
    wanted = comparable(config)
    for candidate in sorted(donor.iterdir()):
        if not (candidate / WEIGHTS).is_file():
            continue
        try:
            found = comparable(read_config(candidate))
        except AelfError:
            continue
        if found == wanted:
            log(f"{run_dir.name}: copying the finished run {candidate} (the same settings) instead of training it")
            shutil.copytree(candidate, run_dir, ignore=shutil.ignore_patterns(*NOT_COPIED))
            return True
    return False
