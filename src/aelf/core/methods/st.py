"""Standard training (ST, Eq. 1): cross-entropy on natural inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F


@dataclass(frozen=True)
class ST:
    name: ClassVar[str] = "st"
    label: ClassVar[str] = "ST"
    description: ClassVar[str] = "standard training (ST): cross-entropy on natural images"
    reference: ClassVar[str] = "Eq. 1 of the paper; the non-robust baseline"

    def trainable_parameters(self, model):
        return list(model.parameters())

    def loss(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach(), "nat_acc": (logits.detach().argmax(1) == y).float().mean()}
