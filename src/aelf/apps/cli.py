"""The ``aelf`` command line: ``train``, ``eval``, ``demo``, ``check`` (gradient masking), ``curves``, ``attention``
(attention maps and breadth metrics), ``report`` (one HTML page), ``card`` (MODEL_CARD.md).

Bad input (an unknown setting, a missing folder, a corrupt file) prints one line ``aelf: error: ...`` on stderr and
exits with status 2, before anything is written. A run stopped by SIGINT/SIGTERM saves a checkpoint and exits with
128 + the signal number; a diverged run exits with 1. Commands that only read runs print their result before they
write files; a file that cannot be written (a full disk) is one line naming it, exit 1.

Each command imports what it needs when it runs (the CLI's only function-level imports), so ``aelf --help`` loads
no torch and answers at once.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from aelf.core import __version__
from aelf.core.errors import AelfError, ConfigError, DivergenceError, TrainingInterrupted, WriteFailed

EXIT_USAGE = 2
EXIT_FAILED = 1


class CommandFailed(Exception):
    """Not bad input: the command could not finish (a file it could not write); one line, exit 1."""


def _reason(err: OSError) -> str:
    text = err.strerror or str(err)
    return text[:1].lower() + text[1:]


@contextmanager
def saving(shown: str | None = "the result above") -> Iterator[None]:
    """Writes after a result was printed: one that fails names its file and says that ``shown`` is complete."""
    try:
        yield
    except OSError as err:
        done = f"; {shown} is complete, only this file is missing" if shown else ""
        raise CommandFailed(f"could not write {err.filename or 'a file'} ({_reason(err)}){done}") from None


def training_write_failed(err: OSError, out: Path) -> CommandFailed:
    """A write that failed while training, with what is left: the last checkpoint, if one was written."""
    from aelf.core.checkpoint import latest_checkpoint

    try:
        kept = latest_checkpoint(out) if out.is_dir() else None
    except AelfError:
        kept = None
    if kept is not None:
        left = f"the checkpoint {kept} is kept: make room, then continue with: aelf train --resume {out}"
    else:
        left = "no checkpoint of this run had been written yet: make room and start it again"
    return CommandFailed(f"could not write {err.filename or 'a file'} ({_reason(err)}); {left}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (status 2), like every other bad input."""

    def error(self, message: str):
        raise AelfError(message)


WEIGHTS_HELP = (
    "which weights of the run: last (default: the weights at the end of training, which every finished run has "
    "and the paper's tables report) or best (the weights of the best robust validation accuracy on held-out "
    "training images; only runs trained with train.val_size > 0)"
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


def cmd_train(args) -> int:
    from aelf.core.config import load_config, make_config, parse_override, to_dict
    from aelf.core.data.source import FILES
    from aelf.core.run import read_config
    from aelf.core.train import train

    if args.resume:
        settings = ("dataset", "data", "model", "method", "init", "ratio", "device", "out", "config")
        given = [key for key in settings if getattr(args, key)]
        layers = [parse_override(text) for text in args.overrides]
        longer = args.epochs is not None or bool(layers)
        if given or args.overwrite or args.resume_if_exists or not all(map(only_epochs, layers)):
            raise AelfError(
                "--resume continues a run with its saved settings; give no other settings with it (only more epochs: "
                "--epochs N or --set train.epochs=N)"
            )
        config = None
        if longer:
            epochs = [{"train": {"epochs": args.epochs}}] if args.epochs is not None else []
            config = make_config(to_dict(read_config(args.resume)), *epochs, *layers)
        try:
            out = train(config, args.resume, resume=True, progress=not args.no_progress)
        except OSError as err:
            if not is_write_failure(err):
                raise
            raise training_write_failed(err, Path(args.resume)) from None
    else:
        if not args.out:
            raise AelfError("train needs --out RUN (or --resume RUN)")
        lambda_nat, lambda_adv = parse_ratio(args.ratio) if args.ratio else (None, None)
        if args.data and args.dataset not in (None, FILES):
            raise AelfError(f"--data trains on your own files; it does not go with --dataset {args.dataset}")
        config = load_config(
            args.config,
            args.overrides,
            **{
                "data.name": FILES if args.data else args.dataset,
                "data.root": str(Path(args.data).resolve()) if args.data else None,
                "model.name": args.model,
                "method.name": args.method,
                "train.epochs": args.epochs,
                "train.init": args.init,
                "train.device": args.device,
                "method.lambda_nat": lambda_nat,
                "method.lambda_adv": lambda_adv,
            },
        )
        try:
            out = train(
                config,
                args.out,
                overwrite=args.overwrite,
                progress=not args.no_progress,
                resume_if_exists=args.resume_if_exists,
            )
        except OSError as err:
            if not is_write_failure(err):
                raise
            raise training_write_failed(err, Path(args.out)) from None
    print(f"finished: {out}")
    return 0


def only_epochs(layer: dict) -> bool:
    return layer.keys() == {"train"} and isinstance(layer["train"], dict) and layer["train"].keys() == {"epochs"}


def is_write_failure(err: OSError) -> bool:
    return isinstance(err, WriteFailed) or err.errno in (errno.ENOSPC, errno.EDQUOT)


def cmd_eval(args) -> int:
    from aelf.core import distributed
    from aelf.core.config import make_config, parse_override, to_dict
    from aelf.core.run import read_config
    from aelf.workflows.evaluation.evaluate import evaluate_run, write_eval
    from aelf.workflows.reproduction.tables import shift_table

    config = read_config(args.run)
    attack = None
    if args.overrides:
        layers = [parse_override(text) for text in args.overrides]
        if any(set(layer) - {"eval"} for layer in layers):
            raise AelfError("aelf eval accepts only eval.* settings in --set")
        attack = make_config(to_dict(config), *layers).eval.attack
    if args.suite:
        return eval_suite(args, (attack or config.eval.attack).eps)
    if args.individual:
        raise AelfError("--individual goes with --suite")
    result = evaluate_run(
        args.run,
        attack=attack,
        device=args.device,
        progress=not args.no_progress,
        weights=args.weights,
        write=False,
        data=args.data,
        n_examples=args.n_examples,
    )
    if args.json:
        print(json.dumps({"natural": result["natural"], "adversarial": result["adversarial"]}), flush=True)
    else:
        a = result["attack"]
        label = f"PGD({a['eps']:.4g}, {a['n_steps']}, {a['step_size']:.4g})"
        print(shift_table({config.method.name: result}, None, label), end="", flush=True)
    if distributed.is_main_process():
        with saving():
            write_eval(args.run, result)
    return 0


def eval_suite(args, eps: float) -> int:
    from aelf.workflows.evaluation.robustness import evaluate_run_suite, write_suite

    result = evaluate_run_suite(
        args.run,
        args.suite,
        eps,
        args.n_examples,
        args.device,
        args.individual,
        weights=args.weights,
        write=False,
        data=args.data,
    )
    print(json.dumps(result.to_dict()) + "\n" if args.json else result.markdown(), end="", flush=True)
    with saving():
        path = write_suite(args.run, args.suite, args.weights, result)
    if not args.json:
        print(f"\nwritten: {path}")
    return 0


def cmd_check(args) -> int:
    from aelf.workflows.evaluation.masking import check_run, write_check

    report = check_run(args.run, args.n_examples, args.device, weights=args.weights, write=False)
    print(json.dumps(report.to_dict()) + "\n" if args.json else report.markdown(), end="", flush=True)
    with saving():
        path = write_check(args.run, report, args.weights)
    if not args.json:
        print(f"\nwritten: {path}")
    return 1 if args.strict and report.warnings else 0


def parse_ratio(text: str) -> tuple[float, float]:
    """The loss ratio as written in Fig. 1 and Table 3, ``"0.4:0.6"`` -> ``(0.4, 0.6)`` = (lambda_nat, lambda_adv).

    Raises ConfigError unless it is two numbers in [0, 1], separated by one colon, that sum to 1 (within 1e-6).
    """
    from aelf.core.methods.mixed import check_weights

    parts = text.split(":") if isinstance(text, str) else []
    try:
        if len(parts) != 2:
            raise ValueError
        lambda_nat, lambda_adv = (float(part) for part in parts)
    except ValueError:
        raise ConfigError(f"a loss ratio is two numbers nat:adv summing to 1, e.g. 0.4:0.6 (got {text!r})") from None
    try:
        check_weights(lambda_nat, lambda_adv)
    except ConfigError as err:
        raise ConfigError(f"loss ratio {text!r}: {err}") from None
    return lambda_nat, lambda_adv


def parse_values(text: str, kind: type, flag: str) -> list:
    """``"0,0.1,8/255"`` -> [0.0, 0.1, 0.0313...] (fractions parsed, never evaluated)."""
    try:
        values = [Fraction(part.strip()) for part in text.split(",")]
    except (ValueError, ZeroDivisionError):
        raise AelfError(f"{flag} expects comma-separated numbers, e.g. 0,0.1,0.3 (got {text!r})") from None
    if kind is int and any(value.denominator != 1 for value in values):
        raise AelfError(f"{flag} expects whole numbers (got {text!r})")
    return [kind(value) for value in values]


def cmd_curves(args) -> int:
    from aelf.workflows.evaluation.curves import curves_for_runs, curves_markdown, write_curves

    eps_values = parse_values(args.eps, float, "--eps")
    steps_values = parse_values(args.steps, int, "--steps") if args.steps else None
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise AelfError(f"--out {args.out} exists and is not a folder")
    curves = curves_for_runs(args.runs, eps_values, steps_values, args.n_examples, args.device, weights=args.weights)
    print(curves_markdown(curves), end="", flush=True)
    with saving("the table above"):
        written = write_curves(curves, args.out)
    print("\nwritten: " + ", ".join(str(path) for path in written))
    return 0


def parse_seeds(text: str | None) -> list[int] | None:
    """``"8,9,10"`` -> [8, 9, 10]; :func:`reproduce` checks that they are distinct and non-negative."""
    return None if text is None else parse_values(text, int, "--seeds")


def cmd_demo(args) -> int:
    from aelf.apps.demo import run_demo

    run_demo(
        Path(args.out),
        device=args.device,
        progress=not args.no_progress,
        overrides=args.overrides,
        seeds=parse_seeds(args.seeds),
    )
    return 0


def cmd_claims(args) -> int:
    from aelf.apps.claims import write_claims

    command = "aelf claims " + " ".join(args.paths) + (f" --out {args.out}" if args.out != "CLAIMS.md" else "")
    out = write_claims(args.paths, args.out, command)
    print(f"written: {out}")
    return 0


def cmd_reproduce(args) -> int:
    from aelf.workflows.reproduction.reproduce import list_experiments, reproduce, run_config_yaml

    if args.list:
        print(list_experiments(), end="")
        return 0
    if not args.name:
        raise AelfError("reproduce needs an experiment NAME (see aelf reproduce --list)")
    seeds = parse_seeds(args.seeds)
    if args.print_config:
        if seeds is not None and len(seeds) != 1:
            raise AelfError("--print-config prints one run: give one seed (e.g. --seeds 10) or none")
        print(
            run_config_yaml(
                args.name,
                args.print_config,
                args.preset,
                args.out,
                args.dataset,
                args.data_root,
                args.overrides,
                seed=seeds[0] if seeds else None,
            ),
            end="",
        )
        return 0
    reproduce(
        args.name,
        args.preset,
        args.out,
        dataset=args.dataset,
        data_root=args.data_root,
        overrides=args.overrides,
        device=args.device,
        progress=not args.no_progress,
        autoattack=not args.no_autoattack,
        seeds=seeds,
        weights=args.weights,
    )
    return 0


def cmd_attention(args) -> int:
    from aelf.core import distributed
    from aelf.workflows.attention.figure import figure_for_runs
    from aelf.workflows.attention.maps import check_runs
    from aelf.workflows.attention.metrics import metrics_for_runs, metrics_markdown, write_attention_metrics

    if args.images and args.classes:
        raise AelfError("give either --images or --classes, not both")
    figure = bool(args.images or args.classes)
    if not figure and not args.metrics:
        raise AelfError("attention needs --images or --classes (a figure, with --out DIR) or --metrics")
    if figure and not args.out:
        raise AelfError("the attention figure needs --out DIR")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise AelfError(f"--out {args.out} exists and is not a folder")
    if args.n_examples is not None and (args.n_examples < 1 or not args.metrics):
        raise AelfError("--n-examples goes with --metrics and must be at least 1")
    images = parse_values(args.images, int, "--images") if args.images else None
    classes = parse_values(args.classes, int, "--classes") if args.classes else None
    thresholds = parse_values(args.thresholds, float, "--thresholds")
    if any(not t >= 0 for t in thresholds):
        raise AelfError(f"--thresholds must be >= 0 (got {args.thresholds!r})")
    check_runs(args.runs)  # every folder checked before anything is computed
    written = []
    if figure:
        with saving(None):
            written += figure_for_runs(
                args.runs,
                args.out,
                images,
                classes,
                args.per_class,
                args.device,
                thresholds,
                args.sign_scale,
                args.weights,
            )
    if args.metrics:
        document = metrics_for_runs(args.runs, args.n_examples, args.device, args.weights)
        print(metrics_markdown(document), end="", flush=True)
        if distributed.is_main_process():  # under torchrun every rank holds the same totals; rank 0 writes them
            with saving("the table above"):
                written += write_attention_metrics(document, args.out)
    print("\nwritten: " + ", ".join(str(path) for path in written))
    return 0


def cmd_report(args) -> int:
    from aelf.apps.report import write_report

    with saving(None):
        out = write_report(args.paths, args.out, args.n_images, args.n_examples, args.device, args.weights)
    print(f"written: {out}")
    return 0


def cmd_card(args) -> int:
    from aelf.apps.card import model_card, write_card_text

    text = model_card(args.run)
    if args.print:
        print(text, end="", flush=True)
    with saving("the card above" if args.print else None):
        path = write_card_text(args.run, text)
    print(f"written: {path}")
    return 0


def command_in(argv: list[str] | None) -> bool:
    """Whether the arguments name a command: any that is not an option (the top level's options take no values)."""
    return any(not text.startswith("-") for text in (sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    try:
        args = (build_parser() if command_in(argv) else commands_parser()).parse_args(argv)
        from aelf.core import distributed

        with distributed.stdout_on_main_only():
            return {
                "train": cmd_train,
                "eval": cmd_eval,
                "demo": cmd_demo,
                "reproduce": cmd_reproduce,
                "claims": cmd_claims,
                "check": cmd_check,
                "curves": cmd_curves,
                "attention": cmd_attention,
                "report": cmd_report,
                "card": cmd_card,
            }[args.command](args)
    except TrainingInterrupted as err:
        print(f"aelf: {err}", file=sys.stderr)
        return 128 + err.signum
    except (DivergenceError, CommandFailed) as err:
        print(f"aelf: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except AelfError as err:
        print(f"aelf: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno == errno.ENOSPC:
            print(f"aelf: error: no space left on device ({err.filename or 'while writing'})", file=sys.stderr)
            return EXIT_FAILED
        raise
    except KeyboardInterrupt:
        print("aelf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
