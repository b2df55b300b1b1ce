"""`aelf reproduce`: every experiment's quick preset end to end on tiny data, reuse, resume, bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from aelf.apps.cli import main
from aelf.core.run_folder import WEIGHTS
from aelf.workflows.evaluation.per_image import decode_bits
from aelf.workflows.reproduction.paper import SETS
from aelf.workflows.reproduction.paper_experiments import PAPER_EXPERIMENTS
from aelf.workflows.reproduction.plots import scale_text
from aelf.workflows.reproduction.reproduce import EXPERIMENTS, plan, reproduce

# A handful of steps per run: 32 images in batches of 16, one epoch; 10 test images.
TINY = ["data.train_limit=32", "data.test_limit=10", "train.epochs=1", "train.batch_size=16", "train.lr_milestones=[]"]


def quiet(*_args) -> None:
    """A log function that prints nothing."""


@pytest.mark.parametrize("name", [experiment.name for experiment in PAPER_EXPERIMENTS])
def test_quick_preset_runs_end_to_end(tmp_path, name):  # the studies': tests/test_studies.py
    experiment = EXPERIMENTS[name]
    with_autoattack = name in ("fig1", "fig3")  # one experiment of each kind; AutoAttack costs the most
    document = reproduce(name, "quick", tmp_path, overrides=TINY, progress=False, log=quiet, autoattack=with_autoattack)
    assert list(document["measured"]) == [run.key for run in experiment.runs]
    for key, row in document["measured"].items():
        assert (tmp_path / key / WEIGHTS).is_file()
        values = (
            [row[part][s] for part in ("natural", "adversarial") for s in SETS]
            if experiment.kind == "shift"
            else [row["natural"], *(row[label] for label in document["test_attacks"])]
        )
        assert all(0.0 <= v <= 100.0 for v in values)
    markdown = (tmp_path / "results.md").read_text()
    if with_autoattack:
        assert all(0.0 <= row["AutoAttack"] <= 100.0 for row in document["measured"].values())
        assert "AutoAttack: the authors' pyautoattack, version quick" in markdown, "the table shows AutoAttack too"
        assert "AutoAttack" in markdown.split("|---")[0], "as a column"
        # how much the paper's PGD overstates robustness, from the per-image outcomes on the same images
        for key, gap in document["autoattack_gaps"].items():
            row = document["per_seed"][key][str(document["seeds"][0])]["per_image"]
            aa = decode_bits(row["AutoAttack"])
            path = ("adversarial", "N") if experiment.kind == "shift" else (next(iter(document["test_attacks"])),)
            pgd = decode_bits(row[path[0]][path[1]] if len(path) == 2 else row[path[0]])[: len(aa)]
            assert gap["difference"] == pytest.approx(100 * (pgd.mean() - aa.mean()), abs=1e-3)
        assert set(document["autoattack_gaps"]) == set(document["measured"]) - {"st"}
        assert "minus AutoAttack accuracy on the same first" in markdown
    assert json.loads((tmp_path / "results.json").read_text())["experiment"] == name
    assert "preset quick" in markdown and "not measured" in markdown
    if document["paper"]:
        assert f"({experiment.paper_label})" in markdown, "the paper's numbers are labelled as the paper's"
    if experiment.figure:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if experiment.kind == "shift":  # the MNIST experiments measure attention breadth next to accuracy
        assert "## Attention breadth (measured)" in markdown
        for key, row in document["measured"].items():
            assert 0.0 < row["attention"]["mass_90"]["mean"] <= 1.0, key


def test_finished_runs_are_reused_and_stopped_ones_resumed(tmp_path):
    first = reproduce("fig3", "quick", tmp_path, overrides=TINY, progress=False, log=quiet, autoattack=False)
    (tmp_path / "at" / WEIGHTS).unlink()  # AT looks stopped after its last checkpoint
    messages: list[str] = []
    second = reproduce("fig3", "quick", tmp_path, overrides=TINY, progress=False, log=messages.append, autoattack=False)
    assert any(m.startswith("st: reusing") for m in messages)
    assert any(m.startswith("at: resuming") for m in messages)
    assert second["measured"] == first["measured"]


def test_dataset_swap_and_rescaled_attacks_are_announced(tmp_path):
    the_plan = plan("table3", "quick", tmp_path)
    assert any("rescaled" in note for note in the_plan.notes)
    assert the_plan.test_attacks["A*(5)"].eps == pytest.approx(0.3)
    assert (the_plan.autoattack.version, the_plan.autoattack.eps, the_plan.autoattack_examples) == ("quick", 0.3, 200)
    paper_plan = plan("table3", "paper", tmp_path)
    assert (paper_plan.autoattack.version, paper_plan.autoattack_examples) == ("standard", None)
    assert paper_plan.autoattack.eps == pytest.approx(0.031)
    assert paper_plan.test_attacks["A*(10)"].eps == pytest.approx(0.031)
    assert paper_plan.configs["at"].train.epochs == 160 and paper_plan.configs["st"].train.epochs == 100
    assert paper_plan.configs["at"].train.weight_decay == pytest.approx(2e-4)
    assert paper_plan.configs["aelfs-0.4-0.6"].method.lambda_nat == pytest.approx(0.4)
    assert paper_plan.configs["aelfs-0.4-0.6"].train.init == str(tmp_path / "st")
    mnist = plan("table2", "paper", tmp_path)
    assert mnist.configs["aelfs"].method.beta == pytest.approx(0.5)
    assert (mnist.configs["at"].method.attack.n_steps, mnist.configs["at"].train.lr_milestones) == (16, (20, 40))
    medium = plan("table2", "medium", tmp_path)
    assert (medium.configs["at"].model.width, medium.configs["at"].train.epochs) == (0.5, 10)
    assert (medium.autoattack.version, medium.autoattack_examples) == ("quick", 500)
    fashion = plan("table2", "fashion", tmp_path)
    assert fashion.dataset == "fashion-mnist" and fashion.configs["at"].data.train_limit is None
    assert fashion.configs["at"].data.test_limit == 2000 and fashion.configs["at"].train.epochs == 2
    assert fashion.configs["at"].method.attack.eps == pytest.approx(0.1)
    assert fashion.autoattack.eps == pytest.approx(0.1)
    assert fashion.test_attacks["A*"].eps == pytest.approx(0.1) and fashion.configs["at"].eval.attack.eps == 0.1


@pytest.mark.parametrize(
    "args,message",
    [
        (["nope"], "unknown experiment 'nope'"),
        (["table2", "--preset", "slow"], "unknown preset 'slow'"),
        (["table2", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["table2", "--set", "method.beta=1"], "no method.* settings"),
        (["table2", "--preset", "paper"], "needs a folder"),
        (["table3", "--preset", "paper", "--data-root", "/no/such/cifar"], "data folder not found"),
        (["table2", "--set", "train.epochs=0"], "epochs must be at least 1"),
        ([], "needs an experiment NAME"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    argv = ["reproduce", *args] + (["--out", str(out)] if args else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aelf: error:") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_list_shows_every_experiment(capsys):
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in ("fig1", "fig3", "table2", "table3", "table4", "table5", "table6", "fig5"):
        assert listing.count(f"\n{name}: ") + listing.startswith(f"{name}: ") == 1
    assert "--preset paper" in listing and "--preset quick" in listing


def test_demo_writes_the_four_runs_and_the_table(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress", *[a for t in TINY for a in ("--set", t)]]) == 0
    printed = capsys.readouterr().out
    assert "paper, Table 2" in printed and "demo finished in" in printed
    for key in ("st", "at", "jt", "aelfs"):
        assert (out / key / WEIGHTS).is_file()
    table = json.loads((out / "table.json").read_text())
    assert list(table["measured"]) == ["st", "at", "jt", "aelfs"]
    assert table["paper"]["aelfs"]["adversarial"]["N"] == pytest.approx(94.06)
    table_md = (out / "table.md").read_text()
    assert "No AutoAttack column" in table_md, "the demo keeps to its time budget"
    assert "Wilson score interval over the test images" in table_md, "one seed: every accuracy with its interval"
    assert "**AELFs vs AT, adversarial accuracy on N (1 seed, 10 test images):" in table_md
    assert all(table_md.count(f"| {label} (measured) |") == 1 for label in ("ST", "AT", "JT", "AELFs"))
    shutil.rmtree(out / "jt")
    assert main(["demo", "--out", str(out), "--no-progress", *[a for t in TINY for a in ("--set", t)]]) == 0
    assert "jt: training" in capsys.readouterr().out, "only the missing run is trained again"


def test_seeds_give_one_folder_per_seed_means_intervals_and_paired_comparisons(tmp_path, capsys):
    seeds = [3, 4]
    document = reproduce(
        "fig3", "quick", tmp_path, overrides=TINY, progress=False, log=quiet, autoattack=False, seeds=seeds
    )
    assert document["seeds"] == seeds and document["n_test_images"] == 10
    for seed in seeds:
        for key in ("st", "at"):
            config = json.loads((tmp_path / f"seed-{seed}" / key / "config.json").read_text())
            assert config["train"]["seed"] == seed
    at = document["per_seed"]["at"]
    assert list(at) == ["3", "4"]
    natural = [at[s]["natural"]["N"] for s in ("3", "4")]
    assert document["measured"]["at"]["natural"]["N"] == pytest.approx(sum(natural) / 2, abs=1e-3)
    assert "per_image" not in document["measured"]["at"], "the measured rows are numbers only"
    for s in ("3", "4"):  # the per-image outcomes agree with the accuracy they come from
        bits = decode_bits(at[s]["per_image"]["natural"]["N"])
        assert len(bits) == 10 and 100 * bits.mean() == pytest.approx(at[s]["natural"]["N"], abs=0.01)
    markdown = (tmp_path / "results.md").read_text()
    assert "mean of 2 seeds (3, 4)" in markdown and "mean ± std over 2 seeds" in markdown
    assert document["overrides"] == TINY, "the --set settings are kept, not each seed's train.seed"
    assert f"- changed with --set: {', '.join(TINY)}" in markdown
    assert "t-interval over seeds and test images" in markdown
    # fig3 has no AELFs run: no comparison of AELFs with AT, but ST is never compared and nothing else exists.
    assert document["comparisons"] == {}


def test_demo_with_seeds_compares_aelfs_with_at(tmp_path, capsys):
    out = tmp_path / "demo"
    tiny = [a for t in TINY for a in ("--set", t)]
    assert main(["demo", "--out", str(out), "--no-progress", "--seeds", "1,2", *tiny]) == 0
    printed = capsys.readouterr().out
    assert "AELFs vs AT, adversarial accuracy on N (2 seeds, 10 test images)" in printed
    assert "(paired t (seeds + images) interval)" in printed, "the demo's reading names its calibrated interval"
    table = json.loads((out / "table.json").read_text())
    verdict = table["comparisons"]["aelfs"]["adv N"]
    assert verdict["verdict"] in ("better", "worse", "not distinguishable")
    assert verdict["lo"] <= verdict["difference"] <= verdict["hi"]
    assert set(table["comparisons"]) == {"jt", "aelfs"}
    # The claims report reads the same results (the demo's file is table.json: named directly).
    claims = tmp_path / "CLAIMS.md"
    assert main(["claims", str(out / "table.json"), "--out", str(claims)]) == 0
    text = claims.read_text()
    assert f"### table2 --preset quick with {', '.join(TINY)} on mnist5k, seeds 1, 2: **" in text
    assert text.count("**Verdict: not measured here.**") == 4, (
        "claims 6-8 need fig1, table3, fig5; claim 9 the ablation"
    )
    assert main(["claims", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("seeds", ["1,1", "-1", "a"])
def test_bad_seeds_are_one_line(tmp_path, capsys, seeds):
    assert main(["reproduce", "fig3", "--out", str(tmp_path / "x"), "--seeds", seeds]) == 2
    assert "--seeds" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_figures_title_names_the_overrides_that_changed_its_scale():
    """Fig. 5 at --set model.width=1.0 must not be titled as the plain quick preset."""
    document = {"preset": "quick", "dataset": "mnist5k", "overrides": ["model.width=1.0"]}
    assert scale_text(document) == "quick preset, model.width=1.0, mnist5k"
    assert scale_text({**document, "overrides": []}) == "quick preset, mnist5k"
