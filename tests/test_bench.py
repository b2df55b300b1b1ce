"""The benchmark (``python -m bench``): the smoke run end to end, the FLOP counts, and the reference loop against
aelf's fast path."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from bench import harness, paths, reference, tuning, workloads
from bench.__main__ import main as bench_main
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

from aelf.core.attacks import FGSMRS, NFGSM, PGD, TradesKL
from aelf.core.config import TrainConfig
from aelf.core.errors import AelfError
from aelf.core.methods import AT, TRADES, AELFs
from aelf.core.models import CNNbOptions, build_model
from aelf.core.modes import training

from conftest import torch_threads

ROOT = Path(__file__).resolve().parents[1]

STEPS = ("st", "at", "trades", "aelfs")


@pytest.fixture
def one_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, two OpenMP threads per op make tiny models
    wait on descheduled threads (see BENCHMARKS.md), which only slows these seconds-long tests down."""
    with torch_threads(1):
        yield


def tiny_cnnb(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(CNNbOptions(width=0.125), 1, 10, (0.1307,), (0.3081,))


def fixed_batch(n: int = 16, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def check_result(result: dict, models: list[str]) -> None:
    assert [(row["model"], row["step"]) for row in result["rows"]] == [(m, s) for m in models for s in STEPS]
    for row in result["rows"]:
        assert row["aelf_img_s"] > 0 and row["reference_img_s"] > 0
        assert row["ratio"] == pytest.approx(row["aelf_img_s"] / row["reference_img_s"])
        assert 0 < row["aelf_peak_fraction"] and 0 < row["reference_peak_fraction"]
        assert row["aelf_flops_per_s"] == pytest.approx(row["necessary_flops_per_image"] * row["aelf_img_s"])
    assert result["peak"]["kind"].startswith("measured GEMM peak")


@pytest.mark.parametrize("workload", list(workloads.WORKLOADS))
def test_smoke_run_from_python(one_thread, workload):
    """Every workload's smoke: PreAct and WRN at smoke widths have strided 1x1 shortcuts (aelf.core.memory_format)."""
    result = harness.run_bench("cpu", [workload], smoke=True, log=None)
    check_result(result, [workload])
    f = result["workloads"][workload]["forward_flops"]
    at = next(row for row in result["rows"] if row["step"] == "at")
    assert at["K"] == 2 and at["necessary_flops_per_image"] == pytest.approx(7 * f)
    text = harness.format_report(result)
    assert "| step | model | K | aelf img/s | reference img/s | aelf/reference |" in text
    assert "measured GEMM peak" in text and "(2K+3)F" in text
    for step in STEPS:
        assert f"| {step} | {workload} |" in text


def test_single_step_smoke_run(one_thread):
    """The single-step steps on both paths (AT and AELFs with fgsm_rs and n_fgsm, AT with GradAlign): K = 1."""
    steps = workloads.SINGLE_STEP_STEPS
    result = harness.run_bench("cpu", ["cnnb-mnist"], smoke=True, methods=steps, log=None)
    assert [row["step"] for row in result["rows"]] == list(steps)
    f = result["workloads"]["cnnb-mnist"]["forward_flops"]
    for row in result["rows"]:
        assert row["K"] == 1 and row["aelf_img_s"] > 0 and row["reference_img_s"] > 0
        assert row["necessary_flops_per_image"] == pytest.approx(workloads.necessary_flops(row["step"], f))
    assert set(result["formulas"]) == set(steps)
    text = harness.format_report(result)
    assert "at-fgsm_rs: 5F" in text and "at-fgsm_rs-gradalign: 13F" in text
    for step in steps:
        assert f"| {step} | cnnb-mnist | 1 |" in text


def test_smoke_run_from_the_command_line(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(  # from the repository root: the harness is part of the repository, not of the package
        [sys.executable, "-m", "bench", "--smoke", "--device", "cpu", "--models", "cnnb-mnist", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "aelf/reference" in done.stdout and "of peak" in done.stdout
    for step in STEPS:
        assert f"| {step} | cnnb-mnist |" in done.stdout
    check_result(json.loads(out.read_text()), ["cnnb-mnist"])


def test_bad_bench_arguments_are_one_line_errors(capsys):
    assert bench_main(["--smoke", "--models", "resnet-imagenet"]) == 2
    assert capsys.readouterr().err.strip().startswith("bench: error: unknown bench model")
    with pytest.raises(AelfError, match="unknown bench model"):
        harness.parse_models("cnnb-mnist,nope", "cpu")
    with pytest.raises(AelfError, match="unknown bench step"):
        harness.run_bench("cpu", ["cnnb-mnist"], smoke=True, methods=("pgd",), log=None)
    with pytest.raises(AelfError, match="unknown bench step"):
        tuning.run_tuning("cpu", step="pgd", smoke=True, log=None)


def test_bench_times_the_trainers_determinism_setting():
    """The aelf path must run under exactly what aelf.train sets (deterministic, no NaN-fill), then restore."""
    import torch.utils.deterministic as deterministic

    before = (torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory)
    with paths.trainer_determinism(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled() is TrainConfig().deterministic
        assert deterministic.fill_uninitialized_memory is False
    with paths.trainer_determinism(torch.device("cpu"), fill_uninitialized_memory=True):
        assert deterministic.fill_uninitialized_memory is True
    assert (torch.are_deterministic_algorithms_enabled(), deterministic.fill_uninitialized_memory) == before


def test_st_is_timed_over_more_steps_on_cpu_unless_told():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert harness.timed_steps_for("st", cpu, False, None, 1) == harness.CPU_ST_STEPS
    assert harness.timed_steps_for("at", cpu, False, None, 1) == 1
    assert harness.timed_steps_for("st", cpu, False, 3, 3) == 3  # --steps wins
    assert harness.timed_steps_for("st", cpu, True, None, 1) == 1  # smoke stays seconds
    assert harness.timed_steps_for("st", cuda, False, None, 10) == 10


def test_tuning_study_smoke(one_thread):
    result = tuning.run_tuning("cpu", smoke=True, compile_model=False, log=None)
    labels = [entry["label"] for entry in result["results"]]
    assert "1 thread, contiguous" in labels and "1 thread, channels_last" in labels
    assert any("autocast bf16" in label for label in labels)
    assert all(entry["img_s"] > 0 for entry in result["results"])
    assert "| setting | img/s |" in tuning.format_tuning(result)


# --------------------------------------------------------------------------------------------------------------
# FLOP counting.


@pytest.mark.parametrize("k", [1, 10, 16])
def test_necessary_flop_formulas(k):
    f = 1.5e8
    assert workloads.necessary_flops("st", f) == 3 * f
    assert workloads.necessary_flops("at", f, k) == (2 * k + 3) * f
    assert workloads.necessary_flops("trades", f, k) == (2 * k + 7) * f
    assert workloads.necessary_flops("aelfs", f, k) == (k + 3) * f  # half the batch attacked
    assert workloads.necessary_flops("aelfs", f, k, adv_fraction=1.0) == workloads.necessary_flops("at", f, k)
    with pytest.raises(AelfError):
        workloads.necessary_flops("jt", f, k)


def test_single_step_flop_formulas():
    f = 1.5e8
    for step in ("at-fgsm_rs", "at-n_fgsm"):
        assert workloads.necessary_flops(step, f) == workloads.necessary_flops(step, f, 1) == 5 * f
        assert workloads.necessary_flops(step, f) == workloads.necessary_flops("at", f, 1)
    for step in ("aelfs-fgsm_rs", "aelfs-n_fgsm"):
        assert workloads.necessary_flops(step, f) == 4 * f  # one step of 2F on half the batch, then 3F
        assert workloads.necessary_flops(step, f, adv_fraction=1.0) == 5 * f
    assert workloads.necessary_flops("at-fgsm_rs-gradalign", f) == 13 * f
    with pytest.raises(AelfError, match="single-step"):
        workloads.necessary_flops("at-fgsm_rs", f, 10)
    workload = workloads.WORKLOADS["cnnb-mnist"]
    assert [workloads.attack_steps(s, workload) for s in workloads.ALL_STEPS] == [0, 16, 16, 16] + [1] * 5


class CountFlops(TorchDispatchMode):
    """torch.utils.flop_counter's per-operator counts (a multiply-add = 2 FLOPs) without FlopCounterMode's module
    tracking, which refuses the nested ``autograd.grad`` of double backpropagation. Each convolution backward counts
    only the gradients autograd asks for, so an input-only backward costs one forward, as the lean count assumes."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._overloadpacket in flop_registry:

            def shape(t):
                return t.shape if isinstance(t, torch.Tensor) else t

            self.flops += flop_registry[func._overloadpacket](
                *tree_map(shape, args), **tree_map(shape, kwargs or {}), out_val=tree_map(shape, out)
            )
        return out


@pytest.mark.parametrize("step", ["at", "aelfs", *workloads.SINGLE_STEP_STEPS])
def test_the_lean_formulas_match_the_flops_a_step_runs(one_thread, step):
    """Every operator of one step counted (the attack, the loss, GradAlign's double backprop, the parameter gradients):
    within 2% of the formula. The count is a little lower: a training backward needs no input gradient of the first
    convolution."""
    workload = workloads.smoke_workload(workloads.WORKLOADS["cnnb-mnist"])
    model = tiny_cnnb()
    method = paths.aelf_method(step, workload)
    x, y = fixed_batch(8)
    f = workloads.forward_flops(model, (1, 32, 32), torch.device("cpu"))
    params = method.trainable_parameters(model)
    with CountFlops() as counter, training(model):
        loss, _ = method.loss(model, x, y)
        torch.autograd.grad(loss, params)
    k = workloads.attack_steps(step, workload)
    expected = workloads.necessary_flops(step, f, k)
    assert 0.98 * expected <= counter.flops / len(x) <= expected


def test_forward_flops_counts_a_multiply_add_as_two():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    conv = 2 * (3 * 3 * 1) * 4 * (8 * 8)
    linear = 2 * (4 * 8 * 8) * 10
    assert workloads.forward_flops(model, (1, 8, 8), torch.device("cpu")) == conv + linear


def test_paper_cnnb_forward_flops():
    """CNNb (Table 1) on 1x32x32: the five 3x3 convolutions (the head and pools are < 0.01%)."""
    convs = [(1, 64, 32), (64, 64, 32), (64, 128, 16), (128, 256, 8), (256, 512, 4)]
    expected = sum(2 * 9 * c_in * c_out * side**2 for c_in, c_out, side in convs) + 2 * 512 * 10
    model = workloads.WORKLOADS["cnnb-mnist"].build()
    assert workloads.forward_flops(model, (1, 32, 32), torch.device("cpu"), batch=2) == expected


# --------------------------------------------------------------------------------------------------------------
# The reference loop computes what aelf computes.


def test_reference_pgd_equals_aelf_pgd(one_thread):
    """Plain path (loss.backward(), mean loss, weight gradients too) vs aelf's input-gradient-only path (sum loss):
    the same x_adv in fp32, eval mode, same memory format."""
    model = tiny_cnnb().eval()
    x, y = fixed_batch()
    attack = PGD(eps=0.3, n_steps=8, step_size=0.02)
    fast = attack(model, x, y)
    plain = reference.reference_pgd(model, x, y, attack.eps, attack.step_size, attack.n_steps)
    model.eval()
    assert (fast - plain).abs().max().item() <= 1e-6
    assert (fast - x).abs().max().item() <= attack.eps + 1e-6
    assert (fast != x).any()
    assert all(p.grad is None for p in model.parameters())  # the reference's model.zero_grad() left nothing behind


def test_reference_pgd_matches_aelf_pgd_in_channels_last(one_thread):
    """The trainer's layout (model and data channels_last) against the reference's default layout: the convolution
    kernels differ, so a gradient component within rounding of 0 may flip sign; nearly every pixel agrees."""
    model = tiny_cnnb().eval()
    x, y = fixed_batch()
    attack = PGD(eps=0.3, n_steps=8, step_size=0.02)
    plain = reference.reference_pgd(model, x, y, attack.eps, attack.step_size, attack.n_steps)
    fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    fast = attack(fast_model, x.contiguous(memory_format=torch.channels_last), y)
    assert ((fast - plain).abs() <= 1e-6).float().mean().item() >= 0.99


def assert_same_loss_and_gradients(loss, reference_loss, aelf_model, reference_model) -> None:
    """The losses within 1e-5 (relative); every trainable parameter's gradient within 1e-4, frozen ones none."""
    assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-5)
    for p_ref, p_aelf in zip(reference_model.parameters(), aelf_model.parameters(), strict=True):
        if p_ref.requires_grad:
            assert p_ref.grad is not None and p_aelf.grad is not None
            torch.testing.assert_close(p_aelf.grad, p_ref.grad, rtol=1e-4, atol=1e-6)
        else:
            assert p_ref.grad is None and p_aelf.grad is None


@dataclass(frozen=True)
class FixedPerturbation(TradesKL):
    """A TradesKL that returns a given x' (to compare the TRADES losses on the same x')."""

    x_adv: torch.Tensor | None = None

    def __call__(self, model, x, y=None):
        return self.x_adv


def test_reference_trades_loss_equals_aelf_trades_loss(one_thread):
    """TRADES repository loss (clean logits computed twice, KLDivLoss(sum) / batch) vs aelf's TRADES (clean logits
    once, kl_div batchmean), train mode, fixed x and x': loss within 1e-5 relative, gradients within 1e-4."""
    x, y = fixed_batch()
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    reference_model, aelf_model = tiny_cnnb(), tiny_cnnb()
    reference_model.train()
    reference_loss = reference.reference_trades_objective(reference_model, x, x_adv, y, beta=6.0)
    reference_loss.backward()
    method = TRADES(beta=6.0, attack=FixedPerturbation(x_adv=x_adv))
    with training(aelf_model):
        loss, metrics = method.loss(aelf_model, x, y)
    loss.backward()
    assert metrics["kl"].item() > 0
    assert_same_loss_and_gradients(loss, reference_loss, aelf_model, reference_model)


def test_reference_trades_attack_equals_aelf_trades_attack(one_thread):
    """The TRADES code's attack (clean target recomputed every step) and aelf's (computed once): the same x'."""
    model = tiny_cnnb().eval()
    x, _ = fixed_batch()
    attack = TradesKL(eps=0.3, n_steps=5, step_size=0.02)
    torch.manual_seed(3)
    fast = attack(model, x)
    torch.manual_seed(3)
    plain = reference.reference_trades_attack(model, x, attack.eps, attack.step_size, attack.n_steps)
    assert (fast - plain).abs().max().item() <= 1e-6


def test_reference_single_step_attacks_equal_aelfs(one_thread):
    """Wong et al.'s FGSM-RS and de Jorge et al.'s N-FGSM as their code writes them (delta, loss.backward()) against
    aelf's, from the same noise: the same x'."""
    model = tiny_cnnb().eval()
    x, y = fixed_batch()
    fast, noisy = FGSMRS(eps=0.3), NFGSM(eps=0.3)
    pairs = [
        (lambda: fast(model, x, y), lambda: reference.reference_fgsm_rs(model, x, y, 0.3, fast.step)),
        (lambda: noisy(model, x, y), lambda: reference.reference_n_fgsm(model, x, y, 0.6, noisy.step)),
    ]
    for ours, theirs in pairs:
        torch.manual_seed(3)
        a = ours()
        torch.manual_seed(3)
        b = theirs()
        model.eval()
        assert (a - b).abs().max().item() <= 1e-6 and (a != x).any()
    assert all(p.grad is None for p in model.parameters())


def test_reference_grad_align_step_equals_aelfs(one_thread):
    """The bench's reference AT + GradAlign step (the authors' get_input_grad pair) against aelf's AT(grad_align):
    the same loss and parameter gradients on a fixed batch and seed."""
    x, y = fixed_batch(8)
    reference_model, aelf_model = tiny_cnnb(), tiny_cnnb()
    torch.manual_seed(4)
    x_adv = reference.reference_fgsm_rs(reference_model, x, y, 0.3, 0.375)
    reg = reference.reference_grad_align(reference_model, x, y, 0.3)  # before the train-mode forward moves BatchNorm
    reference_loss = torch.nn.functional.cross_entropy(reference_model(x_adv), y) + 0.2 * reg
    reference_loss.backward()
    torch.manual_seed(4)
    with training(aelf_model):
        loss, _ = AT(attack=FGSMRS(eps=0.3), grad_align=0.2).loss(aelf_model, x, y)
    loss.backward()
    assert_same_loss_and_gradients(loss, reference_loss, aelf_model, reference_model)


@dataclass(frozen=True)
class FixedPGD(PGD):
    """A PGD that returns a given x' (to compare the AELFs losses on the same x')."""

    x_adv: torch.Tensor | None = None

    def __call__(self, model, x, y):
        assert x.shape == self.x_adv.shape
        return self.x_adv


def test_reference_aelfs_loss_equals_aelf_aelfs_loss(one_thread):
    """The reference's JT-style AELFs loop (head frozen by requires_grad=False) vs aelf's AELFs, train mode, fixed x
    and x' of the second half: loss within 1e-5 relative, feature-extractor gradients within 1e-4, no head gradient."""
    x, y = fixed_batch()
    n_nat = x.shape[0] // 2
    x_adv = (x[n_nat:] + 0.05 * torch.randn(x[n_nat:].shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    reference_model, aelf_model = tiny_cnnb(), tiny_cnnb()
    for model in (reference_model, aelf_model):
        for parameter in model.head.parameters():
            parameter.requires_grad = False
    reference_model.train()
    reference_loss = reference.reference_aelfs_objective(reference_model, x[:n_nat], x_adv, y, beta=0.5)
    reference_loss.backward()
    method = AELFs(beta=0.5, attack=FixedPGD(x_adv=x_adv))
    with training(aelf_model):
        loss, _ = method.loss(aelf_model, x, y)
    loss.backward()
    assert_same_loss_and_gradients(loss, reference_loss, aelf_model, reference_model)


def test_epoch_timing_script_smoke(tmp_path):
    """bench/epochs.py (the real-epoch timings of BENCHMARKS.md) runs end to end on tiny models."""
    only = ["cifar10-preact-at", "cifar10-wrn-at"]
    if Path("/usr/share/datasets/fashion-mnist").is_dir():
        only.insert(0, "mnist-table2-at")
    script = Path(__file__).resolve().parents[1] / "bench" / "epochs.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--smoke",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--only",
            ",".join(only),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "epochs.json").read_text())
    assert [row["workload"] for row in rows] == only
    assert all(len(row["epoch_time_s"]) == 1 and row["epoch_time_s"][0] > 0 for row in rows)
    assert "| cifar10-wrn-at | cifar10 |" in done.stdout
