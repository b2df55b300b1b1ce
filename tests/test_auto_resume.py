"""Issue 15: one command that starts or continues a run (--resume-if-exists), under torchrun restarts too, and
resuming on another number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from aelf.apps.cli import main
from aelf.core.checkpoint import latest_checkpoint, read_weights
from aelf.core.run_folder import WEIGHTS

HELPERS = Path(__file__).parent / "helpers"
# 128 images / batch 32 = 4 steps an epoch, 2 epochs, a checkpoint every 2 steps: step 5 is mid-epoch 2, after the
# checkpoint of step 4.
TINY = [
    "--epochs",
    "2",
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
    "train.checkpoint_every=2",
    "--set",
    "eval.attack.n_steps=1",
]
AT = [
    "--method",
    "at",
    "--set",
    "method.attack.n_steps=1",
    "--set",
    "method.attack.step_size=0.3",
    "--set",
    "method.attack.random_start=true",
]
ST = ["--method", "st"]


def run(command: list[str], env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)


def torchrun(*args: str, restarts: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        f"--max-restarts={restarts}",
        "--monitor-interval=0.5",
    ]
    return run([*launcher, *args], env)


def single(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, *args], env)


def crash(step: int, *args: str) -> list[str]:
    return [str(HELPERS / "crash_driver.py"), str(step), "KILL", "train", *args]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_weights(run_dir / WEIGHTS)


def epochs_written(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_torchrun_restart_after_a_rank_is_killed_continues_to_the_uninterrupted_weights(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "run"
    done = torchrun("-m", "aelf", "train", "--out", str(reference), "--resume-if-exists", *AT, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    done = torchrun(
        *crash(5, "--out", str(out), "--resume-if-exists", *AT, *TINY),
        restarts=1,
        env={"CRASH_RANK": "1", "CRASH_ONCE": str(tmp_path / "crashed-once")},
    )
    assert (tmp_path / "crashed-once").exists(), "rank 1 must really have been killed"
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SIGKILL" in done.stderr or "Signals.SIGKILL" in done.stderr or "-9" in done.stderr, done.stderr[-2000:]
    ours, theirs = weights(out), weights(reference)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs), "bit-for-bit the uninterrupted run's"
    assert (out / WEIGHTS).read_bytes() == (reference / WEIGHTS).read_bytes()
    assert epochs_written(out) == [1, 2]


def test_resume_if_exists_starts_continues_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "run"
    settings = ["train", "--out", str(out), "--resume-if-exists", *ST, *TINY]
    assert main(settings) == 0, capsys.readouterr().err
    first = (out / WEIGHTS).read_bytes()
    assert main(settings) == 0, "a finished run: the same command again is a no-op"
    assert (out / WEIGHTS).read_bytes() == first and epochs_written(out) == [1, 2]
    capsys.readouterr()

    assert main([*settings, "--set", "train.lr=0.05"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lr: 0.1 -> 0.05" in err and "Traceback" not in err
    assert main([*settings, "--overwrite"]) == 2
    assert "without --resume or --overwrite" in capsys.readouterr().err
    assert (out / WEIGHTS).read_bytes() == first, "nothing was touched"


def max_difference(run_dir: Path, reference: Path) -> float:
    ours, theirs = weights(run_dir), weights(reference)
    floats = [key for key in theirs if theirs[key].is_floating_point()]
    return max(float((ours[key].float() - theirs[key].float()).abs().max()) for key in floats)


def test_a_run_resumed_on_another_number_of_processes_continues_where_it_stopped(tmp_path):
    """2 -> 1 and 1 -> 2 processes, killed at step 5 of 8 and resumed from the checkpoint of step 4. ST has no
    randomness, so the resumed runs may differ from one process's run only as much as a run on two processes does."""
    settings = [*ST, *TINY, "--set", "train.lr=0.01"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert single("-m", "aelf", "train", "--out", str(one), *settings).returncode == 0
    assert torchrun("-m", "aelf", "train", "--out", str(two), *settings).returncode == 0
    # Two ranks sum float32 gradients in another order than one process, and 8 steps amplify that: the scale of
    # "the same run" across process counts, measured here rather than assumed.
    rounding = max_difference(two, one)

    two_to_one = tmp_path / "two-to-one"
    killed = torchrun(*crash(5, "--out", str(two_to_one), *settings), env={"CRASH_RANK": "0"})
    assert killed.returncode != 0 and not (two_to_one / WEIGHTS).exists()
    assert latest_checkpoint(two_to_one).name == "step-00000004"
    first_epoch = (two_to_one / "metrics.jsonl").read_text()
    resumed = single("-m", "aelf", "train", "--resume", str(two_to_one), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "written by 2 process(es) and resumes on 1" in resumed.stderr
    assert (two_to_one / "metrics.jsonl").read_text().startswith(first_epoch), "epoch 1 is kept, not recomputed"

    one_to_two = tmp_path / "one-to-two"
    killed = single(*crash(5, "--out", str(one_to_two), *settings))
    assert killed.returncode == -9 and latest_checkpoint(one_to_two).name == "step-00000004"
    resumed = torchrun("-m", "aelf", "train", "--resume", str(one_to_two), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    for run_dir in (two_to_one, one_to_two):
        assert epochs_written(run_dir) == [1, 2]
        assert max_difference(run_dir, one) <= 2 * rounding + 1e-6, run_dir


def test_resuming_on_a_number_of_processes_that_does_not_divide_the_batch_is_refused(tmp_path):
    out, batch_size = tmp_path / "run", 33
    tiny = [arg if arg != "train.batch_size=32" else f"train.batch_size={batch_size}" for arg in TINY]
    killed = single(*crash(3, "--out", str(out), *ST, *tiny))
    assert killed.returncode == -9
    resumed = torchrun("-m", "aelf", "train", "--resume", str(out), "--no-progress")
    assert resumed.returncode != 0
    assert f"train.batch_size {batch_size} must be divisible by the 2 processes" in resumed.stderr
