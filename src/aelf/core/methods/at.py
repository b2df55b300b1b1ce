"""PGD adversarial training (AT, Eq. 3; Madry et al. 2018): cross-entropy on adversarial inputs only.

The attack may also be a single-step one (``fgsm_rs``, ``n_fgsm``: fast adversarial training), optionally with
GradAlign (``grad_align``, :mod:`aelf.core.methods.grad_align`) against catastrophic overfitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.attacks import PGD, AnyTrainingAttack
from aelf.core.attacks.craft import craft
from aelf.core.methods.grad_align import check_grad_align, gradient_alignment
from aelf.core.modes import check_attack_mode
from aelf.core.protocols import LossAndMetrics, SplitModel


@dataclass(frozen=True)
class AT:
    """``attack``: makes x' (any training attack); ``grad_align``: weight of GradAlign's 1 - cos term (0: off;
    the authors use 0.2 at eps 8/255 on CIFAR-10 and more for larger eps). It costs two more input gradients per
    step, one of them differentiated twice. ``attack_mode``: ``eval`` (default, Appendix C) or ``train``, the mode the
    attack sees BatchNorm in (:mod:`aelf.core.attacks.craft` says why eval is the default); GradAlign stays in eval
    mode."""

    name: ClassVar[str] = "at"
    label: ClassVar[str] = "AT"
    description: ClassVar[str] = "PGD adversarial training (AT): cross-entropy on PGD adversarial images"
    reference: ClassVar[str] = "Madry et al. 2018; Eq. 3 of the paper"
    attack: AnyTrainingAttack = field(default_factory=PGD)
    grad_align: float = 0.0
    attack_mode: str = "eval"

    def __post_init__(self) -> None:
        check_grad_align(self.grad_align)
        check_attack_mode(self.attack_mode)

    def trainable_parameters(self, model: SplitModel) -> list[nn.Parameter]:
        return list(model.parameters())

    def loss(self, model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        x_adv = craft(self.attack, model, x, y, self.attack_mode)
        # before the training forward updates BatchNorm's running statistics: the eval-mode network is the attack's
        align = gradient_alignment(model, x, y, self.attack.eps) if self.grad_align else None
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        metrics = {"adv_acc": (logits.detach().argmax(1) == y).float().mean()}
        if align is not None:
            loss = loss + self.grad_align * (1 - align)
            metrics["grad_cos"] = align.detach()
        return loss, {"loss": loss.detach(), **metrics}
