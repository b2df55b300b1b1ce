"""JT* (Table 3, "JT with our two actions"): JT plus the two additions AELFs makes to it, head left trainable.

The two actions are AELFs' parameter initialisation with standard training and its feature-norm penalty, so JT*
minimises Eq. 10's loss

    lambda_nat * CE(W f, y) + lambda_adv * CE(W f', y) + beta * (||f||_2 + ||f'||_2)

over c *and* W, starting from an ST checkpoint. Comparing it with AELFs isolates the effect of freezing W (Section
4.2). Fields and batch layout (second half adversarial, Appendix C) are those of AELFs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from aelf.attacks import PGD
from aelf.methods.mixed import (
    check_fraction,
    check_penalty,
    check_weights,
    feature_penalty,
    mixed_forward,
    split_losses,
)


@dataclass(frozen=True)
class JTStar:
    name: ClassVar[str] = "jt_star"
    needs_init: ClassVar[bool] = True  # the first action: start from standard training
    lambda_nat: float = 0.5
    lambda_adv: float = 0.5
    beta: float = 0.5
    beta_nat: float | None = None
    beta_adv: float | None = None
    penalty: str = "l2"
    adv_fraction: float = 0.5
    attack: PGD = field(default_factory=PGD)

    def __post_init__(self):
        check_weights(self.lambda_nat, self.lambda_adv)
        check_fraction(self.adv_fraction)
        check_penalty(self.beta, self.beta_nat, self.beta_adv, self.penalty)

    def trainable_parameters(self, model):
        return list(model.parameters())

    def loss(self, model, x, y):
        feats, logits, n_nat = mixed_forward(model, self.attack, x, y, self.adv_fraction)
        ce_nat, ce_adv, metrics = split_losses(logits, y, n_nat)
        penalty, norms = feature_penalty(feats, n_nat, self.beta, self.beta_nat, self.beta_adv, self.penalty)
        loss = self.lambda_nat * ce_nat + self.lambda_adv * ce_adv + penalty
        return loss, {"loss": loss.detach(), "feat_norm": norms.detach().mean(), **metrics}
