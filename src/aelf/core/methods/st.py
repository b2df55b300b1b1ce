"""Standard training (ST, Eq. 1): cross-entropy on natural inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.protocols import LossAndMetrics, SplitModel


@dataclass(frozen=True)
class ST:
    name: ClassVar[str] = "st"
    label: ClassVar[str] = "ST"
    description: ClassVar[str] = "standard training (ST): cross-entropy on natural images"
    reference: ClassVar[str] = "Eq. 1 of the paper; the non-robust baseline"

    def trainable_parameters(self, model: SplitModel) -> list[nn.Parameter]:
        return list(model.parameters())

    def loss(self, model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach(), "nat_acc": (logits.detach().argmax(1) == y).float().mean()}
