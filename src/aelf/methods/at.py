"""PGD adversarial training (AT, Eq. 3; Madry et al. 2018): cross-entropy on adversarial inputs only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch.nn.functional as F

from aelf.attacks import PGD


@dataclass(frozen=True)
class AT:
    name: ClassVar[str] = "at"
    attack: PGD = field(default_factory=PGD)

    def trainable_parameters(self, model):
        return list(model.parameters())

    def loss(self, model, x, y):
        x_adv = self.attack(model, x, y)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach(), "adv_acc": (logits.detach().argmax(1) == y).float().mean()}
