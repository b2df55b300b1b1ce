"""Reusing the per-seed results of an earlier results file when the run folders that produced them are gone.

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
from collections.abc import Callable, Iterable
from pathlib import Path

from aelf.core.checkpoint import json_text, read_json
from aelf.core.errors import CheckpointError
from aelf.workflows.reproduction.evidence import AUTOATTACK, n_images

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
    wanted = as_json(settings)
    if not isinstance(document, dict) or not isinstance(document.get("per_seed"), dict):
        return {}
    found = {name: document.get(name, [] if name == "overrides" else None) for name in SETTINGS}
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
    timings = document.get("timing") if isinstance(document.get("timing"), dict) else {}
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


def reusable(
    previous: dict[str, dict[str, dict]], seed: int, folder: Path, order: Iterable[str], inits: dict[str, str | None]
) -> dict[str, dict]:
    """``{run key: {"result", "timing"}}`` of one seed taken from ``previous``: runs whose folder under ``folder`` is
    absent and whose result the file holds, except the start (``inits``) of a run that is trained now, which needs
    its weights. ``order``: the run keys in training order."""
    order = list(order)
    found = {
        key: previous[key][str(seed)]
        for key in order
        if not (folder / key).exists() and str(seed) in previous.get(key, {})
    }
    for key in reversed(order):  # a start's start comes earlier: one pass from the end frees the whole chain
        start = inits.get(key)
        if key not in found and start in found:
            del found[start]
    return found


def earlier_invocations(path: Path) -> list[dict]:
    """The invocations that produced the results file at ``path``, as its successor records them: the file's own
    earlier invocations, then the file's invocation (its wall time, seeds and machine, ``None`` where it recorded
    none) when it took any time. Used when some of its results are reused, so that a study's cost stays on record
    after its run folders are gone."""
    try:
        document = read_json(path)
    except CheckpointError:
        return []
    if not isinstance(document, dict):
        return []
    found = [entry for entry in document.get("earlier_invocations", []) if isinstance(entry, dict)]
    seconds = document.get("seconds")
    if isinstance(seconds, int | float) and seconds > 0:
        found.append({"seconds": seconds, "seeds": document.get("seeds"), "machine": document.get("machine")})
    return found
