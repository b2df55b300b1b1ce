"""AELFs, the simplified Attention-Extended Learning Framework (Algorithm 2, Eq. 10).

Starts from a standard-training checkpoint; the label mapping W (``model.head``) stays frozen, and only the feature
extractor c learns from

    lambda_nat * CE(W f, y) + lambda_adv * CE(W f', y) + beta * (||f||_2 + ||f'||_2),

with f = M_c(x), f' = M_c(x'), lambda_nat + lambda_adv = 1 and the norms averaged over the batch. As in JT, the
second half of each batch is made adversarial (Appendix C).

Section 3.2 notes that beta "can be separately set to f and f'": ``beta_nat`` and ``beta_adv`` replace beta for
one of them (``None``: use ``beta``). ``penalty="squared_l2"`` uses ||f||_2^2 instead of ||f||_2.

Options beyond the paper, for taking AELFs apart: ``freeze_head=False`` trains W too (then AELFs is JT*, Table 3),
and ``bn: split`` gives adversarial inputs BatchNorm layers of their own (AdvProp; :mod:`aelf.core.models.split_bn`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from aelf.core.attacks import PGD, AnyTrainingAttack
from aelf.core.methods.mixed import (
    check_fraction,
    check_penalty,
    check_weights,
    feature_penalty,
    mixed_forward,
    split_losses,
)
from aelf.core.models.split import feature_parameters
from aelf.core.models.split_bn import check_bn
from aelf.core.modes import check_attack_mode
from aelf.core.protocols import LossAndMetrics, SplitModel


@dataclass(frozen=True)
class AELFs:
    name: ClassVar[str] = "aelfs"
    label: ClassVar[str] = "AELFs"
    description: ClassVar[str] = (
        "AELFs, the simplified AELF: label mapping kept from a standard-training run (trained too when freeze_head "
        "= False), natural and adversarial cross-entropy with a feature-norm penalty"
    )
    reference: ClassVar[str] = "the paper's method: Algorithm 2, Eq. 10"
    needs_init: ClassVar[bool] = True  # W must come from standard training (Algorithm 2, line 1)
    lambda_nat: float = 0.5
    lambda_adv: float = 0.5
    beta: float = 0.5
    beta_nat: float | None = None
    beta_adv: float | None = None
    penalty: str = "l2"
    adv_fraction: float = 0.5
    attack: AnyTrainingAttack = field(default_factory=PGD)
    attack_mode: str = "eval"  # or "train": the mode the attack crafts x' in (aelf.core.attacks.craft)
    freeze_head: bool = True
    bn: str = "shared"

    def __post_init__(self) -> None:
        check_attack_mode(self.attack_mode)
        check_weights(self.lambda_nat, self.lambda_adv)
        check_fraction(self.adv_fraction)
        check_penalty(self.beta, self.beta_nat, self.beta_adv, self.penalty)
        check_bn(self.bn)

    def trainable_parameters(self, model: SplitModel) -> list[torch.nn.Parameter]:
        return list(feature_parameters(model) if self.freeze_head else model.parameters())

    def loss(self, model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        feats, logits, n_nat = mixed_forward(model, self.attack, x, y, self.adv_fraction, self.attack_mode, self.bn)
        ce_nat, ce_adv, metrics = split_losses(logits, y, n_nat)
        penalty, norms = feature_penalty(feats, n_nat, self.beta, self.beta_nat, self.beta_adv, self.penalty)
        loss = self.lambda_nat * ce_nat + self.lambda_adv * ce_adv + penalty
        return loss, {"loss": loss.detach(), "feat_norm": norms.detach().mean(), **metrics}
