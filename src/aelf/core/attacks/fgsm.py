"""Fast gradient sign method (Goodfellow et al. 2014): one signed gradient step of size eps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aelf.core.attacks.pgd import PGD
from aelf.core.checks import check_attack_inputs
from aelf.core.protocols import Classifier


@dataclass(frozen=True)
class FGSM:
    """x_adv = clamp(x + eps * sign(grad_x CE), 0, 1): PGD with one step of size eps and no random start."""

    name: ClassVar[str] = "fgsm"
    label: ClassVar[str] = "FGSM"
    description: ClassVar[str] = "one signed gradient step of size eps"
    reference: ClassVar[str] = "Goodfellow et al. 2014"
    eps: float = 0.3

    def __post_init__(self) -> None:
        PGD(eps=self.eps, n_steps=1, step_size=max(self.eps, 1e-12))

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_attack_inputs(model, x, y)
        if self.eps == 0:
            return x.detach().clone()
        return PGD(eps=self.eps, n_steps=1, step_size=self.eps)(model, x, y)
