"""Where an AT step's CPU time goes, by kind of operator: run it once per CPU code path and compare.

    .venv/bin/python bench/isa_profile.py                                   # this CPU's own kernels
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python bench/isa_profile.py                               # the AVX2 kernels, on the same CPU

It trains the trainer's own AT step (aelf.core.train.train_step, the trainer's layout and determinism; ``--layout``
forces one) of CNNb (or PreAct ResNet-18 with ``--model preact``) on batches of 128 with PGD(0.3, K, 0.02), profiles
a few steps after a warm-up with torch.profiler, and sums each operator's self CPU time into a few kinds
(convolution forward, convolution backward, linear, batch norm, element-wise, optimizer, other). It also measures
the fp32 GEMM peak (torch.mm) of the same code path, so each kind can be read against what the path's matrix units
deliver.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from aelf.core.attacks import PGD
from aelf.core.config import TrainConfig
from aelf.core.memory_format import model_memory_format, onednn_uses_avx2_path
from aelf.core.methods import AT
from aelf.core.models import CNNb, PreActResNet18
from aelf.core.train import make_optimizer, set_determinism, train_step

KINDS = (  # first match wins: backward before forward, whose names are contained in the backward ones
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "_convolution", "conv2d", "convolution")),
    ("linear", ("addmm", "aten::mm", "linear", "matmul")),
    ("batch norm", ("batch_norm",)),
    ("optimizer", ("_foreach", "sgd")),
    (
        "element-wise",
        (
            "leaky_relu",
            "relu",
            "add",
            "mul",
            "sub",
            "sign",
            "clamp",
            "min",
            "max",
            "where",
            "copy_",
            "fill_",
            "zero_",
            "div",
            "neg",
            "exp",
            "log",
            "cross_entropy",
            "nll",
            "sum",
            "mean",
        ),
    ),
)


def kind_of(name: str) -> str:
    for kind, needles in KINDS:
        if any(needle in name for needle in needles):
            return kind
    return "other"


def gemm_peak(size: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--k", type=int, default=4, help="PGD steps of the training attack")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--model", choices=("cnnb", "preact"), default="cnnb")
    parser.add_argument(
        "--layout",
        choices=("trainer", "channels_last", "contiguous"),
        default="trainer",
        help="trainer: aelf.core.memory_format's rule (channels_last unless it reaches a broken kernel)",
    )
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    device = torch.device("cpu")
    set_determinism(TrainConfig().deterministic, device)
    torch.manual_seed(0)
    channels = 1 if args.model == "cnnb" else 3
    model = CNNb(in_channels=1, width=args.width) if args.model == "cnnb" else PreActResNet18(width=args.width)
    memory_format = {
        "trainer": model_memory_format(model, device),
        "channels_last": torch.channels_last,
        "contiguous": torch.contiguous_format,
    }[args.layout]
    model.to(memory_format=memory_format)
    method = AT(attack=PGD(eps=0.3, n_steps=args.k, step_size=0.02))
    optimizer = make_optimizer(method, model, TrainConfig())
    x = torch.rand(128, channels, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (128,))
    train_step(method, model, optimizer, x, y)  # warm-up: oneDNN builds its kernels
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(method, model, optimizer, x, y)
        seconds = (time.perf_counter() - start) / args.steps
    per_kind: dict[str, float] = {}
    for event in prof.key_averages():
        per_kind[kind_of(event.key)] = per_kind.get(kind_of(event.key), 0.0) + event.self_cpu_time_total / 1e6
    total = sum(per_kind.values())
    result = {
        "avx2_path": onednn_uses_avx2_path(),
        "env": {k: os.environ.get(k) for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")},
        "threads": torch.get_num_threads(),
        "model": f"{args.model} width {args.width}",
        "layout": str(memory_format).removeprefix("torch."),
        "step_s": round(seconds, 4),
        "gemm_peak_gflops": round(gemm_peak(), 1),
        "share": {kind: round(value / total, 4) for kind, value in sorted(per_kind.items(), key=lambda kv: -kv[1])},
    }
    print(
        f"AT step ({result['model']}, {result['layout']}, batch 128, PGD K={args.k}): {seconds:.3f} s; AVX2 path: "
        f"{result['avx2_path']}; fp32 GEMM peak {result['gemm_peak_gflops']} GFLOP/s; {result['threads']} threads"
    )
    print("| kind | share of the step's CPU time | s per step |")
    print("|---|---|---|")
    for kind, share in result["share"].items():
        print(f"| {kind} | {100 * share:.1f}% | {share * seconds:.3f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
