"""Joint training (JT, Eq. 4): natural and adversarial cross-entropy, weighted lambda_nat : lambda_adv.

Appendix C: the second half of each batch is made adversarial and trained together with the natural first half.
``bn: split`` gives adversarial inputs BatchNorm layers of their own (AdvProp; :mod:`aelf.core.models.split_bn`),
the adversarial set being the one the training attack, evaluation and attacks at test time use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from aelf.core.attacks import PGD, AnyTrainingAttack
from aelf.core.methods.mixed import check_fraction, check_weights, mixed_forward, split_losses
from aelf.core.models.split_bn import check_bn
from aelf.core.modes import check_attack_mode
from aelf.core.protocols import LossAndMetrics, SplitModel


@dataclass(frozen=True)
class JT:
    name: ClassVar[str] = "jt"
    label: ClassVar[str] = "JT"
    description: ClassVar[str] = "joint training (JT): weighted natural and adversarial cross-entropy"
    reference: ClassVar[str] = "Eq. 4 of the paper"
    lambda_nat: float = 0.5
    lambda_adv: float = 0.5
    adv_fraction: float = 0.5
    attack: AnyTrainingAttack = field(default_factory=PGD)
    attack_mode: str = "eval"  # or "train": the mode the attack crafts x' in (aelf.core.attacks.craft)
    bn: str = "shared"

    def __post_init__(self) -> None:
        check_attack_mode(self.attack_mode)
        check_weights(self.lambda_nat, self.lambda_adv)
        check_fraction(self.adv_fraction)
        check_bn(self.bn)

    def trainable_parameters(self, model: SplitModel) -> list[nn.Parameter]:
        return list(model.parameters())

    def loss(self, model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        _, logits, n_nat = mixed_forward(model, self.attack, x, y, self.adv_fraction, self.attack_mode, self.bn)
        ce_nat, ce_adv, metrics = split_losses(logits, y, n_nat)
        loss = self.lambda_nat * ce_nat + self.lambda_adv * ce_adv
        return loss, {"loss": loss.detach(), **metrics}
