"""l-inf projected gradient descent (Madry et al. 2018) in the paper's notation PGD(eps, n_steps, step_size)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aelf.errors import ConfigError
from aelf.modes import evaluating


def check_budget(eps: float, n_steps: int, step_size: float) -> None:
    if not eps >= 0:
        raise ConfigError(f"attack eps must be >= 0 (got {eps})")
    if n_steps < 1:
        raise ConfigError(f"attack n_steps must be at least 1 (got {n_steps})")
    if not step_size > 0:
        raise ConfigError(f"attack step_size must be positive (got {step_size})")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE(model(x), y) / dx, summed over the batch, for the input only (no weight-gradient work).

    x: (N, C, H, W) pixels in [0, 1]; y: (N,) class indices. Returns a tensor shaped like x.
    """
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Closest point to ``x_adv`` inside the l-inf ball of radius eps around x and inside the [0, 1] pixel box."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class PGD:
    """PGD(eps, n_steps, step_size) under the l-inf norm, eps and step_size in pixel units ([0, 1] images).

    ``random_start``: begin from a uniform point in the eps-ball (Madry et al.); the paper's default is off
    (Appendix C). Calling the attack runs the model in eval mode and restores its modes afterwards.
    """

    eps: float = 0.3
    n_steps: int = 16
    step_size: float = 0.02
    random_start: bool = False

    def __post_init__(self):
        check_budget(self.eps, self.n_steps, self.step_size)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1]; y: (N,). Returns x_adv with |x_adv - x| <= eps and x_adv in [0, 1]."""
        with evaluating(model):
            return self.perturb(model, x, y)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if self.random_start:
            x_adv = project(x + torch.empty_like(x).uniform_(-self.eps, self.eps), x, self.eps)
        else:
            x_adv = x.clone()
        for _ in range(self.n_steps):
            grad = input_gradient(model, x_adv, y)
            x_adv = project(x_adv + self.step_size * grad.sign(), x, self.eps)
        return x_adv.detach()
