"""``aelf reproduce ablation``: the runs take AELFs apart as declared, every run is compared with AT and with AELFs.

The study runs end to end at tiny settings in tests/test_studies.py (reusing table2's runs like every study), which
checks its document with :func:`check_ablation`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aelf.apps.cli import main
from aelf.core.checkpoint import read_weights
from aelf.core.config import to_dict
from aelf.core.errors import ConfigError
from aelf.core.run_folder import WEIGHTS
from aelf.workflows.evaluation.per_image import decode_bits
from aelf.workflows.reproduction.evidence import AUTOATTACK, BREADTH_COLUMN
from aelf.workflows.reproduction.experiment import EXPERIMENTS, Experiment, Run, register_experiment
from aelf.workflows.reproduction.paper import SETS
from aelf.workflows.reproduction.reproduce import default_out, plan
from aelf.workflows.reproduction.studies.ablation import PARTS, parts_summary
from test_claims import ablation_doc

TRAINED_FROM_ST = ("jt-init", "aelfs-beta0", "aelfs-head", "aelfs-split", "aelfs-ratio")


def method_of(folder: Path, key: str) -> dict:
    return json.loads((folder / key / "config.json").read_text())["method"]


def check_ablation(folder: Path, document: dict, markdown: str) -> None:
    """What a finished ablation (one seed, run folders in ``folder``) must hold: each run differs from AELFs or JT in
    the one part it names, and every run is compared with AT and with AELFs, the comparisons being the paired
    differences of the per-image outcomes."""
    aelfs, jt = method_of(folder, "aelfs"), method_of(folder, "jt")
    assert aelfs | {"beta": 0.0} == method_of(folder, "aelfs-beta0")
    assert aelfs | {"freeze_head": False} == method_of(folder, "aelfs-head")
    assert aelfs | {"bn": "split"} == method_of(folder, "aelfs-split")
    assert aelfs | {"lambda_nat": 0.3, "lambda_adv": 0.7} == method_of(folder, "aelfs-ratio")
    assert jt | {"bn": "split"} == method_of(folder, "jt-split")
    assert method_of(folder, "jt-init") == jt
    for key in TRAINED_FROM_ST:  # the folder may be relative to the current one, like the studies' defaults
        init = json.loads((folder / key / "config.json").read_text())["train"]["init"]
        assert Path(init).resolve() == (folder / "st").resolve(), key
    st_head = read_weights(folder / "st" / WEIGHTS)["head.weight"].numpy()
    for key, frozen in (("aelfs", True), ("aelfs-beta0", True), ("aelfs-head", False), ("jt-init", False)):
        assert np.array_equal(read_weights(folder / key / WEIGHTS)["head.weight"].numpy(), st_head) == frozen, key
    split = read_weights(folder / "aelfs-split" / WEIGHTS)
    assert any(".natural." in k for k in split) and any(".adversarial." in k for k in split)

    keys = list(document["measured"])
    for key, row in document["measured"].items():
        assert all(0.0 <= row[part][s] <= 100.0 for part in ("natural", "adversarial") for s in SETS), key
    assert set(document["comparisons"]) == set(keys) - {"st", "at"}
    against_aelfs = document["comparisons_with"]["aelfs"]
    assert set(document["comparisons_with"]) == {"aelfs"} and set(against_aelfs) == set(keys) - {"st", "aelfs"}
    assert {"nat N", "adv N", "nat N(U)", "nat N(D)", BREADTH_COLUMN} <= set(against_aelfs["at"])
    seed = str(document["seeds"][0])  # one seed: a paired difference is the difference of the means over images
    for key, column, path in (("jt-split", "adv N", ("adversarial", "N")), ("at", "nat N(U)", ("natural", "N(U)"))):
        ours, theirs = (document["per_seed"][k][seed]["per_image"][path[0]][path[1]] for k in (key, "aelfs"))
        by_hand = 100 * (decode_bits(ours).mean() - decode_bits(theirs).mean())
        assert against_aelfs[key][column]["difference"] == pytest.approx(by_hand, abs=1e-3)
    ours, theirs = (document["per_seed"][k][seed]["per_image"]["attention"]["mass_90"] for k in ("aelfs-head", "at"))
    by_hand = float(np.mean(ours) - np.mean(theirs))
    assert document["comparisons"]["aelfs-head"][BREADTH_COLUMN]["difference"] == pytest.approx(by_hand, abs=1e-3)
    assert "| run vs AT |" in markdown and "| run vs AELFs |" in markdown
    assert [(part, row["without"], row["with"]) for part, row in document["parts"].items()] == list(PARTS)
    for part, without, with_part in PARTS:  # each part: the run without it minus the run with it
        ours, theirs = (document["per_seed"][k][seed]["per_image"]["adversarial"]["N"] for k in (without, with_part))
        by_hand = 100 * (decode_bits(ours).mean() - decode_bits(theirs).mean())
        assert document["parts"][part]["columns"]["adv N"]["difference"] == pytest.approx(by_hand, abs=1e-3), part
        assert f"| {part}: {document['labels'][without]} minus {document['labels'][with_part]} |" in markdown


def test_the_ablation_is_table2s_runs_plus_one_variant_per_part_at_the_medium_settings(tmp_path, capsys):
    medium, table2 = plan("ablation", "medium", tmp_path), plan("table2", "medium", tmp_path)
    for key in ("st", "at", "jt", "aelfs"):  # the same configs: table2's finished runs are copied, not trained
        assert to_dict(medium.configs[key]) == to_dict(table2.configs[key]), key
    assert medium.autoattack_examples == 200 and medium.configs["aelfs-split"].model.width == 0.5
    assert {key: config.method.beta for key, config in medium.configs.items() if key.startswith("aelfs")} == {
        "aelfs": 0.05,
        "aelfs-beta0": 0.0,
        "aelfs-head": 0.05,
        "aelfs-split": 0.05,
        "aelfs-ratio": 0.05,
    }
    assert default_out("ablation", "medium") == Path("studies/ablation-medium")
    assert main(["reproduce", "ablation", "--preset", "medium", "--print-config", "aelfs-split", "--seeds", "12"]) == 0
    printed = capsys.readouterr().out
    assert "bn: split" in printed and "freeze_head: true" in printed and "seed: 12" in printed


def test_an_extra_baseline_must_be_one_of_the_runs():
    experiment = EXPERIMENTS["ablation"]
    with pytest.raises(ConfigError, match="extra baseline 'jt-star' is not one of its runs"):
        register_experiment(
            Experiment(
                "x3",
                "x",
                "shift",
                "mnist",
                (Run("at", "AT", {"method": {"name": "at"}}),),
                experiment.presets,
                {},
                "",
                extra_baselines=("jt-star",),
            )
        )
    assert "x3" not in EXPERIMENTS


def test_each_part_is_the_run_without_it_minus_the_run_with_it():
    robust = dict.fromkeys(("st", "at", "jt", "aelfs", "jt-init", "aelfs-head", "jt-split", "aelfs-split"), 0.6)
    document = ablation_doc(robust | {"aelfs-beta0": 0.9, "aelfs-ratio": 0.6})  # planted: the penalty costs 30 points
    entries, markdown = parts_summary(document, {}, Path("unused"))
    parts = entries["parts"]
    assert list(parts) == [part for part, _, _ in PARTS]
    for label in ("adv N", f"{AUTOATTACK} N"):
        assert 25 < parts["the penalty (head frozen)"]["columns"][label]["difference"] < 35, label
        assert -35 < parts["the frozen head (without the penalty)"]["columns"][label]["difference"] < -25, label
        assert abs(parts["the penalty (head trained)"]["columns"][label]["difference"]) < 5, label
    assert "| the penalty (head frozen): AELFS-BETA0 minus AELFS | " in markdown
    assert parts_summary({**document, "per_seed": {"at": document["per_seed"]["at"]}}, {}, Path("unused")) == ({}, "")
