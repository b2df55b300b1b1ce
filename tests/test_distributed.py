"""torchrun + DistributedDataParallel on CPU (gloo), 2 processes on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aelf.core.accuracy import accuracy, correct_mask
from aelf.core.attacks import PGD, TradesKL
from aelf.core.config import TrainConfig
from aelf.core.methods import METHODS
from aelf.core.models import CNNb
from aelf.core.run_folder import WEIGHTS
from aelf.core.train import evaluate_natural, make_optimizer, train_step

HELPERS = Path(__file__).parent / "helpers"
# One step at lr 0.1: float32 sums in another order (two half-batch reductions instead of one) move parameters by
# ~1e-7; 1e-5 is far below any real difference (a wrong shard or unsynchronised BatchNorm moves them by ~1e-2).
TOLERANCE = 1e-5


def torchrun(*args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_outputs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(HELPERS / "ddp_worker.py"), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.rand(128, 1, 32, 32, generator=generator), torch.randint(0, 10, (128,), generator=generator)


def one_process_step(name: str) -> dict[str, torch.Tensor]:
    """The same step as the worker's two ranks, taken by one process on all 128 images."""
    cls = METHODS[name]
    attack = TradesKL(eps=0.3, n_steps=2, step_size=0.15, init_std=0.0) if name == "trades" else PGD(0.3, 2, 0.15)
    method = cls(attack=attack) if "attack" in cls.__dataclass_fields__ else cls()
    torch.manual_seed(0)
    model = CNNb(width=0.125)
    optimizer = make_optimizer(method, model, TrainConfig())
    x, y = global_batch()
    if "adv_fraction" in cls.__dataclass_fields__:
        # Each rank attacks the second half of its own 64 images; in one process the same images must play the same
        # roles: natural = the first halves of both shards, adversarial = their second halves.
        order = torch.cat([torch.arange(0, 32), torch.arange(64, 96), torch.arange(32, 64), torch.arange(96, 128)])
        x, y = x[order], y[order]
    train_step(method, model, optimizer, x, y)
    return model.state_dict()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_ranks_of_64_step_like_one_process_of_128(ddp_outputs, name):
    reference = one_process_step(name)
    ranks = [torch.load(ddp_outputs / f"{name}-rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, expected in reference.items():
        for rank, state in enumerate(ranks):
            assert torch.allclose(state[key].float(), expected.float(), atol=TOLERANCE, rtol=0), f"rank {rank} {key}"
    for key in reference:
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key} differs between ranks"


def test_a_frozen_head_stays_frozen_and_equal_on_every_rank(ddp_outputs):
    torch.manual_seed(0)
    initial = CNNb(width=0.125).state_dict()
    for rank in (0, 1):
        state = torch.load(ddp_outputs / f"aelfs-rank{rank}.pt", weights_only=True)
        assert torch.equal(state["head.weight"], initial["head.weight"])
        assert torch.equal(state["head.bias"], initial["head.bias"])


def test_distributed_evaluation_counts_every_image_once(ddp_outputs):
    saved = torch.load(ddp_outputs / "eval.pt", weights_only=True)
    assert saved["seen"].tolist() == [1] * 101
    x, y = global_batch()
    torch.manual_seed(0)
    model = CNNb(width=0.125).eval()
    assert saved["natural"] == evaluate_natural(model, x[:101], y[:101], batch_size=16)
    assert saved["attacked"] == pytest.approx(accuracy(model, x[:101], y[:101], PGD(0.3, 1, 0.3), batch_size=16))
    # Per-image outcomes come back in the order of the images, as one process gives them (paired comparisons).
    alone = correct_mask(model, x[:101], y[:101], PGD(0.3, 1, 0.3), batch_size=16)
    assert torch.equal(saved["mask"], alone) and 0 < int(alone.sum()) < 101


TINY_RUN = [
    "--method",
    "at",
    "--no-progress",
    "--set",
    "data.train_limit=128",
    "--set",
    "data.test_limit=40",
    "--set",
    "model.width=0.125",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.lr_milestones=[]",
    "--set",
    "train.device=cpu",
    "--set",
    "method.attack.n_steps=1",
    "--set",
    "method.attack.step_size=0.3",
    "--set",
    "eval.attack.n_steps=1",
]


def test_torchrun_trains_writes_once_and_evaluates(tmp_path):
    out = tmp_path / "run"
    done = torchrun("-m", "aelf", "train", "--out", str(out), "--epochs", "2", *TINY_RUN)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished:") == 1, "only rank 0 prints"
    assert (out / WEIGHTS).is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 2
    evaluated = torchrun("-m", "aelf", "eval", str(out), "--json", "--no-progress", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert evaluated.stdout.count('"natural"') == 1


def test_a_rank_killed_mid_run_ends_the_others_with_a_clear_message(tmp_path):
    start = time.monotonic()
    done = torchrun(
        str(HELPERS / "crash_driver.py"),
        "3",
        "KILL",
        "train",
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "20",
        *TINY_RUN,
        env={"CRASH_RANK": "1"},
        timeout=180,
    )
    assert done.returncode != 0
    assert time.monotonic() - start < 150, "the surviving rank must not hang"
    assert "rank      : 1" in done.stderr and "SIGKILL" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "run" / WEIGHTS).exists()


def test_a_rank_that_stops_with_an_error_prints_it_and_ends_the_job():
    start = time.monotonic()
    done = torchrun(str(HELPERS / "rank_error_driver.py"), timeout=180)
    assert time.monotonic() - start < 120, "neither rank may wait for the other at the way out"
    assert done.returncode != 0
    assert "aelf: error: rank 1 cannot read its input" in done.stderr, done.stderr[-2000:]


def test_torchrun_reproduce_trains_each_run_once_and_writes_one_table(tmp_path):
    tiny = ["data.train_limit=32", "data.test_limit=10", "train.epochs=1", "train.batch_size=16", "train.device=cpu"]
    done = torchrun(
        "-m",
        "aelf",
        "reproduce",
        "fig3",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--device",
        "cpu",
        *[part for setting in tiny for part in ("--set", setting)],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("# Fig. 3") == 1
    assert (tmp_path / "results.json").is_file() and (tmp_path / "fig3.png").is_file()
    assert all((tmp_path / key / WEIGHTS).is_file() for key in ("st", "at"))


def test_torchrun_attention_metrics_count_every_image_once(tmp_path, trained_st_run):
    from aelf.workflows.attention.metrics import metrics_for_runs

    out = tmp_path / "metrics"
    done = torchrun(
        "-m",
        "aelf",
        "attention",
        str(trained_st_run),
        "--metrics",
        "--n-examples",
        "21",
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Attention breadth") == 1
    sharded = json.loads((out / "attention-metrics.json").read_text())["models"]["st"]
    single = metrics_for_runs([trained_st_run], n_examples=21, device="cpu")["models"]["st"]
    assert sharded["n_images"] == single["n_images"] == 21
    for name, entry in single.items():
        if isinstance(entry, dict):
            assert sharded[name]["mean"] == pytest.approx(entry["mean"], abs=1e-6), name
