"""Which convolutions reach oneDNN's broken AVX2 1x1 weight-gradient kernel (the rule in aelf.core.memory_format).

    .venv/bin/python bench/avx2_conv_probe.py            # about 3 minutes on 2 cores

Each case runs in a process of its own under ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's AVX2 code path, on any x86 CPU):
a ``Conv2d(c_in, 8, kernel, stride)`` on a batch of 32 images of ``size x size``, its weight gradient computed 40
times in the given memory format and deterministic mode, each compared with the first and the first with a float64
contiguous reference. Outcomes: ``ok``; ``varies`` (the gradient changes between identical calls); ``wrong``
(differs from the reference by more than 1e-3); ``hang`` (no answer within the timeout); ``crash`` (killed by a
signal or a glibc heap-corruption abort).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CASE = r"""
import sys, torch, torch.nn as nn
deterministic, layout, c_in, kernel, stride, size, threads = sys.argv[1:]
torch.use_deterministic_algorithms(deterministic == "on")
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
torch.set_num_threads(int(threads))
torch.manual_seed(0)
conv = nn.Conv2d(int(c_in), 8, int(kernel), int(stride), bias=False).to(memory_format=fmt)
x = torch.randn(32, int(c_in), int(size), int(size)).contiguous(memory_format=fmt)
first = None
for _ in range(40):
    conv.weight.grad = None
    conv(x).sum().backward()
    if first is None:
        first = conv.weight.grad.clone()
    elif not torch.equal(conv.weight.grad, first):
        print("varies"); sys.exit(0)
ref = nn.Conv2d(int(c_in), 8, int(kernel), int(stride), bias=False).double()
ref.weight.data = conv.weight.data.double().contiguous()
ref(x.double().contiguous()).sum().backward()
print("ok" if (ref.weight.grad - first.double()).abs().max().item() < 1e-3 else "wrong")
"""


def run_case(args: tuple, timeout: float) -> str:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", CASE, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "hang"
    if done.returncode != 0:
        return "crash"
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args()
    cases = []
    for threads in (2, 1):
        for stride in (1, 2, 3):
            for c_in in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16):
                cases.append(("on", "channels_last", c_in, 1, stride, 16, threads))
    cases += [
        ("off", "channels_last", 4, 1, 2, 16, 2),  # deterministic mode off: the same kernel
        ("on", "contiguous", 4, 1, 2, 16, 2),  # the guard's layout
        ("off", "contiguous", 4, 1, 2, 32, 2),
        ("on", "channels_last", 4, 1, 2, 32, 2),
        ("on", "channels_last", 4, 1, 2, 15, 2),  # odd sizes
        ("on", "channels_last", 4, 1, 2, 9, 2),
        ("on", "channels_last", 4, 3, 2, 16, 2),  # 3x3 kernels take another kernel
        ("on", "channels_last", 3, 3, 1, 32, 2),
    ]
    print("| deterministic | layout | c_in | kernel | stride | size | threads | outcome |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        print("| " + " | ".join(map(str, case)) + f" | {run_case(case, args.timeout)} |", flush=True)


if __name__ == "__main__":
    main()
