"""FGSM with a random start (Wong et al. 2020, "Fast is better than free"), a single-step training attack.

    delta ~ U(-eps, eps),   x0 = clip(x + delta),   x' = clip(proj_eps(x0 + alpha sign(grad_x CE(x0, y)))),

where proj_eps is the projection onto the l-inf ball of radius eps around x and clip keeps pixels in [0, 1]. The
default alpha = 1.25 eps is the paper's step (10/255 at eps 8/255). One forward and one input-only backward: an
AT step with it costs 5 forward-equivalents instead of PGD-K's 2K + 3.

``clip_start: false`` takes the gradient at x + delta itself, pixels possibly outside [0, 1], as Wong et al.'s MNIST
script does (``model(X + delta)``; their CIFAR scripts clip); the result is projected and clipped either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aelf.core.attacks.pgd import check_pixel_size, input_gradient, project
from aelf.core.checks import check_attack_inputs
from aelf.core.errors import ConfigError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier

STEP_SCALE = 1.25  # alpha = 1.25 eps, the step Wong et al. 2020 recommend


def check_single_step(eps: float, step_size: float | None, step_scale: float | None = None) -> None:
    if not eps >= 0:
        raise ConfigError(f"attack eps must be >= 0 (got {eps})")
    if step_size is not None and not step_size > 0:
        raise ConfigError(f"attack step_size must be positive (got {step_size})")
    check_pixel_size("eps", eps)
    if step_size is not None:
        check_pixel_size("step_size", step_size)
    if step_scale is not None and not step_scale > 0:
        raise ConfigError(f"attack step_scale must be positive (got {step_scale})")
    if step_size is not None and step_scale is not None:
        raise ConfigError("give the attack's step_size (pixels) or its step_scale (a multiple of eps), not both")


@dataclass(frozen=True)
class FGSMRS:
    """``fgsm_rs``: one signed gradient step of ``step_size`` from a uniform random point of the eps-ball.

    ``eps`` and ``step_size`` are in pixel units; or ``step_scale`` gives the step as a multiple of eps (1 = eps);
    neither means 1.25 eps. ``clip_start``: clip the random start to [0, 1] before the gradient (default) or take the
    gradient at x + delta as it is (Wong et al.'s MNIST script). The result lies within eps of x (projection) and in
    [0, 1]. The noise comes from torch's global generator of x's device, so a resumed run draws what the
    uninterrupted one drew. The model runs in eval mode (Appendix C), its modes restored afterwards.
    """

    name: ClassVar[str] = "fgsm_rs"
    label: ClassVar[str] = "FGSM-RS"
    description: ClassVar[str] = "one signed gradient step from a uniform random point of the eps-ball"
    reference: ClassVar[str] = 'Wong et al. 2020, "Fast is better than free"'
    family_budget: ClassVar[tuple[str, ...]] = ("eps",)  # its own step (1.25 eps), not the family's PGD step
    eps: float = 0.3
    step_size: float | None = None
    step_scale: float | None = None
    clip_start: bool = True

    def __post_init__(self) -> None:
        check_single_step(self.eps, self.step_size, self.step_scale)

    @property
    def step(self) -> float:
        """The step alpha in pixel units."""
        if self.step_size is not None:
            return self.step_size
        return (STEP_SCALE if self.step_scale is None else self.step_scale) * self.eps

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1]; y: (N,). Returns x' with |x' - x| <= eps and x' in [0, 1]."""
        check_attack_inputs(model, x, y)
        with evaluating(model):
            return self.perturb(model, x, y)

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The attack without the mode switch (the caller has put the model in eval mode)."""
        x = x.detach()
        start = x + torch.empty_like(x).uniform_(-self.eps, self.eps)
        if self.clip_start:
            start = project(start, x, self.eps)
        grad = input_gradient(model, start, y)
        return project(start + self.step * grad.sign(), x, self.eps).detach()
