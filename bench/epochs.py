"""One real training epoch per workload, timed by the trainer itself (issue 8's epoch targets, BENCHMARKS.md).

    .venv/bin/python bench/epochs.py --device cuda --out /tmp/epochs [--amp bf16] [--compile] [--epochs 2]
    .venv/bin/python bench/epochs.py --smoke --out /tmp/epochs-smoke      # tiny, on CPU, seconds (the tests)

Workloads (``--only`` picks some):

- ``mnist-table2-at``: Table 2's AT run: CNNb width 1.0, PGD(0.3, 16, 0.02), 60,000 training images of 28x28
  resized to 32x32. Real MNIST from ``--mnist-root`` (IDX files) when given, else Fashion-MNIST from
  ``--fashion-root`` (default: its Debian folder): the same 60,000 x 28 x 28 format, so the same cost.
- ``cifar10-preact-at``: PreAct ResNet-18 (ReLU), PGD(8/255, 10, 2/255), 50,000 images, on-device crop and flip.
- ``cifar10-wrn-at``: Table 4's AT run: WRN-34-10 (ReLU), PGD(0.031, 10, 0.0062), 50,000 images, crop and flip.

CIFAR-10 comes from ``--cifar-root`` when given, else from 60,000 random images written in the official binary
format into ``OUT/cifar10-random`` (the cost of a step does not depend on the pixels). The time of each epoch is the
trainer's ``epoch_time_s`` in the run's ``metrics.jsonl``: the training steps plus the natural accuracy on the
10,000 test images. The first epoch includes warm-up (CUDA context, cuDNN's choices, compilation with
``--compile``); with ``--epochs 2`` (the default) the second is the steady state.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import aelf
from aelf.core.data.cifar import FORMATS, OFFICIAL_COUNTS

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
WORKLOADS = {
    "mnist-table2-at": {
        "model": {"name": "cnnb", "width": 1.0},
        "method": {"name": "at", "attack": {"eps": 0.3, "n_steps": 16, "step_size": 0.02, "random_start": False}},
    },
    "cifar10-preact-at": {
        "data": {"name": "cifar10"},
        "model": {"name": "preact_resnet18", "activation": "relu"},
        "method": {"name": "at", "attack": {"eps": "8/255", "n_steps": 10, "step_size": "2/255"}},
    },
    "cifar10-wrn-at": {
        "data": {"name": "cifar10"},
        "model": {"name": "wrn", "depth": 34, "widen_factor": 10, "activation": "relu"},
        "method": {"name": "at", "attack": {"eps": 0.031, "n_steps": 10, "step_size": 0.0062}},
    },
}
SMOKE = {  # tiny models and subsets: the script's plumbing in seconds on CPU
    "mnist-table2-at": {"model": {"width": 0.0625}, "method": {"attack": {"n_steps": 2}}},
    "cifar10-preact-at": {"model": {"width": 0.0625}, "method": {"attack": {"n_steps": 2}}},
    "cifar10-wrn-at": {"model": {"depth": 10, "widen_factor": 1, "width": 0.25}, "method": {"attack": {"n_steps": 2}}},
}


def write_random_cifar10(folder: Path, per_file: dict[str, int], seed: int = 0) -> Path:
    """Random images with random labels in CIFAR-10's official binary format (1 label byte, 3072 pixel bytes)."""
    fmt = FORMATS["cifar10"]
    target = folder / fmt.folder
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, count in per_file.items():
        path = target / name
        if path.exists() and path.stat().st_size == count * fmt.record_size:
            continue
        records = np.empty((count, fmt.record_size), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, size=count)
        records[:, 1:] = rng.integers(0, 256, size=(count, fmt.record_size - 1))
        path.write_bytes(records.tobytes())
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma list of: " + ", ".join(WORKLOADS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--amp", default="off", choices=("off", "bf16"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--mnist-root", help="a folder with MNIST's IDX files (default: Fashion-MNIST, same size)")
    parser.add_argument("--fashion-root", default=FASHION_ROOT, help=f"Fashion-MNIST's IDX files ({FASHION_ROOT})")
    parser.add_argument("--cifar-root", help="a folder with CIFAR-10's binary files (default: random images)")
    parser.add_argument("--smoke", action="store_true", help="tiny models, 256 training images, 2 attack steps")
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r} (choose from: {', '.join(WORKLOADS)})")

    cifar_root = args.cifar_root
    if cifar_root is None and any(name.startswith("cifar") for name in names):
        # the official image counts are checked on load, so the random files have them (--smoke too: it reads 256)
        cifar_root = str(write_random_cifar10(args.out / "cifar10-random", OFFICIAL_COUNTS["cifar10"]))
    rows = []
    for name in names:
        if name.startswith("mnist"):
            data = (
                {"name": "mnist", "root": args.mnist_root}
                if args.mnist_root
                else {"name": "fashion-mnist", "root": args.fashion_root}
            )
        else:
            data = {"root": cifar_root}
        layers = [  # merged in order by make_config, later layers winning
            WORKLOADS[name],
            {
                "data": data,
                "train": {
                    "epochs": args.epochs,
                    "lr_milestones": [],
                    "device": args.device,
                    "amp": args.amp,
                    "compile": args.compile,
                },
            },
        ]
        if args.smoke:
            layers.append({**SMOKE[name], "data": {"train_limit": 256, "test_limit": 100}})
        config = aelf.make_config(*layers)
        run = args.out / name
        aelf.train(config, run, overwrite=True, progress=False)
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        rows.append(
            {"workload": name, "data": config.data.name, "epoch_time_s": [row["epoch_time_s"] for row in history]}
        )
    print(f"device {args.device}, amp {args.amp}, compile {args.compile}{', smoke' if args.smoke else ''}")
    print("| workload | data | " + " | ".join(f"epoch {i + 1} s" for i in range(args.epochs)) + " |")
    print("|---|---|" + "---|" * args.epochs)
    for row in rows:
        print(f"| {row['workload']} | {row['data']} | " + " | ".join(f"{t:.1f}" for t in row["epoch_time_s"]) + " |")
    (args.out / "epochs.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
