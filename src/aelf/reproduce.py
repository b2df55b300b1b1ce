"""``aelf reproduce NAME``: every table and figure of the paper from one command.

An :class:`Experiment` is a list of runs (each a config layer over the preset, optionally starting from another run
of the same experiment, as AELFs starts from ST), the attacks it is tested with, and the paper's numbers. Two
presets per experiment:

- ``paper``: the settings of Appendix C and of the experiment's section, meant for a GPU;
- ``quick``: the same runs scaled down to finish in minutes on a 2-core CPU on the embedded ``mnist5k`` digits.

``--dataset`` swaps in other data that is present. When an experiment of the paper's CIFAR family runs on an
MNIST-family dataset (or the other way round), its attacks are rescaled to that family's budget (eps 0.3 on MNIST,
0.031 on CIFAR: eps and step sizes times 0.3/0.031) and the output says so.

Runs that finished in the output folder are reused, stopped ones resumed, so a long reproduction can be stopped and
continued. Evaluations are cached in each run folder (``reproduce-eval.json``) as long as the test attacks are the
same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from aelf import cpu_heap, distributed, paper
from aelf.analysis import plots
from aelf.analysis.attention_metrics import FOREGROUND_THRESHOLD, metrics_markdown, model_attention_metrics
from aelf.analysis.tables import attack_label, robust_table, shift_table
from aelf.attacks import PGD
from aelf.attacks.autoattack import AutoAttack
from aelf.checkpoint import WEIGHTS, read_json, write_json, write_text
from aelf.config import Config, make_config, parse_override
from aelf.data import load_dataset
from aelf.data.datasets import DATASETS
from aelf.errors import CheckpointError, ConfigError
from aelf.evaluate import accuracy, evaluate
from aelf.memory_format import model_memory_format
from aelf.run import CONFIG, load_model
from aelf.run import load_dataset as load_run_dataset
from aelf.train import train

# Bumped whenever a preset below changes what it trains or tests; written into every results.json, so that numbers
# are never compared across preset definitions unknowingly.
PRESET_VERSION = 1
MNIST_FAMILY = frozenset({"mnist5k", "mnist", "fashion-mnist"})
CIFAR_FAMILY = frozenset({"cifar10", "cifar100"})
FAMILY_EPS = {"mnist": 0.3, "cifar": 0.031}
EVAL_CACHE = "reproduce-eval.json"
AUTOATTACK = "AutoAttack"  # the result key and column of the AutoAttack robust accuracy
ATTENTION_VERSION = 1  # part of the evaluation cache key: bump when the attention metrics change


def family(dataset: str) -> str:
    return "mnist" if dataset in MNIST_FAMILY else "cifar"


@dataclass(frozen=True)
class Run:
    """One trained model of an experiment: ``settings`` is a config layer over the preset's (``method`` at least)."""

    key: str
    label: str
    settings: dict
    init: str | None = None  # key of the run of this experiment it starts from (``train.init``)

    @property
    def method(self) -> str:
        return self.settings["method"]["name"]


@dataclass(frozen=True)
class Preset:
    """How every run of an experiment is trained and tested.

    ``settings``: config layer for every run; ``st_settings``: extra layer for standard-training runs (their own
    schedule, Appendix C); ``method_settings``: extra layer per method name; ``attack``: the training attack of every
    adversarial method, in the units of the experiment's paper dataset; ``test_attacks``: column label -> PGD
    settings; ``note``: how this preset differs from the paper.
    """

    settings: dict
    attack: dict
    test_attacks: dict[str, dict]
    note: str
    st_settings: dict = field(default_factory=dict)
    method_settings: dict = field(default_factory=dict)
    # The AutoAttack column (the authors' pyautoattack) at the first test attack's eps: its version and how many test
    # images (None: all). Quick presets use the cheaper APGD-CE + APGD-T subset on the first 200 images.
    autoattack: str = "standard"
    autoattack_examples: int | None = None


@dataclass(frozen=True)
class Experiment:
    """A table or figure of the paper. ``kind``: ``shift`` (natural and adversarial accuracy on N, N(L), N(R), N(U),
    N(D), one test attack) or ``robust`` (natural accuracy and one column per test attack)."""

    name: str
    title: str
    kind: str
    dataset: str  # the dataset of the paper's experiment
    runs: tuple[Run, ...]
    presets: dict[str, Preset]
    paper_rows: dict[str, dict]
    paper_label: str
    figure: str | None = None  # a function name of aelf.analysis.plots, or None for tables


# ----------------------------------------------------------------------------------------------------------------------
# The paper's experiments

MNIST_PGD = {"eps": 0.3, "n_steps": 16, "step_size": 0.02}  # PGD(0.3, 16, 0.02), Section 4.1
MNIST_QUICK_PGD = {"eps": 0.3, "n_steps": 8, "step_size": 0.04}  # half the steps, the same reach
CNNB_CIFAR_PGD = {"eps": 0.031, "n_steps": 5, "step_size": 0.01}  # PGD(0.031, 5, 0.01), Fig. 1 and Section 4.2
CNNB_CIFAR_PGD10 = {"eps": 0.031, "n_steps": 10, "step_size": 0.005}  # A*(10) of Table 3
WRN_CIFAR10_PGD = {"eps": 0.031, "n_steps": 10, "step_size": 0.0062}  # Table 4
WRN_CIFAR100_PGD = {"eps": 0.03, "n_steps": 7, "step_size": 0.0075}  # Table 5

MNIST_PAPER = {
    "data": {"name": "mnist"},
    "model": {"name": "cnnb", "width": 1.0},
    "train": {"epochs": 50, "lr_milestones": [20, 40]},
}
MNIST_QUICK = {
    "data": {"name": "mnist5k"},
    "model": {"name": "cnnb", "width": 0.25},
    "train": {"epochs": 8, "lr_milestones": [5, 7]},
}


def mnist_quick_note(paper_train: dict, quick_train: dict, has_aelfs: bool) -> str:
    def schedule(train: dict) -> str:
        return f"{train['epochs']} epochs (lr x0.1 after {' and '.join(map(str, train['lr_milestones']))})"

    note = (
        f"mnist5k (4,000/1,000 real digits) instead of MNIST; CNNb width 0.25; {schedule(quick_train)} instead of "
        f"{schedule(paper_train)}; training attack PGD(0.3, 8, 0.04) instead of PGD(0.3, 16, 0.02)"
    )
    return note + ("; AELFs beta 0.05 instead of 0.5 (at width 0.25 beta 0.5 collapses the features, see README)"
                   if has_aelfs else "")  # fmt: skip
# Appendix C, CIFAR: ST 100 epochs (x0.1 after 40, 80), every other method 160 (after 50, 100); batch 128.
CIFAR_PAPER_ST = {"train": {"epochs": 100, "lr_milestones": [40, 80]}}
CIFAR_PAPER_TRAIN = {"epochs": 160, "lr_milestones": [50, 100]}
CIFAR_QUICK = {
    "data": {"name": "mnist5k", "train_limit": 2000, "test_limit": 500},
    "train": {"epochs": 4, "lr_milestones": [3]},
}
QUICK_AUTOATTACK = {"autoattack": "quick", "autoattack_examples": 200}
CIFAR_QUICK_NOTE = (
    "mnist5k (2,000/500 digits) instead of {dataset}, so the attacks are rescaled to the MNIST budget (eps 0.3); "
    "{model}; 4 epochs (lr x0.1 after 3) instead of 100 for ST and 160 for the others"
)


def ratio_runs(method: str, label: str, extra: dict | None = None, init: str | None = None) -> tuple[Run, ...]:
    """The three loss ratios natural:adversarial of Fig. 1 and Table 3."""
    return tuple(
        Run(
            f"{method}-{nat}-{adv}",
            f"{label} {nat}:{adv}",
            {"method": {"name": method, "lambda_nat": nat, "lambda_adv": adv, **(extra or {})}},
            init,
        )
        for nat, adv in ((0.4, 0.6), (0.5, 0.5), (0.6, 0.4))
    )


ST = Run("st", "ST", {"method": {"name": "st"}})
AT = Run("at", "AT", {"method": {"name": "at"}})


def mnist_experiment(name: str, title: str, runs: tuple[Run, ...], paper_rows: dict, paper_label: str,
                     paper_train: dict, quick_train: dict, figure: str | None = None) -> Experiment:  # fmt: skip
    test = {"A*": MNIST_PGD}
    return Experiment(
        name=name,
        title=title,
        kind="shift",
        dataset="mnist",
        runs=runs,
        presets={
            "paper": Preset(
                settings={**MNIST_PAPER, "train": paper_train},
                attack=MNIST_PGD,
                test_attacks=test,
                note="the paper's setting (Appendix C); full MNIST IDX files in data.root (--data-root)",
                method_settings={"aelfs": {"beta": 0.5}},
            ),
            "quick": Preset(
                settings={**MNIST_QUICK, "train": quick_train},
                attack=MNIST_QUICK_PGD,
                test_attacks=test,
                note=mnist_quick_note(paper_train, quick_train, any(run.method == "aelfs" for run in runs)),
                **QUICK_AUTOATTACK,
                method_settings={"aelfs": {"beta": 0.05}},
            ),
        },
        paper_rows=paper_rows,
        paper_label=paper_label,
        figure=figure,
    )


def cnnb_cifar_experiment(name: str, title: str, runs: tuple[Run, ...], test_attacks: dict, paper_rows: dict,
                          paper_label: str, figure: str | None = None) -> Experiment:  # fmt: skip
    cnnb = {"name": "cnnb", "width": 1.0}
    return Experiment(
        name=name,
        title=title,
        kind="robust",
        dataset="cifar10",
        runs=runs,
        presets={
            "paper": Preset(
                # Appendix C: weight decay 2e-4 for the small CNNb on CIFAR-10 (Madry et al.).
                settings={"data": {"name": "cifar10"}, "model": cnnb,
                          "train": {**CIFAR_PAPER_TRAIN, "weight_decay": 2e-4}},  # fmt: skip
                st_settings=CIFAR_PAPER_ST,
                attack=CNNB_CIFAR_PGD,
                test_attacks=test_attacks,
                note="the paper's setting (Appendix C); CIFAR-10 binary files in data.root (--data-root)",
            ),
            "quick": Preset(
                settings={**CIFAR_QUICK, "model": {"name": "cnnb", "width": 0.25}},
                attack=CNNB_CIFAR_PGD,
                test_attacks=test_attacks,
                note=CIFAR_QUICK_NOTE.format(dataset="CIFAR-10", model="CNNb width 0.25"),
                **QUICK_AUTOATTACK,
            ),
        },
        paper_rows=paper_rows,
        paper_label=paper_label,
        figure=figure,
    )


def wrn_experiment(name: str, title: str, dataset: str, depth: int, dropout: float, attack: dict,
                   test_attacks: dict, paper_rows: dict, paper_label: str) -> Experiment:  # fmt: skip
    relu, leaky = {"activation": "relu"}, {"activation": "leaky_relu"}
    # Table 4/5 notes: AELFs with lambda1 = lambda2 = 0.5; AELFs* with beta 0.2 (the paper suggests a smaller beta for
    # wider embeddings, Appendix B.2); we read beta 0.2 as holding for both rows. '*' marks LeakyReLU networks.
    aelfs = {"name": "aelfs", "lambda_nat": 0.5, "lambda_adv": 0.5, "beta": 0.2}
    runs = (
        Run("st", "ST (ReLU)", {"method": {"name": "st"}, "model": relu}),
        Run("st_leaky", "ST* (LeakyReLU)", {"method": {"name": "st"}, "model": leaky}),
        Run("at", "AT (ReLU)", {"method": {"name": "at"}, "model": relu}),
        Run("trades-6", "TRADES lambda^-1=6 (ReLU)", {"method": {"name": "trades", "beta": 6.0}, "model": relu}),
        Run("aelfs", "AELFs (ReLU)", {"method": aelfs, "model": relu}, init="st"),
        Run("aelfs_leaky", "AELFs* (LeakyReLU)", {"method": aelfs, "model": leaky}, init="st_leaky"),
    )
    label = "CIFAR-10" if dataset == "cifar10" else "CIFAR-100"
    return Experiment(
        name=name,
        title=title,
        kind="robust",
        dataset=dataset,
        runs=runs,
        presets={
            "paper": Preset(
                settings={"data": {"name": dataset}, "model": {"name": "wrn", "depth": depth, "dropout": dropout},
                          "train": CIFAR_PAPER_TRAIN},  # fmt: skip
                st_settings=CIFAR_PAPER_ST,
                attack=attack,
                test_attacks=test_attacks,
                note=f"the paper's setting (Appendix C), WRN-{depth}-10; {label} binary files in data.root",
            ),
            "quick": Preset(
                settings={**CIFAR_QUICK, "model": {"name": "wrn", "depth": 10, "widen_factor": 1, "dropout": dropout}},
                attack=attack,
                test_attacks=test_attacks,
                note=CIFAR_QUICK_NOTE.format(dataset=label, model=f"WRN-10-1 instead of WRN-{depth}-10"),
                **QUICK_AUTOATTACK,
            ),
        },
        paper_rows=paper_rows,
        paper_label=paper_label,
    )


BETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)

EXPERIMENTS: dict[str, Experiment] = {
    experiment.name: experiment
    for experiment in (
        cnnb_cifar_experiment(
            "fig1",
            "Fig. 1: the trade-off of ST, AT and JT (loss ratios natural:adversarial), CNNb on CIFAR-10",
            (ST, AT, *ratio_runs("jt", "JT")),
            {"A*(5)": CNNB_CIFAR_PGD},
            {k: v for k, v in paper.TABLE3.items() if k == "st" or k == "at" or k.startswith("jt-")},
            "paper, Table 3 (the same setting; Fig. 1 gives no numbers)",
            figure="tradeoff_bars",
        ),
        mnist_experiment(
            "fig3",
            "Fig. 3: ST vs AT on the shifted MNIST test sets N, N(L), N(R), N(U), N(D)",
            (ST, AT),
            {k: paper.TABLE2[k] for k in ("st", "at")},
            "paper, Table 2 (the models of Fig. 3)",
            {"epochs": 50, "lr_milestones": [20, 40]},
            {"epochs": 8, "lr_milestones": [5, 7]},
            figure="shift_bars",
        ),
        mnist_experiment(
            "table2",
            "Table 2: ST, AT, JT and AELFs on MNIST and its shifted test sets, CNNb, 50 epochs",
            (ST, AT, Run("jt", "JT", {"method": {"name": "jt"}}), Run("aelfs", "AELFs", {"method": {"name": "aelfs"}},
                                                                         init="st")),  # fmt: skip
            paper.TABLE2,
            "paper, Table 2: full MNIST, 50 epochs",
            {"epochs": 50, "lr_milestones": [20, 40]},
            {"epochs": 8, "lr_milestones": [5, 7]},
        ),
        cnnb_cifar_experiment(
            "table3",
            "Table 3: AT, JT, TRADES, JT* and AELFs with CNNb on CIFAR-10",
            (
                ST,
                AT,
                *ratio_runs("jt", "JT"),
                *(Run(f"trades-{b}", f"TRADES lambda^-1={b}", {"method": {"name": "trades", "beta": float(b)}})
                  for b in (1, 2, 3)),  # fmt: skip
                *ratio_runs("jt_star", "JT* beta=0.5", {"beta": 0.5}, init="st"),
                *ratio_runs("aelfs", "AELFs beta=0.5", {"beta": 0.5}, init="st"),
            ),
            {"A*(5)": CNNB_CIFAR_PGD, "A*(10)": CNNB_CIFAR_PGD10},
            paper.TABLE3,
            "paper, Table 3",
        ),
        wrn_experiment(
            "table4",
            "Table 4: WRN-40 (dropout 0.2) on CIFAR-10, PGD without / with a random start",
            "cifar10",
            40,
            0.2,
            WRN_CIFAR10_PGD,
            {"A*": WRN_CIFAR10_PGD, "A*(random start)": {**WRN_CIFAR10_PGD, "random_start": True}},
            paper.TABLE4,
            "paper, Table 4",
        ),
        wrn_experiment(
            "table5",
            "Table 5: WRN-28 on CIFAR-100",
            "cifar100",
            28,
            0.0,
            WRN_CIFAR100_PGD,
            {"A*": WRN_CIFAR100_PGD},
            paper.TABLE5,
            "paper, Table 5",
        ),
        mnist_experiment(
            "table6",
            "Table 6 (Appendix D): Table 2 with 30 epochs",
            (ST, AT, Run("jt", "JT", {"method": {"name": "jt"}}), Run("aelfs", "AELFs", {"method": {"name": "aelfs"}},
                                                                         init="st")),  # fmt: skip
            paper.TABLE6,
            "paper, Table 6: full MNIST, 30 epochs",
            {"epochs": 30, "lr_milestones": [10, 20]},
            {"epochs": 5, "lr_milestones": [2, 4]},
        ),
        cnnb_cifar_experiment(
            "fig5",
            "Fig. 5 (Appendix B.2): sensitivity of AELFs to beta (lambda1 = lambda2 = 0.5), CNNb on CIFAR-10",
            (ST, *(Run(f"aelfs-beta{b}", f"AELFs beta={b}", {"method": {"name": "aelfs", "beta": b}}, init="st")
                   for b in BETAS)),  # fmt: skip
            {"A*(5)": CNNB_CIFAR_PGD},
            {},
            "paper, Fig. 5 (no numbers in the text)",
            figure="beta_curve",
        ),
    )
}


# ----------------------------------------------------------------------------------------------------------------------
# Planning: every config is built and checked before any work starts


def scaled_attack(spec: dict, from_dataset: str, to_dataset: str) -> dict:
    """``spec`` (in units of ``from_dataset``'s family) moved to ``to_dataset``'s eps budget, if the family differs."""
    factor = FAMILY_EPS[family(to_dataset)] / FAMILY_EPS[family(from_dataset)]
    if factor == 1.0:
        return dict(spec)
    return {**spec, "eps": round(spec["eps"] * factor, 4), "step_size": round(spec["step_size"] * factor, 4)}


@dataclass(frozen=True)
class Plan:
    experiment: Experiment
    preset_name: str
    dataset: str
    configs: dict[str, Config]  # run key -> config, in training order
    labels: dict[str, str]
    test_attacks: dict[str, PGD]
    notes: tuple[str, ...]
    autoattack: AutoAttack | None  # None: no AutoAttack column (--no-autoattack)
    autoattack_examples: int | None


def plan(
    name: str,
    preset: str = "quick",
    out: str | Path = ".",
    dataset: str | None = None,
    data_root: str | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
) -> Plan:
    """The validated configs of every run (ConfigError before anything is trained or written)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r} (choose from: {', '.join(EXPERIMENTS)}; see --list)")
    experiment = EXPERIMENTS[name]
    if preset not in experiment.presets:
        raise ConfigError(f"unknown preset {preset!r} (choose from: {', '.join(experiment.presets)})")
    chosen = experiment.presets[preset]
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r} (choose from: {', '.join(DATASETS)})")
    override_layers = [parse_override(text) for text in overrides]
    for layer in override_layers:
        if "method" in layer:
            raise ConfigError("aelf reproduce takes no method.* settings: each run's method is part of the experiment")
    dataset = dataset or chosen.settings["data"]["name"]
    notes = [f"preset {preset} (version {PRESET_VERSION}): {chosen.note}"]
    if dataset != chosen.settings["data"]["name"]:
        notes.append(f"--dataset {dataset} replaces {chosen.settings['data']['name']}")
    if family(dataset) != family(experiment.dataset):
        budget = FAMILY_EPS[family(dataset)]
        factor = budget / FAMILY_EPS[family(experiment.dataset)]
        notes.append(
            f"the paper ran this on {experiment.dataset}; on {dataset} the attacks are rescaled to eps {budget} "
            f"(eps and step sizes x{factor:.3g})"
        )
    train_attack = scaled_attack(chosen.attack, experiment.dataset, dataset)
    test_attacks = {
        label: PGD(**scaled_attack(spec, experiment.dataset, dataset)) for label, spec in chosen.test_attacks.items()
    }
    runs = {run.key: run for run in experiment.runs}
    configs: dict[str, Config] = {}
    for run in runs.values():
        layers = [chosen.settings]
        if run.method == "st":
            layers.append(chosen.st_settings)
        layers.append(run.settings)
        if run.method != "st":
            layers.append({"method": {"attack": train_attack}})
        layers.append({"method": chosen.method_settings.get(run.method, {})})
        layers.append({"data": {"name": dataset, **({"root": data_root} if data_root else {})}})
        layers.append({"train": {"device": device}})
        if run.init:
            layers.append({"train": {"init": str(Path(out) / run.init)}})
        layers += override_layers
        try:
            configs[run.key] = make_config(*layers)
        except ConfigError as err:
            raise ConfigError(f"{name}/{run.key}: {err}") from None
    first_attack = next(iter(test_attacks.values()))
    autoattack = AutoAttack(eps=first_attack.eps, norm="Linf", version=chosen.autoattack)
    labels = {k: r.label for k, r in runs.items()}
    return Plan(
        experiment, preset, dataset, configs, labels, test_attacks, tuple(notes), autoattack, chosen.autoattack_examples
    )


# ----------------------------------------------------------------------------------------------------------------------
# Running


def train_or_reuse(config: Config, run_dir: Path, progress: bool, log=print) -> None:
    """Train ``run_dir`` from ``config``; reuse it if finished, resume it if stopped (its saved settings win)."""
    if (run_dir / WEIGHTS).is_file():
        log(f"{run_dir.name}: reusing the finished run in {run_dir}")
        return
    resume = (run_dir / CONFIG).is_file()
    log(f"{run_dir.name}: {'resuming' if resume else 'training'} {run_dir}")
    train(None if resume else config, run_dir, resume=resume, progress=progress)


def evaluate_cached(
    plan_: Plan, run_dir: Path, device: torch.device, progress: bool, context: distributed.Context = distributed.SINGLE
) -> dict:
    """The run's results on the experiment's test sets and attacks, from ``reproduce-eval.json`` when still valid."""
    attacks = {label: vars(attack) for label, attack in plan_.test_attacks.items()}
    key = {
        "kind": plan_.experiment.kind,
        "test_attacks": attacks,
        "attention": ATTENTION_VERSION,
        "autoattack": vars(plan_.autoattack) if plan_.autoattack else None,
        "autoattack_examples": plan_.autoattack_examples,
    }
    key = json.loads(json.dumps(key))  # as it reads back from the cache file (tuples become lists)
    cache = run_dir / EVAL_CACHE
    if cache.is_file():
        try:
            saved = read_json(cache)
        except CheckpointError:
            saved = None
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["result"]
    model = load_model(run_dir, device)
    model = model.to(memory_format=model_memory_format(model, device))  # as aelf.evaluate.evaluate_run
    config = plan_.configs[run_dir.name]
    x, y = load_run_dataset(run_dir, "test")  # the run's own test split (dataset, root, limit)
    x, y = x.to(device), y.to(device)
    with cpu_heap.for_run(config.train, device):
        result = evaluate_plan_run(plan_, model, x, y, config, progress, context)
    if context.is_main:
        write_json(cache, {"key": key, "result": result})
    return result


def evaluate_plan_run(plan_: Plan, model, x, y, config, progress: bool, context: distributed.Context) -> dict:
    """The measurements of one run of an experiment: shifted test sets (with attention metrics) or attacks, then
    AutoAttack when the preset has it."""
    if plan_.experiment.kind == "shift":
        (attack,) = plan_.test_attacks.values()
        result = evaluate(model, x, y, attack, config.eval.shift_pixels, config.eval.batch_size, progress, context)
        # The paper's argument is about attention on MNIST: measure it next to the accuracies (issue: attention).
        result["attention"] = model_attention_metrics(model, x, y)
    else:
        result = {"natural": round(accuracy(model, x, y, None, config.eval.batch_size, context), 2)}
        for label, attack in plan_.test_attacks.items():
            result[label] = round(accuracy(model, x, y, attack, config.eval.batch_size, context), 2)
    # Every claim under AutoAttack too (on N for the shift study), next to the paper's PGD.
    if plan_.autoattack is not None:
        n_aa = plan_.autoattack_examples or len(y)
        robust = accuracy(model, x[:n_aa], y[:n_aa], plan_.autoattack, config.eval.batch_size, context)
        result[AUTOATTACK] = round(robust, 2)
    return result


def reproduce(
    name: str,
    preset: str = "quick",
    out: str | Path | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    progress: bool = True,
    table_name: str = "results",
    log=print,
    autoattack: bool = True,
) -> dict:
    """Train (or reuse, or resume) and evaluate every run of experiment ``name``; write ``OUT/{table_name}.md``,
    ``.json`` and, for figures, ``OUT/NAME.png``. Returns the JSON document."""
    out = Path(out or f"runs/reproduce/{name}-{preset}")
    the_plan = plan(name, preset, out, dataset, data_root, overrides, device)
    if not autoattack:
        the_plan = replace(the_plan, autoattack=None)
    context, target = distributed.setup(device)  # under torchrun: every run trained and evaluated by all ranks
    # Data problems (a missing CIFAR folder, a corrupt file) surface here, before any training.
    load_dataset(the_plan.dataset, "test", next(iter(the_plan.configs.values())).data.root, limit=1)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    measured = {}
    for key, config in the_plan.configs.items():
        train_or_reuse(config, out / key, progress, log)
        measured[key] = evaluate_cached(the_plan, out / key, target, progress, context)
    seconds = round(time.perf_counter() - start, 1)
    document = render(the_plan, measured, seconds)
    if context.is_main:
        log(write_outputs(the_plan, document, out, table_name))
    return document


def render(the_plan: Plan, measured: dict, seconds: float) -> dict:
    """The JSON document of a reproduction: settings, notes, measured and paper rows."""
    experiment = the_plan.experiment
    return {
        "experiment": experiment.name,
        "title": experiment.title,
        "preset": the_plan.preset_name,
        "preset_version": PRESET_VERSION,
        "dataset": the_plan.dataset,
        "notes": list(the_plan.notes),
        "test_attacks": {label: vars(attack) for label, attack in the_plan.test_attacks.items()},
        "labels": the_plan.labels,
        "measured": measured,
        "paper": {key: row for key, row in experiment.paper_rows.items() if key in the_plan.labels},
        "paper_label": experiment.paper_label,
        "seconds": seconds,
    }


def write_outputs(the_plan: Plan, document: dict, out: Path, table_name: str) -> str:
    """Write the Markdown table, the JSON and the figure; return the Markdown."""
    experiment = the_plan.experiment
    labels, measured, paper_rows = document["labels"], document["measured"], document["paper"]
    aa = the_plan.autoattack
    extra = AUTOATTACK if aa is not None else None
    if experiment.kind == "shift":
        (attack,) = the_plan.test_attacks.values()
        table = shift_table(measured, paper_rows, attack_label(attack), experiment.paper_label, labels, extra)
    else:
        table = robust_table(measured, paper_rows, the_plan.test_attacks, experiment.paper_label, labels, extra)
    if aa is not None:
        images = f"the first {the_plan.autoattack_examples}" if the_plan.autoattack_examples else "all"
        table += (
            f"\n{AUTOATTACK}: the authors' pyautoattack, version {aa.version}, l-inf eps {aa.eps:.4g}, on {images} "
            f"test images{' of N' if experiment.kind == 'shift' else ''} (the paper reports PGD only).\n"
        )
    else:
        table += "\nNo AutoAttack column (--no-autoattack).\n"
    markdown = (
        f"# {experiment.title}\n\n"
        + "".join(f"- {note}\n" for note in document["notes"])
        + f"\n{table}\nMeasured rows: this machine, {document['seconds']:.0f} s for this invocation (runs reused from "
        f"the folder take no time). Paper rows: copied from the paper, not measured.\n"
    )
    if experiment.kind == "shift":
        summaries = {labels.get(key, key): row["attention"] for key, row in measured.items()}
        attention = {
            "n_examples": next(iter(summaries.values()))["n_images"],
            "foreground_threshold": FOREGROUND_THRESHOLD,
            "models": summaries,
        }
        markdown += "\n## Attention breadth (measured)\n\n" + metrics_markdown(attention)
    if experiment.figure:
        figure = out / f"{experiment.name}.png"
        getattr(plots, experiment.figure)(document, figure)
        markdown += f"\nFigure: {figure.name}\n"
    write_text(out / f"{table_name}.md", markdown)
    write_json(out / f"{table_name}.json", document)
    return markdown


def describe() -> str:
    """``aelf reproduce --list``: every experiment with its runs and both presets."""
    lines = []
    for experiment in EXPERIMENTS.values():
        lines.append(f"{experiment.name}: {experiment.title}")
        lines.append(f"  runs: {', '.join(run.key for run in experiment.runs)}")
        for preset_name, preset in experiment.presets.items():
            dataset = preset.settings["data"]["name"]
            train_text = attack_label(PGD(**scaled_attack(preset.attack, experiment.dataset, dataset)))
            attacks = ", ".join(
                f"{name} {attack_label(PGD(**scaled_attack(spec, experiment.dataset, dataset)))}"
                for name, spec in preset.test_attacks.items()
            )
            lines.append(f"  --preset {preset_name} ({dataset}): train attack {train_text}; test {attacks}")
            lines.append(f"    {preset.note}")
    return "\n".join(lines) + "\n"
