"""A method's training attack in the mode the method asks for (``method.attack_mode``, aelf.core.modes.crafting).

Every training attack runs in eval mode when called (Appendix C); ``craft`` with ``mode="train"`` runs the same attack
(its ``perturb``, the attack without the mode switch) with BatchNorm on the attacked batch's statistics instead, the
running statistics left as they were.

Why ``eval`` stays the default: it is the paper's setting (Appendix C), so every paper experiment keeps its numbers;
the attack then targets the very function that is evaluated and deployed (running statistics), and an example's
perturbation does not depend on which other images share its batch. ``train`` is what Wong et al. 2020's CIFAR
scripts (and most fast-adversarial-training code) do, keeping ``model.train()`` throughout: the attack targets the
batch-normalised function that the training step then differentiates, which can matter early in training, while the
running statistics still lag the weights. Without BatchNorm or dropout (e.g. ``wong_mnist``) the two are the same.
Measured with fgsm_rs on CNNb (``aelf reproduce fast-at-methods``, BENCHMARKS.md "Single-step training"), ``train``
did not differ from ``eval`` at 95% for AT, JT or AELFs, so no measured reason moves the default.
"""

from __future__ import annotations

from typing import Any

import torch

from aelf.core.checks import check_attack_inputs
from aelf.core.modes import crafting
from aelf.core.protocols import Classifier


def craft(attack: Any, model: Classifier, x: torch.Tensor, y: torch.Tensor, mode: str = "eval") -> torch.Tensor:
    """``attack(model, x, y)`` with the model in ``mode`` (``eval`` or ``train``); weights and running statistics are
    never changed. x: (N, C, H, W) in [0, 1]; y: (N,)."""
    if mode == "eval":
        return attack(model, x, y)
    check_attack_inputs(model, x, y)
    with crafting(model, mode):
        return attack.perturb(model, x, y)
