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

import errno
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from aelf.apps.parser import build_parser, commands_parser
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


def cmd_train(args) -> int:
    from aelf.core.config import load_config, make_config, to_dict
    from aelf.core.config_text import parse_override
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
    from aelf.core.config import make_config, to_dict
    from aelf.core.config_text import parse_override
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
