"""The ``aelf`` command line's parsers: each command's options, the options several commands share (declared once),
and the listing of what is registered. Nothing here runs a command (``aelf.apps.cli`` does).

Building a parser imports only what its help text needs, so ``aelf --help`` loads no torch and answers at once.
"""

from __future__ import annotations

import argparse

from aelf.core import __version__
from aelf.core.errors import AelfError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (status 2), like every other bad input."""

    def error(self, message: str):
        raise AelfError(message)


WEIGHTS_HELP = (
    "which weights of the run: last (default: the weights at the end of training, which every finished run has "
    "and the paper's tables report) or best (the weights of the best robust validation accuracy on training "
    "images, held out unless train.val_holdout is false; only runs trained with train.val_size > 0)"
)
EVERY_RUN_HELP = "override a data/model/train/eval setting of every run, e.g. --set train.epochs=2"

# The options that several commands share, each declared once; a command changes only its help text or default.
SHARED_OPTIONS: dict[str, dict] = {
    "--device": {"default": "auto"},
    "--set": {"dest": "overrides", "action": "append", "default": [], "metavar": "KEY=VALUE"},
    "--no-progress": {"action": "store_true"},
    "--json": {"action": "store_true", "help": "print one JSON object instead of a table"},
    "--n-examples": {"type": int, "metavar": "N"},
    "--data": {"metavar": "PATH"},
    "--seeds": {
        "metavar": "S1,S2,...",
        "help": "train every run once per seed (train.seed), e.g. 8,9,10: means with 95%% intervals, "
        "paired comparisons",
    },
    "--weights": {"default": "last", "help": WEIGHTS_HELP},  # choices: aelf.core.best.CHOICES (add_option)
}


def add_option(parser: argparse.ArgumentParser, name: str, **changes) -> None:
    """Add the shared option ``name`` to a command's parser, with this command's help text or default."""
    options = {**SHARED_OPTIONS[name], **changes}
    if name == "--weights":  # the kinds of weights, from the module that knows them (loaded with the command)
        from aelf.core.best import CHOICES

        options["choices"] = CHOICES
    parser.add_argument(name, **options)


def add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with the settings that differ from defaults")
    add_option(parser, "--set", help="override one setting, e.g. --set method.attack.eps=8/255 (repeatable)")


# Each command's line in ``aelf --help``, in its order.
SUMMARIES = {
    "train": "train one model into a run folder",
    "eval": "natural and adversarial accuracy on N, N(L), N(R), N(U), N(D)",
    "check": "gradient-masking checks (Carlini et al. 2019) at eval.attack.eps: a pass/warn table",
    "curves": "accuracy against eps and PGD steps for runs: PNG, Markdown, JSON",
    "demo": "train ST, AT, JT, AELFs on mnist5k and print the Table 2 layout",
    "reproduce": "reproduce a table or figure of the paper (see --list)",
    "claims": "CLAIMS.md: the paper's claims checked against reproduce results (paired, with intervals)",
    "attention": "where each model looks: gradient, sign, Grad-CAM, SmoothGrad, IG maps; breadth metrics",
    "report": "one self-contained HTML page about runs (config, curves, accuracy, attention)",
    "card": "write the run's model card next to its weights: method and paper, data and split, settings, "
    "accuracy with 95%% intervals (from the evaluations in the run folder), weights sha256, the command",
}


def main_parser() -> tuple[ArgumentParser, argparse._SubParsersAction]:
    parser = ArgumentParser(prog="aelf", description="Adversarial training: ST, AT, JT and AELFs (see README).")
    parser.add_argument("--version", action="version", version=f"aelf {__version__}")
    return parser, parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)


def commands_parser() -> ArgumentParser:
    """``aelf``, ``aelf --help``, ``aelf --version``: the commands with their one-line help and no arguments, so that
    nothing a command needs is loaded."""
    parser, commands = main_parser()
    for name, summary in SUMMARIES.items():
        commands.add_parser(name, help=summary)
    return parser


def registry_listing(registries: dict[str, dict]) -> str:
    """``{title: registry}`` as one line per registered thing: its name, one-line description and reference."""
    lines = []
    for title, entries in registries.items():
        width = max(len(name) for name in entries)
        lines.append(f"{title}:")
        lines += [f"  {name:<{width}}  {entry.description} ({entry.reference})" for name, entry in entries.items()]
        lines.append("")
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    """Every command with its arguments (their help names the datasets, models and methods, from the registries)."""
    from aelf.core.config import Config, DataConfig
    from aelf.core.data import DATASETS, FAMILIES
    from aelf.core.data.source import DEFAULT_FILES_FAMILY
    from aelf.core.methods import METHODS
    from aelf.core.models import MODELS

    parser, commands = main_parser()
    train = commands.add_parser(
        "train",
        help=SUMMARIES["train"],
        epilog=registry_listing(
            {"methods (--method)": METHODS, "models (--model)": MODELS, "datasets (--dataset)": DATASETS}
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # --ratio applies to the methods that weight a natural and an adversarial loss
    ratio_methods = [
        name for name, method in METHODS.items() if "lambda_nat" in getattr(method, "__dataclass_fields__", {})
    ]
    families = "; ".join(
        f"{family.name.upper()} family ({', '.join(n for n, d in DATASETS.items() if d.family is family)}): "
        f"PGD({family.attack.eps:g}, {family.attack.n_steps}, {family.attack.step_size:g})"
        for family in FAMILIES.values()
    )
    train.add_argument(
        "--dataset",
        help=f"data.name: {', '.join(DATASETS)} (default {DataConfig.name}). The training and "
        f"evaluation attacks default to the dataset family's paper attack: {families}",
    )
    add_option(
        train,
        "--data",
        help="your own data (data.name=files, data.root=PATH): an .npz or "
        ".safetensors file of images (N,H,W[,C]) uint8 or floats in [0, 1] and integer labels, or a "
        "folder with one sub-folder of images per class (read with Pillow); split by data.test_fraction "
        f"({DataConfig.test_fraction}) and data.split_seed ({DataConfig.split_seed}) unless given; data.family: "
        f"{' or '.join(FAMILIES)} attacks (default {DEFAULT_FILES_FAMILY})",
    )
    train.add_argument("--model", help=f"model.name: {', '.join(MODELS)} (default {Config().model.name}; listed below)")
    train.add_argument(
        "--method", help=f"method.name: {', '.join(METHODS)} (default {Config().method.name}; listed below)"
    )
    train.add_argument("--epochs", type=int, help="train.epochs")
    train.add_argument("--init", metavar="RUN", help="train.init: start from this finished run (AELFs: the ST run)")
    train.add_argument(
        "--ratio",
        metavar="A:B",
        help=f"loss ratio natural:adversarial ({', '.join(ratio_methods)}), e.g. 0.4:0.6 "
        "= method.lambda_nat=0.4, method.lambda_adv=0.6 (Fig. 1, Table 3)",
    )
    add_option(train, "--device", default=None, help="train.device: auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--out", metavar="RUN", help="run folder to create")
    train.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    train.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="with --out RUN and the run's settings: start RUN, or continue it if it already holds a run of the same "
        "settings (other settings are refused); the same command can be repeated until the run has finished",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    add_option(train, "--no-progress", help="no progress bar")
    add_settings(train)

    evaluate = commands.add_parser("eval", help=SUMMARIES["eval"])
    evaluate.add_argument("run", metavar="RUN")
    add_option(evaluate, "--json")
    add_option(evaluate, "--device")
    add_option(evaluate, "--set", help="override an eval setting, e.g. --set eval.attack.n_steps=40")
    add_option(evaluate, "--no-progress")
    evaluate.add_argument(
        "--suite",
        choices=["quick", "standard", "full"],
        help="instead: an attack suite (quick: FGSM, PGD-CE, PGD-margin from a random start; standard: + AutoAttack "
        "APGD-CE/APGD-T; full: + restarts, standard AutoAttack) on N at eval.attack.eps; writes "
        "the suite's results into RUN",
    )
    add_option(evaluate, "--n-examples", help="the first N test images (all)")
    add_option(
        evaluate,
        "--data",
        help="a run on your own files whose file or folder has moved: read it at PATH (its sha256 must be the one "
        "the run recorded)",
    )
    evaluate.add_argument(
        "--individual",
        action="store_true",
        help="with --suite: every attack on every example (its own accuracy; slower)",
    )
    add_option(evaluate, "--weights")

    check = commands.add_parser(
        "check",
        help=SUMMARIES["check"],
        description="Exit status 0 even when a check warns (the checks are heuristics); with --strict, 1.",
    )
    check.add_argument("run", metavar="RUN")
    add_option(check, "--json")
    add_option(check, "--n-examples", default=200, help="the first N test images (200)")
    check.add_argument("--strict", action="store_true", help="exit with status 1 when any check warns")
    add_option(check, "--device")
    add_option(check, "--weights")

    curves = commands.add_parser("curves", help=SUMMARIES["curves"])
    curves.add_argument("runs", nargs="+", metavar="RUN")
    curves.add_argument("--eps", required=True, metavar="E1,E2,...", help="l-inf radii in pixel units, e.g. 0,0.1,0.3")
    curves.add_argument("--steps", metavar="S1,S2,...", help="PGD step counts at each run's eval eps, e.g. 1,2,4,8,16")
    curves.add_argument("--out", required=True, metavar="DIR", help="folder for curves.png, curves.md, curves.json")
    add_option(curves, "--n-examples", help="the first N test images of each run (all)")
    add_option(curves, "--device")
    add_option(curves, "--weights")

    demo = commands.add_parser("demo", help=SUMMARIES["demo"])
    demo.add_argument("--out", default="aelf-demo", metavar="DIR", help="folder for the runs (default: aelf-demo)")
    add_option(demo, "--device")
    add_option(demo, "--no-progress")
    add_option(demo, "--seeds")
    add_option(demo, "--set", help=EVERY_RUN_HELP)

    reproduce = commands.add_parser("reproduce", help=SUMMARIES["reproduce"])
    reproduce.add_argument("name", nargs="?", metavar="NAME", help="fig1, fig3, table2, ..., fig5, or a study (--list)")
    reproduce.add_argument("--list", action="store_true", help="show every experiment with its settings")
    reproduce.add_argument(
        "--preset",
        default="quick",
        help="quick (2-core CPU, minutes; default), medium (CPU, "
        "about an hour), fashion (Fashion-MNIST at eps 0.1, CPU, hours) or paper (a GPU); "
        "see --list",
    )
    reproduce.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the runs (default: a study's own, e.g. studies/fast-at; else runs/reproduce/NAME-PRESET)",
    )
    reproduce.add_argument("--dataset", help="swap in another dataset that is present (the output says so)")
    reproduce.add_argument("--data-root", metavar="PATH", help="data.root: the folder of MNIST/CIFAR files")
    add_option(reproduce, "--device")
    add_option(reproduce, "--no-progress")
    reproduce.add_argument(
        "--no-autoattack", action="store_true", help="skip the AutoAttack column (it costs more than the PGD ones)"
    )
    add_option(reproduce, "--seeds")
    add_option(reproduce, "--weights")
    reproduce.add_argument(
        "--print-config",
        metavar="RUN",
        help="print one run's resolved settings as YAML (for aelf train --config) and stop; "
        "with one --seeds N, that seed's run",
    )
    add_option(reproduce, "--set", help=EVERY_RUN_HELP)
    claims = commands.add_parser("claims", help=SUMMARIES["claims"])
    claims.add_argument("paths", nargs="+", metavar="RESULTS", help="results.json files or folders holding them")
    claims.add_argument("--out", default="CLAIMS.md", metavar="FILE.md", help="where to write (default CLAIMS.md)")
    add_attention_parsers(commands)
    return parser


def add_attention_parsers(commands) -> None:
    """``aelf attention`` (maps and breadth metrics) and ``aelf report`` (one HTML page)."""
    attention = commands.add_parser(
        "attention",
        help=SUMMARIES["attention"],
        description="A figure (--images or --classes, with --out) and/or the breadth metrics (--metrics) of runs.",
    )
    attention.add_argument("runs", nargs="+", metavar="RUN")
    attention.add_argument("--images", metavar="I1,I2,...", help="test-set indices of the images, e.g. 0,5,7")
    attention.add_argument("--classes", metavar="C1,C2,...", help="instead: the first images of these classes")
    attention.add_argument("--per-class", type=int, default=1, metavar="K", help="with --classes: images per class")
    attention.add_argument(
        "--thresholds",
        default="0.1,0.2,0.3",
        metavar="T1,T2,...",
        help="show gradient signs where |G| exceeds each of these (default 0.1,0.2,0.3)",
    )
    attention.add_argument(
        "--sign-scale",
        choices=["normalized", "raw"],
        default="normalized",
        help="threshold |G| of the footnote-3 normalised gradient (default) or of the raw one",
    )
    attention.add_argument(
        "--metrics",
        action="store_true",
        help="print the attention-breadth table; write attention-metrics.md/.json to --out (if "
        "given) and to each run folder",
    )
    add_option(attention, "--n-examples", help="with --metrics: the first N test images (all)")
    attention.add_argument("--out", metavar="DIR", help="folder for attention.png and the per-method panels")
    add_option(attention, "--device")
    add_option(attention, "--weights")

    report = commands.add_parser("report", help=SUMMARIES["report"])
    report.add_argument("paths", nargs="+", metavar="RUN_OR_FOLDER", help="run folders or folders of run folders")
    report.add_argument("--out", required=True, metavar="FILE.html")
    report.add_argument("--n-images", type=int, default=3, metavar="N", help="test images in the attention figure")
    add_option(report, "--n-examples", default=100, help="test images for the attention metrics (100)")
    add_option(report, "--device")
    add_option(report, "--weights")

    card = commands.add_parser(
        "card",
        help=SUMMARIES["card"],
        description="Nothing is measured again: run aelf eval (and aelf eval --suite standard for AutoAttack) first "
        "for the accuracy rows.",
    )
    card.add_argument("run", metavar="RUN")
    card.add_argument("--print", action="store_true", help="also print the card")
