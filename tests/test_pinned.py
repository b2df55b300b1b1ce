"""Issue 15: a tiny deterministic run whose final numbers are pinned, per kind of CPU.

Every other test compares aelf with itself (resumed against uninterrupted, two ranks against one); this one compares
it with numbers recorded earlier, so a change that moves every result the same way (a new default, a changed kernel,
a reordered sum) is seen. Kernels differ between CPU kinds (oneDNN and ATen pick AVX-512 or AVX2 code paths, which
round differently), so the numbers are kept per kind in ``tests/pinned/<kind>.json``. With no file for this kind the
test is skipped, saying how to record one:

    AELF_RECORD_PINNED=1 .venv/bin/python -m pytest tests/test_pinned.py
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 AELF_RECORD_PINNED=1 .venv/bin/python -m pytest \
        tests/test_pinned.py

(the second records the AVX2 path on an AVX-512 machine: the kind below follows those two variables). The run uses
two threads whatever the machine has: oneDNN splits its sums by thread count, so one thread (OMP_NUM_THREADS=1, as
clusters often set) or sixteen would otherwise round differently from the recorded two.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
import torch

from aelf.core.checkpoint import read_weights
from aelf.core.memory_format import onednn_uses_avx2_path
from aelf.core.run_folder import WEIGHTS
from aelf.core.train import train

from conftest import tiny_config, torch_threads

PINNED = Path(__file__).parent / "pinned"
# The same kind of CPU runs the same kernels, so the numbers repeat to the last bit; the tolerances leave room for
# another CPU model of the same kind (other cache sizes can change oneDNN's blocking and so the order of float sums)
# and are far below any real change: a different step, schedule or attack moves the loss by >1e-2 and the weights'
# norms by >1e-3.
THREADS = 2  # the thread count the pinned files were recorded with
LOSS_TOLERANCE = 1e-4  # absolute, on losses (metrics.jsonl rounds to 1e-6)
ACCURACY_TOLERANCE = 0.011  # absolute, on accuracies as fractions: one image of the 100 test images
NORM_TOLERANCE = 1e-4  # relative, on the final weights' l2 and l1 norms


def cpu_kind() -> str:
    """avx512 or avx2 on x86 (as :mod:`aelf.core.memory_format` decides, so the two variables above count), else
    the machine's architecture."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        return "avx2" if onednn_uses_avx2_path() else "avx512"
    return platform.machine().lower()


def measure(tmp_path: Path) -> dict:
    """AT (PGD(0.3, 2, 0.15)) for 2 epochs of 4 steps on 256 mnist5k digits, CNNb at width 1/8, on CPU."""
    config = tiny_config("at", train={"epochs": 2, "device": "cpu"})
    with torch_threads(THREADS):
        run = train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    weights = read_weights(run / WEIGHTS)
    floats = torch.cat([value.flatten().double() for value in weights.values() if value.is_floating_point()])
    return {
        "losses": [row["loss"] for row in rows],
        "adv_accs": [row["adv_acc"] for row in rows],
        "test_nat_accs": [row["test_nat_acc"] for row in rows],
        "weights_l2": float(floats.norm()),
        "weights_l1": float(floats.abs().sum()),
    }


def test_a_tiny_run_gives_the_pinned_numbers_of_this_kind_of_cpu(tmp_path):
    kind = cpu_kind()
    path = PINNED / f"{kind}.json"
    measured = measure(tmp_path)
    if os.environ.get("AELF_RECORD_PINNED") == "1":
        PINNED.mkdir(exist_ok=True)
        record = {
            "cpu_kind": kind,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            **measured,
        }
        path.write_text(json.dumps(record, indent=2) + "\n")
        return
    if not path.is_file():
        pytest.skip(
            f"no pinned numbers for CPU kind {kind!r}: record them with AELF_RECORD_PINNED=1 (see "
            f"{Path(__file__).name}) and commit {path.relative_to(PINNED.parent.parent)}"
        )
    pinned = json.loads(path.read_text())
    assert measured["losses"] == pytest.approx(pinned["losses"], abs=LOSS_TOLERANCE)
    assert measured["adv_accs"] == pytest.approx(pinned["adv_accs"], abs=ACCURACY_TOLERANCE)
    assert measured["test_nat_accs"] == pytest.approx(pinned["test_nat_accs"], abs=ACCURACY_TOLERANCE)
    for key in ("weights_l2", "weights_l1"):
        assert measured[key] == pytest.approx(pinned[key], rel=NORM_TOLERANCE), key
