"""Issue 15: byte-identical files, verified checkpoints, one writer per run folder."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch

from aelf.apps.cli import main
from aelf.core.checkpoint import MANIFEST, checkpoint_folders, latest_checkpoint, read_weights
from aelf.core.errors import CheckpointError
from aelf.core.run_folder import CHECKPOINTS, LOCK, WEIGHTS
from aelf.core.runlock import RunLockedError, run_lock
from aelf.core.serialize import decode_tree, encode_tree, safetensors_bytes
from aelf.core.train import train

from conftest import tiny_config

# AT with a random start (the RNG states matter), 4 steps an epoch, 2 epochs, a checkpoint every 3 steps: the kept
# checkpoints are steps 6 and 8.
CONFIG = tiny_config("at", train={"epochs": 2, "checkpoint_every": 3})
CONFIG = replace(CONFIG, method=replace(CONFIG.method, attack=replace(CONFIG.method.attack, random_start=True)))
CLI_TINY = [
    "--method",
    "at",
    "--epochs",
    "2",
    "--no-progress",
    "--set",
    "data.train_limit=256",
    "--set",
    "data.test_limit=100",
    "--set",
    "model.width=0.125",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.lr_milestones=[]",
    "--set",
    "train.checkpoint_every=3",
    "--set",
    "eval.batch_size=100",
    "--set",
    "method.attack.eps=0.3",
    "--set",
    "method.attack.n_steps=2",
    "--set",
    "method.attack.step_size=0.15",
    "--set",
    "method.attack.random_start=true",
]


def digests(run: Path) -> dict[str, str]:
    """sha256 of the final weights, the run's manifest and every file of the kept checkpoints."""
    paths = [run / WEIGHTS, run / MANIFEST, *sorted((run / CHECKPOINTS).glob("step-*/*"))]
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def flip_bits(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x11
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return train(CONFIG, tmp_path_factory.mktemp("finished") / "run", progress=False)


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target, symlinks=True)
    return target


def test_safetensors_bytes_are_the_librarys_format_and_independent_of_metadata_order():
    tensors = {"w": torch.randn(3, 2), "b": torch.arange(5), "flag": torch.tensor([True]), "h": torch.ones(2).half()}
    ours = safetensors_bytes(tensors, {"epochs": "3"})
    assert ours == safetensors.torch.save(tensors, metadata={"epochs": "3"}), "the library's own layout"
    loaded = safetensors.torch.load(ours)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    many = {f"key{i}": str(i) for i in range(20)}
    assert safetensors_bytes(tensors, many) == safetensors_bytes(tensors, dict(reversed(list(many.items()))))
    strided = {"w": torch.randn(2, 3).t()}  # not contiguous: written in logical order
    assert torch.equal(safetensors.torch.load(safetensors_bytes(strided))["w"], strided["w"])


def test_a_state_round_trips_through_json_and_tensors_with_its_types():
    state = {
        "step": 3,
        "rng": (3, tuple(range(5)), None),
        "optimizer": {"state": {0: {"m": torch.ones(2)}}},
        "history": [{"loss": 0.1 + 0.2, "nan": float("nan")}],
        "__odd": "key",
    }
    document, tensors = encode_tree(state)
    back = decode_tree(document, tensors)
    assert back["rng"] == (3, tuple(range(5)), None) and list(back["optimizer"]["state"]) == [0]
    assert torch.equal(back["optimizer"]["state"][0]["m"], torch.ones(2))
    assert back["history"][0]["loss"] == 0.1 + 0.2 and back["history"][0]["nan"] != back["history"][0]["nan"]
    assert back["__odd"] == "key"


def test_the_same_run_twice_in_two_processes_gives_byte_identical_files(tmp_path, finished):
    again = tmp_path / "again"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "aelf", "train", "--out", str(again), *CLI_TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours = digests(again)
    assert len(ours) == 2 + 2 * 4 and ours == digests(finished)


def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_resumes_to_the_same_weights(
    tmp_path, finished, caplog
):
    run = copy_of(finished, tmp_path)
    newest, previous = checkpoint_folders(run / CHECKPOINTS)
    flip_bits(newest / WEIGHTS)
    (run / WEIGHTS).unlink()
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(run) == previous
    assert f"checkpoint {newest.name} is not usable" in caplog.text and "damaged" in caplog.text
    train(None, run, resume=True, progress=False)
    assert (run / WEIGHTS).read_bytes() == (finished / WEIGHTS).read_bytes(), "replayed from the previous one"

    for folder in checkpoint_folders(run / CHECKPOINTS):
        flip_bits(folder / "state.safetensors")
    with pytest.raises(CheckpointError, match="no usable checkpoint") as raised:
        latest_checkpoint(run)
    assert str(run / CHECKPOINTS / "step-00000006" / "state.safetensors") in str(raised.value)


def test_eval_of_a_run_with_damaged_weights_fails_naming_the_file(tmp_path, finished, capsys):
    run = copy_of(finished, tmp_path)
    flip_bits(run / WEIGHTS)
    assert main(["eval", str(run), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / WEIGHTS}: damaged" in err and "Traceback" not in err
    with pytest.raises(CheckpointError, match="damaged"):
        read_weights(run / WEIGHTS)


def test_staging_leftovers_are_cleaned_and_symlinked_checkpoints_refused(tmp_path, finished, capsys):
    run = copy_of(finished, tmp_path)
    newest = checkpoint_folders(run / CHECKPOINTS)[0]
    staging = run / CHECKPOINTS / ".step-00000009.k2j4"
    shutil.copytree(newest, staging)
    temporary = [run / ".model.safetensors.x1.tmp", run / CHECKPOINTS / ".latest.y2.tmp"]
    for path in temporary:
        path.write_bytes(b"half")
    train(None, run, resume=True, progress=False)
    assert not staging.exists() and not any(path.exists() for path in temporary)

    elsewhere = tmp_path / "elsewhere"
    shutil.move(newest, elsewhere)
    newest.symlink_to(elsewhere, target_is_directory=True)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert f"{newest}: is a symbolic link" in capsys.readouterr().err

    newest.unlink()
    shutil.move(run / CHECKPOINTS, tmp_path / "moved")
    (run / CHECKPOINTS).symlink_to(tmp_path / "moved", target_is_directory=True)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert f"{run / CHECKPOINTS}: is a symbolic link" in capsys.readouterr().err


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(out / LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
            "print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--out", str(out), *CLI_TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is being written by process {holder.pid}" in err and str(out / LOCK) in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK], "nothing written"
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--out", str(out), *CLI_TINY, "--set", "train.epochs=1"]) == 0
    assert f"left by process {holder.pid}, which is no longer running; taking it over" in caplog.text
    assert (out / WEIGHTS).is_file() and not (out / LOCK).exists(), "a finished run releases its lock file"

    with run_lock(out):  # the same holds within one process: each open of the lock file is its own holder
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            train(None, out, resume=True, progress=False)
