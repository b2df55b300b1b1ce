"""``aelf bench``: images/s of one training step of aelf against a plain reference loop, timed in turns.

For each workload (a model on an input size) and each step (ST, AT with PGD-K, TRADES-K, AELFs with PGD-K; when
asked for, AT and AELFs with a single-step attack and AT with GradAlign: ``bench.workloads.SINGLE_STEP_STEPS``), two
training paths run side by side on the same device, from the same initial weights, with the same batch size:

- **aelf**: exactly what :func:`aelf.train.train` does per step: the data as one in-memory tensor on the device
  (channels_last) sliced by :func:`aelf.core.data.train_batches`, the model in channels_last, the optimizer of
  :func:`aelf.train.make_optimizer`, :func:`aelf.train.train_step` with the method object (its attacks take input
  gradients only) and :func:`aelf.train.record_step` (device-side metric sums, no ``.item()``), under the trainer's
  deterministic-mode setting and, on CPU, its retained heap (:mod:`aelf.core.cpu_heap`).
- **reference**: the loop as common adversarial-training repositories write it: a ``DataLoader`` over CPU tensors
  (``TensorDataset``, ``shuffle=True``, ``num_workers=0``), ``.to(device)`` per batch, the default memory format,
  fp32, and a fresh attack per batch written naively (:func:`reference_pgd`: ``loss.backward()``, which also
  computes every weight gradient, then ``x_adv.grad.sign()`` and ``model.zero_grad()``; ``model.eval()`` during the
  attack, ``model.train()`` after). TRADES is the TRADES repository's ``trades_loss`` (clean logits recomputed at
  every attack step and twice in the loss, ``KLDivLoss(size_average=False) / batch``); AELFs is a JT-style loop with
  the head frozen by ``requires_grad=False`` and the naive attack on the second half of the batch.

Each path lives in a spawned process of its own (:class:`bench.paths.PathWorker`), so that process-wide settings (the
heap, deterministic mode) belong to one path only; the parent builds both paths, warms them up, then times them in turns
(``repeats`` times, alternating which goes first; only one process works at a time) and reports the median of the
repeats. The efficiency is the *necessary* model FLOPs per image over the wall time (see
:func:`necessary_flops`), also as a fraction of the device's peak (CPU: a measured fp32 GEMM peak; CUDA: the vendor's
number for the device).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from aelf.core import cpu_heap
from aelf.core.config import TrainConfig
from aelf.core.errors import AelfError
from aelf.core.methods.mixed import n_adversarial
from bench.paths import PathSpec, PathWorker
from bench.peak import device_peak
from bench.workloads import (
    BATCH_SIZE,
    FORMULAS,
    STEPS,
    WORKLOADS,
    attack_steps,
    check_step,
    forward_flops,
    necessary_flops,
    smoke_workload,
)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_models(device: str) -> list[str]:
    """CPU: CNNb and PreAct ResNet-18 (a WRN-34-10 PGD-10 step takes minutes on a small CPU); CUDA: all three."""
    return list(WORKLOADS) if device.startswith("cuda") else ["cnnb-mnist", "preact-cifar"]


def parse_models(text: str | None, device: str) -> list[str]:
    if not text:
        return default_models(device)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown or not names:
        raise AelfError(f"unknown bench model {', '.join(unknown) or text!r} (choose from: {', '.join(WORKLOADS)})")
    return names


# An ST step has no attack: on CPU it is 20-35x shorter than an AT step, so one step per repeat is too short to time
# against the machine's noise (paired ratios of 0.98-1.28 were seen); without --steps, ST times this many.
CPU_ST_STEPS = 8


def timed_steps_for(step: str, device: torch.device, smoke: bool, steps: int | None, n_timed: int) -> int:
    """Timed steps per repeat of one bench step: ``n_timed``, but :data:`CPU_ST_STEPS` for ST on CPU by default."""
    if step == "st" and steps is None and device.type == "cpu" and not smoke:
        return max(n_timed, CPU_ST_STEPS)
    return n_timed


def schedule(device: torch.device, smoke: bool, steps: int | None, warmup: int | None, repeats: int | None):
    """(timed steps per repeat, warm-up steps, repeats): CPU 1/1/3 (ST: see :data:`CPU_ST_STEPS`), CUDA 10/3/3,
    smoke 1/1/1 unless given."""
    if smoke:
        defaults = (1, 1, 1)
    elif device.type == "cuda":
        defaults = (10, 3, 3)
    else:
        defaults = (1, 1, 3)
    chosen = tuple(d if v is None else v for v, d in zip((steps, warmup, repeats), defaults, strict=True))
    if chosen[0] < 1 or chosen[1] < 0 or chosen[2] < 1:
        raise AelfError(f"--steps and --repeats must be >= 1 and --warmup >= 0 (got {chosen})")
    return chosen


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_pair(workers: list[PathWorker], steps: int, warmup: int, repeats: int, batch_size: int) -> dict:
    """Warm every worker's path up, then time them in turns, ``repeats`` times (the order alternating); img/s per
    repeat (``KIND``: per wall second; ``KIND_cpu``: per second of the worker's CPU time)."""
    for worker in workers:
        if warmup:
            worker.time(warmup)
    rates: dict[str, list[float]] = {}
    for repeat in range(repeats):
        for worker in workers if repeat % 2 == 0 else workers[::-1]:
            wall, cpu = worker.time(steps)
            rates.setdefault(worker.kind, []).append(steps * batch_size / wall)
            rates.setdefault(f"{worker.kind}_cpu", []).append(steps * batch_size / max(cpu, 1e-9))
    return rates


def run_bench(
    device: str | None = None,
    models: list[str] | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    smoke: bool = False,
    methods: tuple[str, ...] = STEPS,
    batch_size: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = log_to_stderr,
    retain_heap: bool = TrainConfig().retain_cpu_heap,
) -> dict:
    """Measure every (model, step) on both paths; returns every figure as a JSON-ready dict (see ``format_report``).

    ``smoke``: tiny models, K=2, batch 32, one step: seconds on a CPU. ``retain_heap``: the aelf path keeps freed
    CPU memory in its heap as the trainer does (``train.retain_cpu_heap``, :mod:`aelf.core.cpu_heap`); False measures
    aelf without it.
    """
    device = torch.device(device or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AelfError("--device cuda: no CUDA device is available")
    names = models or default_models(device.type)
    for method in methods:
        check_step(method)
    batch_size = batch_size or (32 if smoke else BATCH_SIZE)
    n_timed, n_warmup, n_repeats = schedule(device, smoke, steps, warmup, repeats)
    log = log or (lambda _message: None)
    load_before = load_average()
    peak = device_peak(device, smoke)
    log(f"peak: {peak['flops'] / 1e9 if peak['flops'] else float('nan'):.1f} GFLOP/s ({peak['kind']})")
    # each path in a process of its own; the aelf one with the trainer's CPU heap setting (aelf.core.cpu_heap)
    retain = retain_heap and device.type == "cpu" and cpu_heap.supported()
    workers = [
        PathWorker("aelf", torch.get_num_threads(), retain),
        PathWorker("reference", torch.get_num_threads(), False),
    ]
    try:
        rows, workloads = bench_models(
            workers, names, methods, device, smoke, steps, n_timed, n_warmup, n_repeats, batch_size, peak, seed, log
        )
    finally:
        for worker in workers:
            worker.close()
    if device.type == "cpu" and not smoke:  # a shared machine depresses a single measurement: keep the best
        again = device_peak(device, smoke)
        peak["fp32_measured_before_after"] = [peak["flops"], again["flops"]]
        if again["flops"] > peak["flops"]:
            peak.update({"flops": again["flops"], "kind": again["kind"], "fp32_measured": again["flops"]})
            for row in rows:
                row["aelf_peak_fraction"] = row["aelf_flops_per_s"] / peak["flops"]
                row["reference_peak_fraction"] = row["reference_flops_per_s"] / peak["flops"]
        peak["kind"] += "; the best of one measurement before and one after the runs"
    return {
        "device": str(device),
        "device_name": peak["name"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "smoke": smoke,
        "aelf_retained_cpu_heap": retain,
        "batch_size": batch_size,
        "warmup_steps": n_warmup,
        "timed_steps": n_timed,
        "repeats": n_repeats,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "peak": peak,
        "formulas": {step: FORMULAS[step] for step in methods},
        "workloads": workloads,
        "rows": rows,
    }


def bench_models(
    workers, names, methods, device, smoke, steps, n_timed, n_warmup, n_repeats, batch_size, peak, seed, log
) -> tuple[list[dict], dict]:
    """The rows of :func:`run_bench` (one per model and step, both paths timed by ``workers``) and the workloads."""
    rows, workloads = [], {}
    for name in names:
        workload = smoke_workload(WORKLOADS[name]) if smoke else WORKLOADS[name]
        torch.manual_seed(seed)
        base = workload.build()
        flops = forward_flops(base, workload.input_shape(), device)
        workloads[name] = {
            "label": workload.label,
            "forward_flops": flops,
            "K": workload.n_steps,
            "trades_K": workload.trades.n_steps,
            "epoch_images": workload.epoch_images,
        }
        for step in methods:
            k = attack_steps(step, workload)
            adv_fraction = n_adversarial(batch_size, 0.5) / batch_size
            needed = necessary_flops(step, flops, k, adv_fraction)
            n_step_timed = timed_steps_for(step, device, smoke, steps, n_timed)
            log(
                f"{name} {step}: warm-up {n_warmup}, {n_repeats} x {n_step_timed} timed steps of batch {batch_size} ..."
            )
            n_images = batch_size * (n_warmup + n_repeats * n_step_timed)
            for worker in workers:
                worker.build(PathSpec(worker.kind, step, workload, n_images, str(device), batch_size, seed))
            rates = measure_pair(workers, n_step_timed, n_warmup, n_repeats, batch_size)
            aelf_rate, reference_rate = statistics.median(rates["aelf"]), statistics.median(rates["reference"])
            paired = [a / r for a, r in zip(rates["aelf"], rates["reference"], strict=True)]
            row = {
                "step": step,
                "model": name,
                "K": k,
                "batch_size": batch_size,
                "timed_steps": n_step_timed,
                "aelf_img_s": aelf_rate,
                "reference_img_s": reference_rate,
                "ratio": aelf_rate / reference_rate,
                "aelf_img_s_repeats": rates["aelf"],
                "reference_img_s_repeats": rates["reference"],
                "paired_ratios": paired,  # repeat r of aelf over repeat r of the reference, timed back to back
                # images per second of this process's CPU time (all its threads): less sensitive to other jobs
                "aelf_img_per_cpu_s_repeats": rates["aelf_cpu"],
                "reference_img_per_cpu_s_repeats": rates["reference_cpu"],
                "necessary_flops_per_image": needed,
                "aelf_flops_per_s": needed * aelf_rate,
                "reference_flops_per_s": needed * reference_rate,
                "aelf_peak_fraction": needed * aelf_rate / peak["flops"] if peak["flops"] else None,
                "reference_peak_fraction": needed * reference_rate / peak["flops"] if peak["flops"] else None,
                "aelf_epoch_s": workload.epoch_images / aelf_rate,
                "reference_epoch_s": workload.epoch_images / reference_rate,
            }
            rows.append(row)
            log(f"  aelf {aelf_rate:.2f} img/s, reference {reference_rate:.2f} img/s, ratio {row['ratio']:.2f}")
    return rows, workloads


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def st_note(result: dict) -> str:
    """`` (ST: 8)`` where ST was timed with more steps per repeat than the other steps (see CPU_ST_STEPS)."""
    counts = {row["timed_steps"] for row in result["rows"] if row["step"] == "st"}
    return f" (ST: {counts.pop()})" if len(counts) == 1 and counts != {result["timed_steps"]} else ""


def heap_note(result: dict) -> str:
    if result["device"] != "cpu":
        return ""
    return f", aelf's {'with' if result['aelf_retained_cpu_heap'] else 'without'} the trainer's retained CPU heap"


def format_report(result: dict) -> str:
    """The table and the notes that explain it, as Markdown."""
    peak = result["peak"]
    peak_text = f"{peak['flops'] / 1e9:.1f} GFLOP/s, {peak['kind']}" if peak["flops"] else peak["kind"]
    lines = [
        f"aelf bench on {result['device']} ({result['device_name']}), torch {result['torch']}, "
        f"{result['threads']} threads{', SMOKE (tiny models)' if result['smoke'] else ''}; each path in a process of "
        f"its own{heap_note(result)}",
        f"batch {result['batch_size']}, {result['warmup_steps']} warm-up + {result['repeats']} x "
        f"{result['timed_steps']} timed steps per path{st_note(result)}, median of the repeats; load average before "
        f"{result['load_average_before']}, after {result['load_average_after']}",
        f"peak: {peak_text}",
        "",
        "F = forward FLOPs of one image (FlopCounterMode, a multiply-add = 2 FLOPs):",
    ]
    for name, info in result["workloads"].items():
        lines.append(
            f"  {name}: F = {info['forward_flops'] / 1e6:.1f} MFLOP ({info['label']}), "
            f"PGD K = {info['K']}, TRADES K = {info['trades_K']}"
        )
    lines.append("necessary FLOPs per image:")
    lines += [f"  {step}: {formula}" for step, formula in result["formulas"].items()]
    lines += [
        "",
        "| step | model | K | aelf img/s | reference img/s | aelf/reference | paired ratios (min-max) | "
        "necessary GFLOP/img | aelf GFLOP/s (of peak) | reference GFLOP/s (of peak) | aelf epoch s | "
        "reference epoch s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['step']} | {row['model']} | {row['K'] or '-'} | {row['aelf_img_s']:.1f} | "
            f"{row['reference_img_s']:.1f} | {row['ratio']:.2f}x | {min(row['paired_ratios']):.2f}-"
            f"{max(row['paired_ratios']):.2f} | {row['necessary_flops_per_image'] / 1e9:.3f} | "
            f"{row['aelf_flops_per_s'] / 1e9:.1f} ({_pct(row['aelf_peak_fraction'])}) | "
            f"{row['reference_flops_per_s'] / 1e9:.1f} ({_pct(row['reference_peak_fraction'])}) | "
            f"{row['aelf_epoch_s']:.0f} | {row['reference_epoch_s']:.0f} |"
        )
    lines.append("")
    lines.append(
        "aelf/reference: median img/s over median img/s; paired ratios: each repeat's aelf over the "
        "reference timed next to it (their spread shows how noisy the machine was)."
    )
    lines.append(
        "epoch s: the time of one epoch of the real training set (MNIST 60,000, CIFAR-10 50,000 images) at that rate."
    )
    return "\n".join(lines) + "\n"


def write_json(path: str | Path, result: dict) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
