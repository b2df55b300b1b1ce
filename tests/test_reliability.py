"""Issue 3: resume exactly after a crash, lose nothing, trust no file."""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aelf.apps.cli import main
from aelf.core.checkpoint import (
    LATEST,
    LEGACY_STATE,
    MANIFEST,
    STATE,
    STATE_TENSORS,
    latest_checkpoint,
    read_state,
    read_weights,
    save_checkpoint,
)
from aelf.core.errors import CheckpointError, DivergenceError
from aelf.core.fileio import atomic_write, write_text
from aelf.core.models import CNNb
from aelf.core.run_folder import LOCK, WEIGHTS

from conftest import stopped_run, tiny_config, trainer

checkpoint_module = importlib.import_module("aelf.core.checkpoint")
fileio_module = importlib.import_module("aelf.core.fileio")
DRIVER = Path(__file__).parent / "helpers" / "crash_driver.py"
# 256 images / batch 32 = 8 steps per epoch, 3 epochs; a checkpoint every 3 steps and at each epoch end.
# AT with a random start, so that resuming must restore the RNG state too.
RUN_ARGS = [
    "--method",
    "at",
    "--epochs",
    "3",
    "--no-progress",
    "--set",
    "data.train_limit=256",
    "--set",
    "data.test_limit=50",
    "--set",
    "model.width=0.125",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.lr_milestones=[2]",
    "--set",
    "train.checkpoint_every=3",
    "--set",
    "method.attack.n_steps=2",
    "--set",
    "method.attack.step_size=0.15",
    "--set",
    "method.attack.random_start=true",
]


def drive(signal_at_step: int, signame: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (a real crash), signalling itself right after step ``signal_at_step``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, str(DRIVER), str(signal_at_step), signame, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def metrics_without_times(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in rows]


def assert_same_run(run: Path, reference: Path) -> None:
    ours, theirs = read_weights(run / WEIGHTS), read_weights(reference / WEIGHTS)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), f"{key} differs from the uninterrupted run"
    assert metrics_without_times(run) == metrics_without_times(reference)


def file_digests(run: Path) -> dict[str, str]:
    """sha256 of the final weights and of every file of the kept checkpoints."""
    paths = [run / WEIGHTS, *sorted((run / "checkpoints").glob("step-*/*"))]
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = drive(0, "KILL", "train", "--out", str(out), *RUN_ARGS)
    assert done.returncode == 0, done.stderr
    return out


def test_sigkill_mid_epoch_then_resume_is_bit_for_bit_the_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "run"
    # Step 14 is step 6 of epoch 2; the newest checkpoint then is step 12, in the middle of that epoch.
    killed = drive(14, "KILL", "train", "--out", str(out), *RUN_ARGS)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / WEIGHTS).exists(), "the run must really have been cut short"
    assert latest_checkpoint(out).name == "step-00000012"
    assert read_state(latest_checkpoint(out))["step_in_epoch"] == 4, "a mid-epoch checkpoint"
    assert (out / LOCK).is_file(), "SIGKILL leaves the lock file, which the next writer takes over"
    resumed = drive(0, "KILL", "train", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "which is no longer running; taking it over" in resumed.stderr
    assert_same_run(out, uninterrupted)
    ours, theirs = file_digests(out), file_digests(uninterrupted)
    assert len(ours) == 1 + 2 * 4 and ours == theirs, "weights and checkpoints byte-identical (equal sha256)"


@pytest.mark.parametrize("signame", ["TERM", "INT"])
def test_sigterm_and_sigint_save_a_checkpoint_and_the_run_resumes_exactly(tmp_path, uninterrupted, signame):
    out = tmp_path / "run"
    stopped = drive(13, signame, "train", "--out", str(out), *RUN_ARGS)
    assert stopped.returncode == 128 + getattr(signal, f"SIG{signame}"), stopped.stderr
    assert "checkpoint saved at step 13" in stopped.stderr and "--resume" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert latest_checkpoint(out).name == "step-00000013", "the signal's step is saved, not an older one"
    assert not (out / LOCK).exists(), "a stopped run releases its lock file"
    resumed = drive(0, "KILL", "train", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "taking it over" not in resumed.stderr, "no warning about a dead process after a clean stop"
    assert f"resuming {out} from step 13 of 24 (epoch 2 of 3, step-00000013)" in resumed.stdout
    assert not (out / LOCK).exists()
    assert_same_run(out, uninterrupted)


def test_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    original = trainer.train_step
    calls = []

    def diverge_at_step_6(method, model, optimizer, x, y, *rest):
        calls.append(1)
        if len(calls) == 6:
            x = x * float("nan")  # what an exploding step produces: NaN activations, loss and then weights
        return original(method, model, optimizer, x, y, *rest)

    monkeypatch.setattr(trainer, "train_step", diverge_at_step_6)
    out = tmp_path / "run"
    config = tiny_config("st", train={"checkpoint_every": 4, "epochs": 2})
    with pytest.raises(DivergenceError, match="non-finite loss at step 6"):
        trainer.train(config, out, progress=False)
    assert latest_checkpoint(out).name == "step-00000004", "nothing after the bad step is saved"
    saved = read_weights(latest_checkpoint(out) / WEIGHTS)
    assert all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())
    assert not (out / WEIGHTS).exists()

    calls.clear()
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "cli"),
            "--epochs",
            "2",
            "--no-progress",
            "--set",
            "data.train_limit=256",
            "--set",
            "model.width=0.125",
            "--set",
            "train.batch_size=64",
            "--set",
            "train.checkpoint_every=4",
            "--set",
            "train.lr_milestones=[]",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite loss at step 6" in err


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "file.txt"
    write_text(target, "old")

    def write_half_then_fail(tmp: Path) -> None:
        tmp.write_text("ne")
        raise RuntimeError("crash in the middle of a write")

    with pytest.raises(RuntimeError):
        atomic_write(target, write_half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"], "no temporary file is left behind"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_and_checkpoints_have_the_usual_permissions(tmp_path, umask):
    """Atomic writes go through private temporary names; what they leave must read like any file the user writes,
    so that a colleague on a shared cluster can read a run (and nothing more open than the umask allows)."""
    old = os.umask(umask)
    try:
        write_text(tmp_path / "metrics.md", "x")
        folder = save_checkpoint(tmp_path, CNNb(width=0.125), {"step": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.md").stat().st_mode & 0o777 == 0o666 & ~umask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {f.stat().st_mode & 0o777 for f in folder.iterdir()} == {0o666 & ~umask}


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = CNNb(width=0.125)
    first = save_checkpoint(tmp_path, model, {"step": 1, "note": "first"})
    weights_before = read_weights(first / WEIGHTS)
    original = checkpoint_module.write_bytes

    def state_until_disk_full(path, data):
        if Path(path).name != STATE_TENSORS:
            return original(path, data)
        Path(path).write_bytes(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint_module, "write_bytes", state_until_disk_full)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(OSError) as raised:
        save_checkpoint(tmp_path, model, {"step": 2, "note": "second"})
    assert raised.value.errno == errno.ENOSPC
    assert latest_checkpoint(tmp_path) == first
    assert read_state(first)["note"] == "first"
    assert all(torch.equal(v, weights_before[k]) for k, v in read_weights(first / WEIGHTS).items())
    leftovers = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert leftovers == [LATEST, first.name], "no half-written checkpoint folder is left"


def test_disk_full_on_the_cli_is_one_clear_line(tmp_path, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "save_checkpoint", no_space)
    tiny = ["--set", "data.train_limit=128", "--set", "model.width=0.125", "--set", "train.batch_size=64"]
    code = main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress", *tiny])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device" in err and "Traceback" not in err
    assert "no checkpoint of this run had been written yet" in err and "is kept" not in err, "none exists"


def disk_full_for(monkeypatch, name: str) -> None:
    """Every atomic write of a file called ``name`` fails as on a full disk."""
    original = fileio_module._atomic_write

    def write(path, write_to):
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, write_to)

    monkeypatch.setattr(fileio_module, "_atomic_write", write)


def test_a_full_disk_after_the_first_checkpoint_names_the_checkpoint_kept(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    tiny = ["--set", "data.train_limit=128", "--set", "model.width=0.125", "--set", "train.batch_size=64"]
    args = ["train", "--out", str(out), "--epochs", "2", "--no-progress", "--set", "train.checkpoint_every=3", *tiny]
    disk_full_for(monkeypatch, "metrics.jsonl")  # written after the first epoch's checkpoint
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"could not write {out / 'metrics.jsonl'} (no space left on device)" in err
    assert f"the checkpoint {out / 'checkpoints' / 'step-00000002'} is kept" in err
    assert f"aelf train --resume {out}" in err


def test_read_only_commands_print_their_result_before_a_write_fails(trained_st_run, tmp_path, monkeypatch, capsys):
    """aelf eval once computed for 19 s and printed nothing when eval.json could not be written, and every command
    claimed a "previous checkpoint" it never writes."""
    run = tmp_path / "run"
    shutil.copytree(trained_st_run, run)
    disk_full_for(monkeypatch, "eval.json")
    assert main(["eval", str(run), "--json", "--no-progress", "--set", "eval.attack.n_steps=1"]) == 1
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) == {"natural", "adversarial"}, "the result is printed first"
    assert captured.err.count("\n") == 1 and "checkpoint" not in captured.err
    assert f"could not write {run / 'eval.json'} (no space left on device)" in captured.err
    assert "the result above is complete" in captured.err and not (run / "eval.json").exists()

    disk_full_for(monkeypatch, "MODEL_CARD.md")
    assert main(["card", str(run), "--print"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("# Model card: run") and "the card above is complete" in captured.err
    assert f"could not write {run / 'MODEL_CARD.md'}" in captured.err and "checkpoint" not in captured.err


class PlantedPayload:
    """Unpickling this runs ``open(path, 'w')``: the classic malicious-checkpoint trick."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_run_in_the_old_pickle_format_is_refused_saying_what_to_do_and_runs_no_code(tmp_path, uninterrupted, capsys):
    victim = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "meta.json"):
        (run / name).write_bytes((uninterrupted / name).read_bytes())
    folder = run / "checkpoints" / "step-00000003"
    folder.mkdir(parents=True)
    (folder / WEIGHTS).write_bytes((latest_checkpoint(uninterrupted) / WEIGHTS).read_bytes())
    payload = {"step": 3, "evil": PlantedPayload(str(victim))}
    torch.save(payload, folder / LEGACY_STATE, _use_new_zipfile_serialization=True)  # the old pickled format, planted
    (run / "checkpoints" / LATEST).write_text("step-00000003\n")

    with pytest.raises(CheckpointError, match="in the old pickled format"):
        read_state(folder)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(folder / LEGACY_STATE) in err and err.count("\n") == 1
    assert "finish the run with the aelf version that started it" in err and "retrain" in err
    assert not victim.exists(), "the pickle must not have been read"

    with open(folder / STATE, "wb") as handle:  # a pickle where the JSON state belongs: not JSON, never unpickled
        pickle.dump(payload, handle)
    with pytest.raises(CheckpointError, match=str(folder)):
        read_state(folder)
    assert not victim.exists()


def test_no_torch_load_or_pickle_in_the_package():
    source = Path(__file__).parent.parent / "src" / "aelf"
    for path in source.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"(?<![\w.])torch\.load\(|pickle\.loads?\(|Unpickler", text), f"{path} reads pickles"


def test_corrupt_checkpoint_files_name_the_file(tmp_path):
    save_checkpoint(tmp_path, CNNb(width=0.125), {"step": 1})
    folder = latest_checkpoint(tmp_path)
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{folder / WEIGHTS}: damaged"):
        read_weights(folder / WEIGHTS)
    (folder / STATE).write_bytes((folder / STATE).read_bytes()[:5])
    with pytest.raises(CheckpointError, match=f"{folder / STATE}: damaged"):
        read_state(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match=f"{folder}: no {MANIFEST}"):
        read_state(folder)


def test_cifar_run_with_augmentation_and_dropout_resumes_exactly(tmp_path, monkeypatch):
    """Random crops/flips (Appendix C) and WRN dropout must replay identically after a SIGTERM mid-epoch."""
    from aelf.core.data import cifar
    from test_cifar import write_cifar10

    write_cifar10(tmp_path / "cifar-10-batches-bin", per_file=8)
    monkeypatch.setitem(cifar.OFFICIAL_COUNTS, "cifar10", dict.fromkeys(cifar.OFFICIAL_COUNTS["cifar10"], 8))
    config = tiny_config(
        "at",
        data={"name": "cifar10", "root": str(tmp_path), "train_limit": None, "test_limit": None},
        model={"name": "wrn", "depth": 10, "widen_factor": 1, "width": 0.5, "dropout": 0.3},
        train={"epochs": 2, "batch_size": 8, "checkpoint_every": 2},
    )
    reference = trainer.train(config, tmp_path / "reference", progress=False)

    # step 2 of epoch 2 (5 steps an epoch); the newest checkpoint before it is step 6
    stopped_run(config, tmp_path / "run", monkeypatch, 7, "sigterm")
    assert latest_checkpoint(tmp_path / "run").name == "step-00000007"
    trainer.train(None, tmp_path / "run", resume=True, progress=False)
    assert_same_run(tmp_path / "run", reference)
