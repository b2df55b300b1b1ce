"""N-FGSM (de Jorge et al. 2022, "Make some noise"), a single-step training attack without projection.

    eta ~ U(-k eps, k eps),   x0 = clip(x + eta),   x' = clip(x0 + alpha sign(grad_x CE(x0, y))),

clip keeping pixels in [0, 1]. The noise is larger than the eps-ball (k = 2) and the result is *not* projected back
onto it: the paper's point is that the larger, unclipped perturbation (up to (k + 1) eps with alpha = eps) avoids
catastrophic overfitting without GradAlign's extra cost. Same cost as FGSM: one forward, one input-only backward.
``clip_start: false`` takes the gradient at x + eta unclipped (the result is clipped either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aelf.core.attacks.fgsm_rs import check_single_step
from aelf.core.attacks.pgd import input_gradient
from aelf.core.checks import check_attack_inputs
from aelf.core.errors import ConfigError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier


@dataclass(frozen=True)
class NFGSM:
    """``n_fgsm``: one signed gradient step of ``step_size`` from x plus uniform noise of half-width noise_scale eps.

    ``eps`` and ``step_size`` are in pixel units; or ``step_scale`` gives the step as a multiple of eps; neither means
    eps (the paper's alpha). ``noise_scale`` is the paper's k, the noise half-width in units of eps (default 2).
    ``clip_start``: clip x + eta to [0, 1] before the gradient (default) or not. The result is in [0, 1] and within
    (noise_scale eps + step) of x, with no projection onto the eps-ball: a training attack, not a threat model. The
    noise comes from torch's global generator of x's device. The model runs in eval mode, its modes restored.
    """

    name: ClassVar[str] = "n_fgsm"
    label: ClassVar[str] = "N-FGSM"
    description: ClassVar[str] = "one signed gradient step from x plus noise larger than the eps-ball, no projection"
    reference: ClassVar[str] = 'de Jorge et al. 2022, "Make some noise"'
    family_budget: ClassVar[tuple[str, ...]] = ("eps",)  # its own step (eps), not the family's PGD step
    eps: float = 0.3
    step_size: float | None = None
    noise_scale: float = 2.0
    step_scale: float | None = None
    clip_start: bool = True

    def __post_init__(self) -> None:
        check_single_step(self.eps, self.step_size, self.step_scale)
        if not self.noise_scale >= 0:
            raise ConfigError(f"attack noise_scale must be >= 0 (got {self.noise_scale})")

    @property
    def step(self) -> float:
        """The step alpha in pixel units."""
        if self.step_size is not None:
            return self.step_size
        return self.eps if self.step_scale is None else self.step_scale * self.eps

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1]; y: (N,). Returns x' in [0, 1] with |x' - x| <= noise_scale eps + step."""
        check_attack_inputs(model, x, y)
        with evaluating(model):
            return self.perturb(model, x, y)

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The attack without the mode switch (the caller has put the model in eval mode)."""
        x = x.detach()
        noise = self.noise_scale * self.eps
        start = x + torch.empty_like(x).uniform_(-noise, noise)
        if self.clip_start:
            start = start.clamp_(0.0, 1.0)
        grad = input_gradient(model, start, y)
        return (start + self.step * grad.sign()).clamp_(0.0, 1.0).detach()
