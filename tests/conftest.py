"""Shared fixtures: tiny settings that train in seconds on a CPU."""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from aelf.core.config import make_config

trainer = importlib.import_module("aelf.core.train")  # the module (aelf.train is the train() function): tests patch it

TINY = {
    "data": {"name": "mnist5k", "train_limit": 256, "test_limit": 100},
    "model": {"width": 0.125},
    "train": {"epochs": 1, "batch_size": 64, "lr_milestones": []},
    "eval": {"batch_size": 100},
}
TINY_ATTACK = {"eps": 0.3, "n_steps": 2, "step_size": 0.15}


def tiny_config(method: str = "st", **sections):
    layers = [TINY, {"method": {"name": method}}]
    if method != "st":
        layers.append({"method": {"attack": TINY_ATTACK}})
    layers.append(sections)
    return make_config(*layers)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained_st_run(tmp_path_factory):
    """A CNNb (width 0.25) trained with ST for 4 epochs on 1,000 mnist5k digits: clearly better than chance."""
    from aelf.core.train import train

    out = tmp_path_factory.mktemp("runs") / "st"
    config = make_config(
        TINY,
        {
            "data": {"train_limit": 1000, "test_limit": 200},
            "model": {"width": 0.25},
            "train": {"epochs": 4, "batch_size": 64, "lr_milestones": [3]},
        },
    )
    return train(config, out, progress=False)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads, then give back the count it had."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def stopped_run(config, out, monkeypatch, after_step: int, how: str) -> None:
    """Train ``config`` into ``out`` until ``after_step`` steps are done, then SIGTERM (a checkpoint of that step is
    saved) or crash (the last periodic checkpoint is all there is)."""
    original = trainer.train_step
    calls = []

    def stop(*args):
        result = original(*args)
        calls.append(1)
        if len(calls) == after_step:
            if how == "crash":
                raise RuntimeError("crash")
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(trainer, "train_step", stop)
    with pytest.raises(trainer.TrainingInterrupted if how == "sigterm" else RuntimeError):
        trainer.train(config, out, progress=False)
    monkeypatch.setattr(trainer, "train_step", original)
