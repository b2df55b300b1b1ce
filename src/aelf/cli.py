"""The ``aelf`` command line: ``train``, ``eval``, ``demo``.

Bad input (an unknown setting, a missing folder, a corrupt file) prints one line ``aelf: error: ...`` on stderr and
exits with status 2, before anything is written. A run stopped by SIGINT/SIGTERM saves a checkpoint and exits with
128 + the signal number; a diverged run exits with 1.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from aelf.errors import AelfError, DivergenceError

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (status 2), like every other bad input."""

    def error(self, message: str):
        raise AelfError(message)


def add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with the settings that differ from defaults")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set method.attack.eps=8/255 (repeatable)",
    )


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="aelf", description="Adversarial training: ST, AT, JT and AELFs (see README).")
    from aelf import __version__

    parser.add_argument("--version", action="version", version=f"aelf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    train = commands.add_parser("train", help="train one model into a run folder")
    train.add_argument("--dataset", help="data.name: mnist5k (default), mnist, fashion-mnist")
    train.add_argument("--model", help="model.name: cnnb")
    train.add_argument("--method", help="method.name: st, at, jt, aelfs")
    train.add_argument("--epochs", type=int, help="train.epochs")
    train.add_argument("--init", metavar="RUN", help="train.init: start from this finished run (AELFs: the ST run)")
    train.add_argument("--device", help="train.device: auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--out", metavar="RUN", help="run folder to create")
    train.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings(train)

    evaluate = commands.add_parser("eval", help="natural and adversarial accuracy on N, N(L), N(R), N(U), N(D)")
    evaluate.add_argument("run", metavar="RUN")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an eval setting, e.g. --set eval.attack.n_steps=40",
    )
    evaluate.add_argument("--no-progress", action="store_true")

    demo = commands.add_parser("demo", help="train ST, AT, JT, AELFs on mnist5k and print the Table 2 layout")
    demo.add_argument("--out", default="aelf-demo", metavar="DIR", help="folder for the runs (default: aelf-demo)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--no-progress", action="store_true")
    return parser


def cmd_train(args) -> int:
    from aelf.config import load_config
    from aelf.train import train

    if args.resume:
        settings = ("dataset", "model", "method", "epochs", "init", "device", "out", "config")
        given = [key for key in settings if getattr(args, key)]
        if given or args.overrides or args.overwrite:
            raise AelfError("--resume continues a run with its saved settings; give no other settings with it")
        out = train(None, args.resume, resume=True, progress=not args.no_progress)
    else:
        if not args.out:
            raise AelfError("train needs --out RUN (or --resume RUN)")
        config = load_config(
            args.config,
            args.overrides,
            **{
                "data.name": args.dataset,
                "model.name": args.model,
                "method.name": args.method,
                "train.epochs": args.epochs,
                "train.init": args.init,
                "train.device": args.device,
            },
        )
        out = train(config, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"finished: {out}")
    return 0


def cmd_eval(args) -> int:
    from aelf.analysis.tables import shift_table
    from aelf.config import make_config, parse_override, to_dict
    from aelf.evaluate import evaluate_run
    from aelf.run import read_config

    config = read_config(args.run)
    attack = None
    if args.overrides:
        layers = [parse_override(text) for text in args.overrides]
        if any(set(layer) - {"eval"} for layer in layers):
            raise AelfError("aelf eval accepts only eval.* settings in --set")
        attack = make_config(to_dict(config), *layers).eval.attack
    result = evaluate_run(args.run, attack=attack, device=args.device, progress=not args.no_progress)
    if args.json:
        print(json.dumps({"natural": result["natural"], "adversarial": result["adversarial"]}))
    else:
        a = result["attack"]
        label = f"PGD({a['eps']:.4g}, {a['n_steps']}, {a['step_size']:.4g})"
        print(shift_table({config.method.name: result}, None, label), end="")
    return 0


def cmd_demo(args) -> int:
    from aelf.demo import run_demo

    run_demo(Path(args.out), device=args.device, progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    from aelf.train import TrainingInterrupted

    try:
        args = build_parser().parse_args(argv)
        return {"train": cmd_train, "eval": cmd_eval, "demo": cmd_demo}[args.command](args)
    except TrainingInterrupted as err:
        print(f"aelf: {err}", file=sys.stderr)
        return 128 + err.signum
    except DivergenceError as err:
        print(f"aelf: error: {err}", file=sys.stderr)
        return 1
    except AelfError as err:
        print(f"aelf: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno == errno.ENOSPC:
            print(f"aelf: error: no space left on device ({err.filename or 'while saving'}); "
                  "the previous checkpoint is kept", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("aelf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
