"""Standard training (ST, Eq. 1): cross-entropy on natural inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F


@dataclass(frozen=True)
class ST:
    name: ClassVar[str] = "st"

    def trainable_parameters(self, model):
        return list(model.parameters())

    def loss(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach(), "nat_acc": (logits.detach().argmax(1) == y).float().mean()}
