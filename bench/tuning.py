"""CPU tuning study: aelf's step under thread counts, memory formats, torch.compile, bf16 autocast and
deterministic mode's NaN-fill.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from aelf.core import cpu_heap
from aelf.core.config import TrainConfig
from bench.harness import load_average, log_to_stderr, schedule
from bench.paths import AelfPath, synthetic_data, time_steps
from bench.peak import cpu_name
from bench.workloads import BATCH_SIZE, WORKLOADS, check_step, smoke_workload

# --------------------------------------------------------------------------------------------------------------
# CPU tuning: thread count, memory format, torch.compile and bf16 autocast for CNNb AT steps.


def tuning_configs(max_threads: int, compile_model: bool = True, bf16: bool = True) -> list[dict]:
    configs = []
    for threads in sorted({1, max_threads}):
        for channels_last in (False, True):
            configs.append(
                {"threads": threads, "channels_last": channels_last, "compile": False, "amp": "off", "fill": False}
            )
    if compile_model:
        configs.append({"threads": max_threads, "channels_last": True, "compile": True, "amp": "off", "fill": False})
    if bf16:
        configs.append({"threads": max_threads, "channels_last": True, "compile": False, "amp": "bf16", "fill": False})
    # What the trainer saves by turning off PyTorch's NaN-fill of every new tensor in deterministic mode.
    configs.append({"threads": max_threads, "channels_last": True, "compile": False, "amp": "off", "fill": True})
    return configs


def config_label(config: dict) -> str:
    parts = [
        f"{config['threads']} thread{'s' if config['threads'] > 1 else ''}",
        "channels_last" if config["channels_last"] else "contiguous",
    ]
    if config["compile"]:
        parts.append("torch.compile")
    if config["amp"] != "off":
        parts.append(f"autocast {config['amp']}")
    if config["fill"]:
        parts.append("deterministic mode's NaN-fill on (PyTorch's default)")
    return ", ".join(parts)


def run_tuning(
    device: str = "cpu",
    model: str = "cnnb-mnist",
    step: str = "at",
    steps: int | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    smoke: bool = False,
    compile_model: bool = True,
    bf16: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = log_to_stderr,
) -> dict:
    """aelf's training step under each setting of :func:`tuning_configs`, timed in turns; img/s medians.

    A compiled configuration's warm-up time (its first step compiles) is reported apart as ``first_step_s``.
    """
    device = torch.device(device)
    log = log or (lambda _message: None)
    check_step(step)
    workload = smoke_workload(WORKLOADS[model]) if smoke else WORKLOADS[model]
    n_timed, n_warmup, n_repeats = schedule(device, smoke, steps, warmup, repeats)
    n_warmup = max(1, n_warmup)
    batch_size = 32 if smoke else BATCH_SIZE
    max_threads = torch.get_num_threads()
    torch.manual_seed(seed)
    base = workload.build()
    x, y = synthetic_data(workload, batch_size * (n_warmup + n_repeats * n_timed), seed)
    load_before = load_average()
    entries = []
    # the whole study runs with the trainer's CPU heap setting (aelf.core.cpu_heap); its own effect: aelf bench
    # --no-retained-heap against aelf bench
    with cpu_heap.for_run(TrainConfig(), device) as retained:
        try:
            for config in tuning_configs(max_threads, compile_model, bf16):
                torch.set_num_threads(config["threads"])
                entry = {"config": config, "label": config_label(config), "img_s_repeats": []}
                try:
                    path = AelfPath(
                        step,
                        workload,
                        base,
                        x,
                        y,
                        device,
                        batch_size,
                        seed=seed,
                        channels_last=config["channels_last"],
                        compile_model=config["compile"],
                        autocast_dtype=torch.bfloat16 if config["amp"] == "bf16" else None,
                        fill_uninitialized_memory=config["fill"],
                    )
                    entry["first_step_s"] = time_steps(path, 1)
                    if n_warmup > 1:
                        time_steps(path, n_warmup - 1)
                    entry["path"] = path
                except Exception as err:  # a missing compiler toolchain, an unsupported op: reported, not fatal
                    entry["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
                    log(f"{entry['label']}: failed: {entry['error']}")
                entries.append(entry)
            for repeat in range(n_repeats):
                order = entries if repeat % 2 == 0 else entries[::-1]
                for entry in order:
                    if "path" not in entry:
                        continue
                    torch.set_num_threads(entry["config"]["threads"])
                    try:
                        entry["img_s_repeats"].append(n_timed * batch_size / time_steps(entry["path"], n_timed))
                    except Exception as err:
                        entry["error"] = f"{type(err).__name__}: {err}"
                        del entry["path"]
        finally:
            torch.set_num_threads(max_threads)
    results = []
    for entry in entries:
        entry.pop("path", None)
        if entry["img_s_repeats"]:
            entry["img_s"] = statistics.median(entry["img_s_repeats"])
            step_s = batch_size / entry["img_s"]
            entry["compile_s_estimate"] = entry["first_step_s"] - step_s if entry["config"]["compile"] else None
            log(f"{entry['label']}: {entry['img_s']:.2f} img/s (first step {entry['first_step_s']:.1f} s)")
        results.append(entry)
    return {
        "device": str(device),
        "retained_cpu_heap": retained,
        "device_name": cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "model": model,
        "label": workload.label,
        "step": step,
        "K": workload.n_steps,
        "batch_size": batch_size,
        "warmup_steps": n_warmup,
        "timed_steps": n_timed,
        "repeats": n_repeats,
        "smoke": smoke,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "results": results,
    }


def format_tuning(result: dict) -> str:
    k = f" (K={result['K']})" if result["step"] != "st" else ""
    lines = [
        f"aelf bench --tuning: {result['step']}{k} on "
        f"{result['model']} ({result['label']}), "
        f"{result['device']} ({result['device_name']}), torch {result['torch']}",
        f"batch {result['batch_size']}, {result['warmup_steps']} warm-up + {result['repeats']} x "
        f"{result['timed_steps']} timed steps per setting, in turns, median; load average before "
        f"{result['load_average_before']}, after {result['load_average_after']}",
        "",
        "| setting | img/s | vs 2 threads, channels_last | first step s (compile included) |",
        "|---|---|---|---|",
    ]
    reference = next(
        (
            e.get("img_s")
            for e in result["results"]
            if e["config"]
            == {
                "threads": max(r["config"]["threads"] for r in result["results"]),
                "channels_last": True,
                "compile": False,
                "amp": "off",
                "fill": False,
            }
        ),
        None,
    )
    for entry in result["results"]:
        if "img_s" not in entry:
            lines.append(f"| {entry['label']} | failed: {entry.get('error', '?')} | | |")
            continue
        relative = f"{entry['img_s'] / reference:.2f}x" if reference else "n/a"
        lines.append(f"| {entry['label']} | {entry['img_s']:.2f} | {relative} | {entry['first_step_s']:.1f} |")
    return "\n".join(lines) + "\n"
