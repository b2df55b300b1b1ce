"""``python -m bench``: images/s of ST, AT, TRADES and AELFs training steps, aelf against a plain reference loop
timed in turns on the same device, with each step's FLOP efficiency (BENCHMARKS.md).

    .venv/bin/python -m bench --smoke            # tiny models, seconds
    .venv/bin/python -m bench --device cpu --models cnnb-mnist --repeats 3
    .venv/bin/python -m bench --tuning           # CPU settings study

Run from the repository root: the harness is part of the repository, not of the installed package.
"""

from __future__ import annotations

import argparse
import sys

from aelf.core.errors import AelfError
from bench import harness, tuning
from bench.workloads import SINGLE_STEP_STEPS, STEPS


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (status 2), like every other bad input."""

    def error(self, message: str):
        raise AelfError(message)


def build_parser() -> ArgumentParser:
    bench = ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    bench.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    bench.add_argument("--smoke", action="store_true", help="tiny models, K=2, batch 32, one step: seconds")
    bench.add_argument(
        "--models",
        metavar="M1,M2",
        help="cnnb-mnist, preact-cifar, wrn-cifar (default: CPU the first two, CUDA all three)",
    )
    bench.add_argument(
        "--methods",
        metavar="S1,S2",
        help="st, at, trades, aelfs (default: these four); single-step: " + ", ".join(SINGLE_STEP_STEPS),
    )
    bench.add_argument("--steps", type=int, metavar="N", help="timed steps per repeat (CPU 1 and ST 8, CUDA 10)")
    bench.add_argument("--warmup", type=int, metavar="N", help="warm-up steps per path (CPU 1, CUDA 3)")
    bench.add_argument("--repeats", type=int, metavar="R", help="timed repeats per path, median reported (3)")
    bench.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    bench.add_argument(
        "--no-retained-heap",
        action="store_true",
        help="aelf's path without the trainer's CPU heap setting (train.retain_cpu_heap): measures "
        "what that setting gives",
    )
    bench.add_argument(
        "--tuning",
        action="store_true",
        help="instead: aelf's step (default: AT on cnnb-mnist; else the first of --methods and "
        "--models) under 1 vs all threads, channels_last vs contiguous, torch.compile, bf16 "
        "autocast, and deterministic mode with PyTorch's NaN-fill (the trainer turns it off)",
    )

    return bench


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        device = args.device or harness.default_device()
        methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else STEPS
        if args.tuning:
            model = harness.parse_models(args.models, device)[0] if args.models else "cnnb-mnist"
            step = methods[0] if args.methods else "at"
            result = tuning.run_tuning(
                device, model, step, steps=args.steps, warmup=args.warmup, repeats=args.repeats, smoke=args.smoke
            )
            text = tuning.format_tuning(result)
        else:
            result = harness.run_bench(
                device,
                harness.parse_models(args.models, device),
                args.steps,
                args.warmup,
                args.repeats,
                args.smoke,
                methods,
                retain_heap=not args.no_retained_heap,
            )
            text = harness.format_report(result)
        print(text, end="")
        if args.json:
            print(f"written: {harness.write_json(args.json, result)}")
        return 0
    except AelfError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
