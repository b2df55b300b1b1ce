"""The research studies as registered experiments: each end to end at tiny settings (reusing another study's runs,
its own summary, a rerun that reuses everything), their configs against table2's, and the paper's configs as the
planning resolved them before runs could carry their own training attack."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from aelf.core.attacks import FGSMRS, NFGSM
from aelf.core.config import make_config, to_dict
from aelf.core.data.families import CIFAR, MNIST
from aelf.core.errors import ConfigError
from aelf.workflows.reproduction import reuse
from aelf.workflows.reproduction.experiment import EXPERIMENTS, Experiment, Run, register_experiment
from aelf.workflows.reproduction.paper_experiments import PAPER_EXPERIMENTS
from aelf.workflows.reproduction.reproduce import default_out, plan, reproduce, scaled_attack
from aelf.workflows.reproduction.studies import STUDIES, bn_gap
from test_ablation import check_ablation

TINY = [
    "data.train_limit=32",
    "data.test_limit=10",
    "train.epochs=1",
    "train.batch_size=16",
    "train.lr_milestones=[]",
    "model.width=0.0625",
]


def old_configs(name: str, preset: str, out: str) -> dict:
    """The paper experiment's configs as ``plan`` resolved them before a run could set its own training attack."""
    experiment = EXPERIMENTS[name]
    chosen = experiment.presets[preset]
    dataset = chosen.settings["data"]["name"]
    train_attack = scaled_attack(chosen.attack, experiment.dataset, dataset)
    configs = {}
    for run in experiment.runs:
        layers = [chosen.settings]
        if run.method == "st":
            layers.append(chosen.st_settings)
        layers.append(run.settings)
        if run.method != "st":
            layers.append({"method": {"attack": train_attack}})
        layers.append({"method": chosen.method_settings.get(run.method, {})})
        layers.append({"data": {"name": dataset}})
        layers.append({"train": {"device": "auto"}})
        if run.init:
            layers.append({"train": {"init": str(Path(out) / run.init)}})
        configs[run.key] = make_config(*layers)
    return configs


@pytest.mark.parametrize(
    "name,preset", [(e.name, preset) for e in PAPER_EXPERIMENTS for preset in e.presets], ids=lambda v: str(v)
)
def test_every_paper_experiment_resolves_the_configs_it_always_did(name, preset):
    assert plan(name, preset, "OUT").configs == old_configs(name, preset, "OUT")


def test_the_studies_train_table2s_runs_and_only_the_attack_differs():
    for preset in ("quick", "medium"):
        table2 = plan("table2", preset, "a").configs
        fast = plan("fast-at", preset, "b").configs
        gap = plan("bn-gap", preset, "c").configs
        for ours, theirs in (("st", "st"), ("at-pgd", "at"), ("aelfs-pgd", "aelfs")):
            assert reuse.comparable(fast[ours]) == reuse.comparable(table2[theirs]), (preset, ours)
        for key in ("st", "at", "jt", "aelfs"):
            assert reuse.comparable(gap[key]) == reuse.comparable(table2[key]), (preset, key)
        assert gap["at-bn"] == gap["at"], "a variant evaluates its run's model"
        for method in ("at", "aelfs"):
            pgd = to_dict(fast[f"{method}-pgd"])
            for attack, cls in (("fgsm_rs", FGSMRS), ("n_fgsm", NFGSM)):
                config = fast[f"{method}-{attack}"]
                assert config.method.attack == cls(eps=0.3), "the training attack at the preset's eps"
                assert {**to_dict(config), "method": None} == {**pgd, "method": None}, "nothing else differs"
    methods, quick = plan("fast-at-methods", "quick", "d").configs, plan("table2", "quick", "e").configs
    for method in ("at", "jt", "aelfs"):
        assert reuse.comparable(methods[f"{method}-pgd"]) == reuse.comparable(quick[method]), method
        pgd = to_dict(methods[f"{method}-pgd"])
        for attack, cls in (("fgsm_rs", FGSMRS), ("n_fgsm", NFGSM)):
            config = methods[f"{method}-{attack}"]
            assert config.method.attack == cls(eps=0.3, clip_start=False), "the anchor's unclipped start"
            assert {**to_dict(config), "method": None} == {**pgd, "method": None}, "nothing else differs"
    assert methods["at-fgsm_rs-clip"].method.attack == FGSMRS(eps=0.3)
    for method in ("at", "jt", "aelfs"):
        train_mode = methods[f"{method}-fgsm_rs-train"]
        assert train_mode.method == replace(methods[f"{method}-fgsm_rs"].method, attack_mode="train")
        assert train_mode.train == methods[f"{method}-fgsm_rs"].train
    adam = methods["at-fgsm_rs-adam"]
    assert (adam.train.optimizer, adam.train.schedule, adam.train.lr) == ("adam", "cyclic", 5e-3)
    assert default_out("fast-at", "medium") == Path("studies/fast-at-medium")
    assert default_out("table2", "quick") == Path("runs/reproduce/table2-quick")


def test_a_runs_own_attack_is_rescaled_with_the_dataset_and_gets_the_presets_eps():
    experiment = EXPERIMENTS["fast-at"]
    run = next(r for r in experiment.runs if r.key == "at-fgsm_rs")
    own = scaled_attack({"name": "fgsm_rs", "eps": 0.3}, "mnist", "cifar10")
    assert own == {"name": "fgsm_rs", "eps": round(0.3 * CIFAR.attack.eps / MNIST.attack.eps, 4)}
    assert run.settings["method"]["attack"] == {"name": "fgsm_rs"}


def test_bad_study_definitions_are_refused():
    runs = (Run("at", "AT", {"method": {"name": "at"}}),)
    preset = EXPERIMENTS["table2"].presets["quick"]
    with pytest.raises(ConfigError, match="must be a trained run listed before it"):
        register_experiment(
            Experiment("x1", "x", "robust", "mnist", (Run("v", "v", {}, of="nope"), *runs), {"q": preset}, {}, "")
        )
    with pytest.raises(ConfigError, match="no evaluation variant"):
        register_experiment(
            Experiment(
                "x2", "x", "robust", "mnist", (*runs, Run("v", "v", {}, of="at", evaluation="z")), {"q": preset}, {}, ""
            )
        )
    assert "x1" not in EXPERIMENTS and "x2" not in EXPERIMENTS


def test_batchnorm_statistics_are_recomputed_from_attacked_images_and_weights_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10)).eval()
    model(torch.rand(2, 1, 8, 8))
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k}
    shifted = lambda _model, xb, _yb: xb + 1.0  # noqa: E731  (an "attack" whose effect on the statistics is known)
    bn_gap.recompute_statistics(model, x, y, shifted, batch_size=16)
    norm = model[1]
    with torch.no_grad():
        expected = model[0](x + 1.0).mean(dim=(0, 2, 3))
    assert torch.allclose(norm.running_mean, expected, atol=1e-5) and norm.momentum == 0.1
    assert not norm.training, "the model's mode is restored"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    with pytest.raises(ConfigError, match="no BatchNorm"):
        bn_gap.recompute_statistics(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval(), x, y, shifted, 16)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """table2 at tiny settings in the repository layout (``studies/table2-quick``), which the studies reuse."""
    root = tmp_path_factory.mktemp("repo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        reproduce(
            "table2",
            "quick",
            "studies/table2-quick",
            overrides=TINY,
            progress=False,
            log=quiet,
            autoattack=False,
            seeds=[3],
        )
    return root


def quiet(*_args) -> None:
    """A log function that prints nothing."""


# fast-at-anchor reuses no table2 run and has presets of its own: tests/test_fast_at_anchor.py runs it end to end.
@pytest.mark.parametrize("experiment", [s for s in STUDIES if "quick" in s.presets], ids=lambda e: e.name)
def test_each_study_runs_end_to_end_reusing_table2s_runs(studies, monkeypatch, experiment):
    monkeypatch.chdir(studies)
    if experiment.name == "fast-at-methods":  # its first folder absent here: the runs come from the next one
        donors = {"quick": ("studies/absent", "studies/table2-quick")}
        monkeypatch.setitem(EXPERIMENTS, experiment.name, replace(experiment, reuse_runs_from=donors))
    messages: list[str] = []
    document = reproduce(
        experiment.name, "quick", overrides=TINY, progress=False, log=messages.append, autoattack=False, seeds=[3]
    )
    out = studies / experiment.folders["quick"]
    assert json.loads((out / "results.json").read_text())["experiment"] == experiment.name
    copied = {m.split(":")[0] for m in messages if "copying the finished run" in m}
    trained = {m.split(":")[0] for m in messages if ": training " in m}
    expected = {
        "fast-at": {"st", "at-pgd", "aelfs-pgd"},
        "fast-at-methods": {"st", "at-pgd", "jt-pgd", "aelfs-pgd"},
    }.get(experiment.name, {"st", "at", "jt", "aelfs"})
    assert copied == expected and not copied & trained
    assert list(document["measured"]) == [run.key for run in experiment.runs]
    assert document["recorded_seconds"]["train_s"] > 0 and document["machine"]["cores"] >= 1
    again = reproduce(experiment.name, "quick", overrides=TINY, progress=False, log=quiet, autoattack=False, seeds=[3])
    assert again["recorded_seconds"] == document["recorded_seconds"], "a cached rerun keeps the recorded times"
    assert again["measured"] == document["measured"]
    markdown = (out / "results.md").read_text()
    if experiment.name == "fast-at":
        verdicts = document["fast_at"]["verdicts"]
        assert set(verdicts) == {"at", "aelfs"} and document["fast_at"]["verdict_column"] == "PGD"
        assert set(document["comparisons"]["at-fgsm_rs"]) == {"natural", "PGD", "FGSM"}
        assert document["baselines"]["aelfs-n_fgsm"] == "aelfs-pgd"
        assert all(0 < row["step_minutes"]["mean"] for row in document["fast_at"]["variants"].values())
        assert (
            "**AT: is a single-step variant of AT within 2 points" in markdown
            and "AELFs n_fgsm vs AELFs pgd" in markdown
        )
        assert (out / "fast-at.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif experiment.name == "fast-at-methods":
        found = document["fast_at"]
        assert set(found["verdicts"]) == {"at", "jt", "aelfs"}
        assert set(found["verdicts"]["at"]["variants"]) == {
            "at-fgsm_rs",
            "at-n_fgsm",
            "at-fgsm_rs-clip",
            "at-fgsm_rs-train",
            "at-fgsm_rs-adam",
        }
        assert set(found["verdicts"]["aelfs"]["variants"]) == {"aelfs-fgsm_rs", "aelfs-n_fgsm", "aelfs-fgsm_rs-train"}
        assert document["baselines"]["jt-n_fgsm"] == "jt-pgd" and document["baselines"]["at-fgsm_rs-adam"] == "at-pgd"
        assert (
            found["variants"]["at-fgsm_rs-adam"]["attack"]
            == "fgsm_rs, unclipped start, adam optimizer, cyclic schedule"
        )
        assert "| JT | n_fgsm, unclipped start |" in markdown
    elif experiment.name == "ablation":
        check_ablation(out / "seed-3", document, markdown)
    else:
        assert document["baselines"]["jt-bn"] == "jt" and set(document["bn_gap"]) == {"at", "jt", "aelfs"}
        assert (studies / "studies/bn-gap-quick/seed-3/at/reproduce-eval-adversarial_bn.json").is_file()
        assert "## Adversarial BatchNorm statistics minus as trained" in markdown


def test_studies_readme_gives_each_study_its_one_command():
    readme = (Path(__file__).parents[1] / "studies" / "README.md").read_text()
    for experiment in STUDIES:
        for preset, folder in experiment.folders.items():
            if (Path(__file__).parents[1] / folder).is_dir():  # a study measured here
                flag = "" if preset == "quick" else f" --preset {preset}"
                assert f"`aelf reproduce {experiment.name}{flag} --seeds" in readme, (experiment.name, preset)
                assert f"| `{Path(folder).name}/` |" in readme


def test_a_study_may_copy_runs_from_several_folders_searched_in_order():
    preset = EXPERIMENTS["table2"].presets["quick"]
    runs = (Run("at", "AT", {"method": {"name": "at"}}),)
    several = Experiment("x", "x", "robust", "mnist", runs, {"q": preset}, {}, "", reuse_runs_from={"q": ("a", "b")})
    one = replace(several, reuse_runs_from={"q": "a"})
    assert several.donor_folders("q") == ("a", "b") and one.donor_folders("q") == ("a",)
    assert several.donor_folders("other") == ()
