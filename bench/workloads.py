"""What the benchmark measures: the workloads (a model on an input size with its attacks) and the lean
count of the model FLOPs each training step needs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from aelf.core.attacks import FGSMRS, NFGSM, PGD, TradesKL
from aelf.core.data import dataset_info
from aelf.core.errors import AelfError
from aelf.core.models import CNNbOptions, ModelOptions, PreActOptions, WRNOptions, build_model

STEPS = ("st", "at", "trades", "aelfs")  # the default steps: the paper's methods with PGD-K
# Fast adversarial training: AT and AELFs with a single-step attack at the workload's eps (its default step sizes),
# and AT with fgsm_rs plus GradAlign. Timed when asked for (--methods).
SINGLE_STEP_STEPS = ("at-fgsm_rs", "at-n_fgsm", "aelfs-fgsm_rs", "aelfs-n_fgsm", "at-fgsm_rs-gradalign")
ALL_STEPS = STEPS + SINGLE_STEP_STEPS
BATCH_SIZE = 128
TRADES_BETA = 6.0  # TRADES' CIFAR-10 choice; the cost does not depend on it
AELFS_BETA = 0.5
GRAD_ALIGN = 0.2  # GradAlign's weight at eps 8/255 on CIFAR-10 (Andriushchenko & Flammarion); the cost ignores it

# The lean count of the model FLOPs a step needs, per image, in units of F (one forward pass of one image).
# A forward is F; a backward that takes only the input gradient is F (an attack step: 2F); a training backward
# takes input and weight gradients, 2F (a training step: 3F).
FORMULAS = {
    "st": "3F (one training forward and backward)",
    "at": "(2K+3)F (K attack steps of forward + input-only backward, 2F each; one training step, 3F)",
    "trades": "(2K+7)F (clean target p(x) once, F; K attack steps, 2F each; training forward and backward of x and "
    "x', 2 x 3F)",
    "aelfs": "(2aK+3)F = (K+3)F at a = 1/2 (K attack steps of 2F on the adversarial fraction a of the batch; one "
    "training step of the whole batch, 3F; the frozen head's weight gradient is negligible)",
    "at-fgsm_rs": "5F = (2K+3)F at K = 1 (one attack step from the random start, 2F; one training step, 3F)",
    "at-n_fgsm": "5F = (2K+3)F at K = 1 (one attack step from the noisy start, 2F; one training step, 3F)",
    "aelfs-fgsm_rs": "(2a+3)F = 4F at a = 1/2 (one attack step of 2F on the adversarial fraction a; one training "
    "step, 3F)",
    "aelfs-n_fgsm": "(2a+3)F = 4F at a = 1/2 (as aelfs-fgsm_rs)",
    "at-fgsm_rs-gradalign": "13F (AT with fgsm_rs, 5F; GradAlign 8F: the input gradient at x, 2F; at the noisy point "
    "a forward and an input backward kept as a graph, 2F; the double backprop through that graph, 4F: 2F back "
    "through the input backward, 2F back through the forward, which the cross-entropy's softmax reaches)",
}


def check_step(step: str) -> None:
    if step not in ALL_STEPS:
        raise AelfError(f"unknown bench step {step!r} (choose from: {', '.join(ALL_STEPS)})")


def base_method(step: str) -> str:
    """The method of a bench step: ``at``, ``aelfs``, ... (``at-fgsm_rs`` is AT with fgsm_rs)."""
    return step.split("-")[0]


def attack_steps(step: str, workload: Workload) -> int:
    """K, the attack steps of one bench step on ``workload``: 0 for ST, 1 for the single-step attacks."""
    check_step(step)
    if step == "st":
        return 0
    if step == "trades":
        return workload.trades.n_steps
    if step in SINGLE_STEP_STEPS:
        return 1
    return workload.pgd.n_steps


def necessary_flops(step: str, forward_flops: float, n_steps: int = 0, adv_fraction: float = 0.5) -> float:
    """The model FLOPs one image of a training step needs, counted leanly (see ``FORMULAS``).

    ``forward_flops``: F, the FLOPs of one forward pass of one image (a multiply-add counted as 2 FLOPs);
    ``n_steps``: K, the attack steps (a single-step step has K = 1: pass 1, or leave the default);
    ``adv_fraction``: the part of the batch AELFs attacks.
    """
    check_step(step)
    f, k = forward_flops, n_steps
    if step in SINGLE_STEP_STEPS:
        if k not in (0, 1):
            raise AelfError(f"bench step {step!r} has a single-step attack: K is 1 (got {k})")
        cost = necessary_flops(base_method(step), f, 1, adv_fraction)
        return cost + 8 * f if step.endswith("-gradalign") else cost
    if step == "st":
        return 3 * f
    if step == "at":
        return (2 * k + 3) * f
    if step == "trades":
        return (2 * k + 7) * f
    return (2 * k * adv_fraction + 3) * f  # aelfs


@dataclass(frozen=True)
class Workload:
    """A model on an input size with its attacks: what one row group of the table measures."""

    name: str
    label: str
    model: ModelOptions
    dataset: str  # gives the input channels, classes and normalisation (no data is read: inputs are synthetic)
    epoch_images: int  # training images of one epoch of the real dataset (for the epoch-time column)
    pgd: PGD
    trades: TradesKL

    @property
    def n_steps(self) -> int:
        return self.pgd.n_steps

    @property
    def fgsm_rs(self) -> FGSMRS:
        """FGSM-RS at the PGD's eps, with its default step 1.25 eps."""
        return FGSMRS(eps=self.pgd.eps)

    @property
    def n_fgsm(self) -> NFGSM:
        """N-FGSM at the PGD's eps, with its defaults (noise 2 eps, step eps)."""
        return NFGSM(eps=self.pgd.eps)

    def build(self) -> nn.Module:
        info = dataset_info(self.dataset)
        return build_model(self.model, info.in_channels, info.num_classes, info.mean, info.std)

    def input_shape(self) -> tuple[int, int, int]:
        return (dataset_info(self.dataset).in_channels, 32, 32)


WORKLOADS = {
    "cnnb-mnist": Workload(
        "cnnb-mnist",
        "CNNb (width 1.0), 1x32x32, 10 classes",
        CNNbOptions(width=1.0),
        "mnist",
        60_000,
        PGD(eps=0.3, n_steps=16, step_size=0.02),
        TradesKL(eps=0.3, n_steps=16, step_size=0.02),
    ),
    "preact-cifar": Workload(
        "preact-cifar",
        "PreAct ResNet-18, 3x32x32, 10 classes",
        PreActOptions(activation="relu"),
        "cifar10",
        50_000,
        PGD(eps=8 / 255, n_steps=10, step_size=2 / 255),
        TradesKL(eps=0.031, n_steps=10, step_size=0.007),
    ),
    "wrn-cifar": Workload(
        "wrn-cifar",
        "WRN-34-10, 3x32x32, 10 classes",
        WRNOptions(depth=34, widen_factor=10, activation="relu"),
        "cifar10",
        50_000,
        PGD(eps=8 / 255, n_steps=10, step_size=2 / 255),
        TradesKL(eps=0.031, n_steps=10, step_size=0.007),
    ),
}


def smoke_workload(workload: Workload) -> Workload:
    """The same workload with a tiny model and 2 attack steps (``--smoke``: seconds, for the tests)."""
    tiny = {
        "cnnb-mnist": {"width": 0.125},
        "preact-cifar": {"width": 0.0625},
        "wrn-cifar": {"depth": 10, "widen_factor": 1, "width": 0.5},
    }[workload.name]
    return replace(
        workload,
        label=f"{workload.label} [smoke: tiny model, K=2]",
        model=replace(workload.model, **tiny),
        pgd=replace(workload.pgd, n_steps=2),
        trades=replace(workload.trades, n_steps=2),
    )


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, batch: int = 8) -> float:
    """F: FLOPs of one forward pass of one image, counted by FlopCounterMode (a multiply-add is 2 FLOPs)."""
    model = copy.deepcopy(model).to(device).eval()
    x = torch.rand(batch, *input_shape, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / batch
