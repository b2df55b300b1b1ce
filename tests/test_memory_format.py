"""The memory-format rule (aelf.core.memory_format): channels_last except where oneDNN's AVX2 1x1 weight-gradient kernel
is broken. The end-to-end tests force oneDNN's AVX2 path with ONEDNN_MAX_CPU_ISA=AVX2 in a subprocess, so they test the
guard on any x86 CPU; removing the guard makes them hang, crash or differ."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from aelf.core import memory_format
from aelf.core.models import CNNb, PreActResNet18, WideResNet, as_split_model

X86 = memory_format.onednn_uses_avx2_path() or memory_format.platform.machine().lower() in ("x86_64", "amd64")
AVX2_ENV = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_affected_layers_are_strided_1x1_convolutions_with_few_input_channels():
    assert memory_format.affected_convolutions(PreActResNet18(width=1 / 16)) == ["blocks.2.shortcut"]  # 4 -> 8, s2
    assert memory_format.affected_convolutions(PreActResNet18(width=1 / 8)) == []  # 8 input channels: another kernel
    assert memory_format.affected_convolutions(PreActResNet18(width=1.0)) == []
    assert memory_format.affected_convolutions(CNNb(in_channels=1, width=0.125)) == []
    assert memory_format.affected_convolutions(WideResNet(depth=10, widen_factor=1, width=0.25)) != []
    user_model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 16, 1, stride=2), nn.Flatten(), nn.LazyLinear(10))
    assert memory_format.affected_convolutions(user_model) == ["1"]
    assert memory_format.affected_convolutions(nn.Conv2d(6, 16, 1, stride=1)) == []
    assert memory_format.affected_convolutions(nn.Conv2d(6, 16, 3, stride=2)) == []


@pytest.mark.parametrize(
    ("cap", "expected"), [("AVX2", True), ("avx2_vnni", True), ("SSE41", True), ("AVX512_CORE", None), ("ALL", None)]
)
def test_onednn_isa_cap_selects_the_avx2_path(monkeypatch, cap, expected):
    monkeypatch.setattr(memory_format.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert memory_format.onednn_uses_avx2_path() is bool(expected)


def test_cpu_capability_below_avx512_selects_the_avx2_path(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(memory_format.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert memory_format.onednn_uses_avx2_path()
    model = PreActResNet18(width=1 / 16)
    assert memory_format.model_memory_format(model, "cpu") == torch.contiguous_format
    assert memory_format.model_memory_format(PreActResNet18(width=1 / 8), "cpu") == torch.channels_last
    assert memory_format.model_memory_format(model, "meta") == torch.channels_last  # not a CPU kernel
    monkeypatch.setattr(memory_format.platform, "machine", lambda: "aarch64")
    assert not memory_format.onednn_uses_avx2_path()


def test_user_models_wrapped_for_the_split_keep_their_layers_visible():
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 1, stride=2), nn.Flatten(), nn.Linear(128, 10))
    assert memory_format.affected_convolutions(as_split_model(body)) == ["body.1"]


# Two identical deterministic trainer runs of PreAct ResNet-18 at width 1/16 (a 4 -> 8 strided 1x1 shortcut) on
# oneDNN's AVX2 path: with the guard they finish in seconds with equal weights; without it the weight-gradient
# kernel hangs, crashes or returns different gradients each call.
TRAIN_TWICE = """
import sys, torch, aelf
from aelf.core.run_folder import WEIGHTS
from safetensors.torch import load_file
config = aelf.make_config({
    "data": {"name": "mnist5k", "train_limit": 96, "test_limit": 32},
    "model": {"name": "preact_resnet18", "width": 0.0625},
    "method": {"name": "st"},
    "train": {"epochs": 1, "batch_size": 32, "lr_milestones": []},
})
runs = [aelf.train(config, sys.argv[1] + f"/run{i}", progress=False) for i in range(2)]
a, b = (load_file(str(run / WEIGHTS)) for run in runs)
assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ between identical runs"
print("identical")
"""


@pytest.mark.skipif(not X86, reason="oneDNN's x86 AVX2 kernels exist on x86 only")
def test_trainer_on_the_avx2_path_finishes_with_reproducible_weights(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_TWICE, str(tmp_path)], env=AVX2_ENV, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "identical" in done.stdout
