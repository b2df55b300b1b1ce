"""Does bf16 autocast weaken attacks or the robustness that training reaches? (docs/benchmarks.md, "Speed options")

Trains each method twice from the same seed on the embedded ``mnist5k`` digits, with the demo's quick settings
(CNNb width 0.25, 8 epochs, PGD(0.3, 8, 0.04) inside training, AELFs beta 0.05): once in fp32, once with
``train.amp=bf16`` (the training step and its attacks under ``torch.autocast``). Then, for every trained model and
the 1,000 test images: natural accuracy, and robust accuracy under PGD(0.3, 16, 0.02) crafted in fp32 and crafted
under bf16 autocast, all scored in fp32; and the worst case of the ``quick`` evaluation suite (FGSM, PGD-CE-20,
PGD-margin-20-rs) in fp32.

    .venv/bin/python bench/bf16.py --out /tmp/bf16 [--methods at,aelfs] [--epochs 8]

bf16 is fast only where the CPU has bf16 units (AVX512-BF16 or AMX) or on a GPU; elsewhere this is slow.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import aelf
from aelf.core.accuracy import accuracy
from aelf.workflows.evaluation.robustness import evaluate_model

EPS, STEPS, STEP_SIZE = 0.3, 16, 0.02
QUICK = [
    "data.name=mnist5k",
    "model.width=0.25",
    "train.lr_milestones=[5,7]",
    "method.attack.n_steps=8",
    "method.attack.step_size=0.04",
    "train.device=cpu",
]


def train_run(method: str, amp: str, out: Path, epochs: int, init: Path | None = None) -> Path:
    """One quick-settings run (reused when it already finished)."""
    run = out / f"{method}-{'fp32' if amp == 'off' else 'bf16'}"
    overrides = [*QUICK, f"method.name={method}", f"train.epochs={epochs}", f"train.amp={amp}"]
    if method == "st":
        overrides = [o for o in overrides if not o.startswith("method.attack")]
    if method == "aelfs":
        overrides.append("method.beta=0.05")  # the quick preset's beta for width 0.25 (docs/reproducing.md, demo)
    if init is not None:
        overrides.append(f"train.init={init}")
    if not (run / "weights.safetensors").exists():
        start = time.perf_counter()
        aelf.train(aelf.load_config(None, overrides), run, overwrite=True, progress=False)
        print(f"trained {run} in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def pgd_accuracy(model, x, y, autocast: bool) -> float:
    attack = aelf.PGD(eps=EPS, n_steps=STEPS, step_size=STEP_SIZE)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        x_adv = torch.cat([attack(model, x[i : i + 250], y[i : i + 250]) for i in range(0, len(x), 250)])
    return accuracy(model, x_adv, y)


def measure(run: Path) -> dict:
    model = aelf.load_model(run)
    x, y = aelf.load_dataset(run, "test")
    suite = evaluate_model(model, x, y, suite="quick", eps=EPS)
    return {
        "natural": accuracy(model, x, y),
        "pgd16_fp32_attack": pgd_accuracy(model, x, y, autocast=False),
        "pgd16_bf16_attack": pgd_accuracy(model, x, y, autocast=True),
        "quick_suite_worst_case": suite.worst_case,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", default="at,aelfs", help="comma list; aelfs starts from an fp32 ST run it trains")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for method in args.methods.split(","):
        # AELFs starts from an ST run: the fp32 one for both, so that only AELFs' own training differs.
        init = train_run("st", "off", args.out, args.epochs) if method == "aelfs" else None
        for amp in ("off", "bf16"):
            run = train_run(method, amp, args.out, args.epochs, init)
            rows.append({"method": method, "training": "fp32" if amp == "off" else "bf16", **measure(run)})
    print(
        "| method | trained in | natural | PGD-16 crafted in fp32 | PGD-16 crafted in bf16 | quick suite worst case |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['training']} | {row['natural']:.2f} | {row['pgd16_fp32_attack']:.2f} | "
            f"{row['pgd16_bf16_attack']:.2f} | {row['quick_suite_worst_case']:.2f} |"
        )
    (args.out / "bf16.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
