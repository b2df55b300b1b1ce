"""What a results file records of time and machine: each run's training and evaluation seconds, kept from the
invocation that did the work, so that a rerun that reuses everything still states what the study cost.

A run's training seconds are the sum of its epochs' ``epoch_time_s`` in ``metrics.jsonl`` (every session of a resumed
run included); its evaluation seconds are stored in its evaluation cache when it is measured. Both stay ``None`` where
they were not recorded (an evaluation cached before the seconds were kept).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from aelf.core.errors import CheckpointError
from aelf.core.fileio import read_json
from aelf.core.run_folder import METRICS


def run_timing(run_dir: Path, eval_cache: str, evaluates: str | None = None) -> dict:
    """``{"train_s", "epochs", "steps", "eval_s"}`` of a finished run folder; ``evaluates``: the key of the run whose
    folder this is, when the run evaluates another's weights (its training is counted there, not here)."""
    if evaluates is not None:
        return {**run_timing(run_dir, eval_cache), "train_s": 0.0, "evaluates": evaluates}
    rows = []
    try:
        rows = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        pass
    times = [row.get("epoch_time_s") for row in rows]
    try:
        cached = read_json(run_dir / eval_cache)
    except CheckpointError:
        cached = None
    eval_s = cached.get("seconds") if isinstance(cached, dict) else None
    return {
        "train_s": round(sum(times), 1) if rows and all(isinstance(t, int | float) for t in times) else None,
        "epochs": len(rows),
        "steps": rows[-1].get("step") if rows else None,
        "eval_s": eval_s if isinstance(eval_s, int | float) else None,
    }


def total_seconds(timings: dict) -> dict:
    """The recorded seconds of every run and seed summed (``{run key: {seed: timing}}``), and how many runs' times
    were not recorded."""
    train = evaluation = 0.0
    unknown = 0
    for runs in timings.values():
        for timing in runs.values():
            if timing is None or timing.get("train_s") is None or timing.get("eval_s") is None:
                unknown += 1
            if timing:
                train += timing.get("train_s") or 0.0
                evaluation += timing.get("eval_s") or 0.0
    return {"train_s": round(train, 1), "eval_s": round(evaluation, 1), "runs_not_recorded": unknown}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """The machine this invocation ran on, as a results file records it."""
    found = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    return found
