"""l-inf projected gradient descent (Madry et al. 2018) in the paper's notation PGD(eps, n_steps, step_size).

The defaults are the paper's training and test attack: cross-entropy loss, no random start, one run, a constant
step. For evaluation the same class becomes a stronger attack with ``loss="margin"`` (the CW margin, Carlini &
Wagner 2017), ``n_restarts`` random restarts keeping each example's worst case, and a cosine step schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from aelf.core.checks import check_attack_inputs
from aelf.core.errors import ConfigError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier

LOSSES = ("ce", "margin")
STEP_SCHEDULES = ("constant", "cosine")


def check_pixel_size(name: str, value: float) -> None:
    """ConfigError when a size in pixel units (images in [0, 1]) exceeds 1, the whole pixel range: most likely a
    value in 0-255 grey levels, such as 8 meant as 8/255."""
    if value > 1:
        levels = f"{value:g}/255" if value <= 255 else "8/255"
        raise ConfigError(
            f"attack {name} is in pixel units (images in [0, 1]) and must be at most 1 (got {value:g}); "
            f"a size in 0-255 grey levels is written as a fraction, e.g. {levels}"
        )


def check_budget(eps: float, n_steps: int, step_size: float) -> None:
    if not eps >= 0:
        raise ConfigError(f"attack eps must be >= 0 (got {eps})")
    if n_steps < 1:
        raise ConfigError(f"attack n_steps must be at least 1 (got {n_steps})")
    if not step_size > 0:
        raise ConfigError(f"attack step_size must be positive (got {step_size})")
    check_pixel_size("eps", eps)
    check_pixel_size("step_size", step_size)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CW margin per example, max_{j != y} z_j - z_y: (N, K) logits, (N,) labels -> (N,); > 0 means fooled."""
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(1) - true_logit


def example_losses(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per-example attack loss, (N, K) logits and (N,) labels -> (N,): cross-entropy or CW margin."""
    if loss == "margin":
        return margin_loss(logits, y)
    return F.cross_entropy(logits, y, reduction="none")


def input_gradient(model: Classifier, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """d loss(model(x), y) / dx, summed over the batch, for the input only (no weight-gradient work).

    x: (N, C, H, W) pixels in [0, 1]; y: (N,) class indices; loss: ``ce`` or ``margin``. Returns a tensor shaped
    like x.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    if loss == "ce":  # the training path: one fused call, exactly as before the margin loss existed
        total = F.cross_entropy(logits, y, reduction="sum")
    else:
        total = example_losses(logits, y, loss).sum()
    (grad,) = torch.autograd.grad(total, x)
    return grad


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Closest point to ``x_adv`` inside the l-inf ball of radius eps around x and inside the [0, 1] pixel box."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class PGD:
    """PGD(eps, n_steps, step_size) under the l-inf norm, eps and step_size in pixel units ([0, 1] images).

    ``random_start``: begin from a uniform point in the eps-ball (Madry et al.); the paper's default is off
    (Appendix C). ``loss``: ``ce`` (cross-entropy) or ``margin`` (CW margin max_{j != y} z_j - z_y, which does not
    saturate on confident logits). ``n_restarts``: runs from independent random starts (needs ``random_start``);
    each example keeps the first run that fools the model, else the run with the highest loss. ``step_schedule``:
    ``constant`` (step_size every step) or ``cosine`` (step t of n is step_size (1 + cos(pi t / n)) / 2: full size
    first, tending to 0, so late steps refine instead of bouncing around the ball's corners). Calling the attack runs
    the model in eval mode and restores its modes afterwards.
    """

    name: ClassVar[str] = "pgd"
    label: ClassVar[str] = "PGD"
    description: ClassVar[str] = "l-inf projected gradient descent on the cross-entropy (or the CW margin)"
    reference: ClassVar[str] = "Madry et al. 2018; the paper's training and test attack"
    family_budget: ClassVar[tuple[str, ...]] = ("eps", "n_steps", "step_size")  # the family's paper attack, whole
    eps: float = 0.3
    n_steps: int = 16
    step_size: float = 0.02
    random_start: bool = False
    loss: str = "ce"
    n_restarts: int = 1
    step_schedule: str = "constant"

    def __post_init__(self) -> None:
        check_budget(self.eps, self.n_steps, self.step_size)
        if self.loss not in LOSSES:
            raise ConfigError(f"attack loss must be one of {', '.join(LOSSES)} (got {self.loss!r})")
        if self.step_schedule not in STEP_SCHEDULES:
            raise ConfigError(
                f"attack step_schedule must be one of {', '.join(STEP_SCHEDULES)} (got {self.step_schedule!r})"
            )
        if self.n_restarts < 1:
            raise ConfigError(f"attack n_restarts must be at least 1 (got {self.n_restarts})")
        if self.n_restarts > 1 and not self.random_start:
            raise ConfigError("attack n_restarts > 1 needs random_start=true (without it every restart is the same)")

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1]; y: (N,). Returns x_adv with |x_adv - x| <= eps and x_adv in [0, 1]."""
        check_attack_inputs(model, x, y)
        with evaluating(model):
            return self.perturb(model, x, y)

    def step_sizes(self) -> list[float]:
        """The step size of each of the n_steps steps, in pixel units."""
        if self.step_schedule == "cosine":
            return [self.step_size * (1 + math.cos(math.pi * t / self.n_steps)) / 2 for t in range(self.n_steps)]
        return [self.step_size] * self.n_steps

    def perturb(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The attack without the mode switch (the caller has put the model in eval mode)."""
        x = x.detach()
        x_adv = self.single_run(model, x, y)
        if self.n_restarts == 1:
            return x_adv
        with torch.no_grad():
            logits = model(x_adv)
            best_loss = example_losses(logits, y, self.loss)
            fooled = logits.argmax(1) != y
        for _ in range(self.n_restarts - 1):
            # Only examples no run has fooled yet are attacked again: one host sync per restart, not per step.
            todo = (~fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            candidate = self.single_run(model, x[todo], y[todo])
            with torch.no_grad():
                logits = model(candidate)
                loss = example_losses(logits, y[todo], self.loss)
                fools = logits.argmax(1) != y[todo]
            better = fools | (loss > best_loss[todo])
            keep = better.reshape(-1, *[1] * (x.dim() - 1))
            x_adv[todo] = torch.where(keep, candidate, x_adv[todo])
            best_loss[todo] = torch.where(better, loss, best_loss[todo])
            fooled[todo] = fools
        return x_adv

    def single_run(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One PGD run from x (or a random start) returning its last iterate; x, y as in :meth:`__call__`."""
        if self.random_start:
            x_adv = project(x + torch.empty_like(x).uniform_(-self.eps, self.eps), x, self.eps)
        else:
            x_adv = x.clone()
        for step_size in self.step_sizes():
            grad = input_gradient(model, x_adv, y, self.loss)
            x_adv = project(x_adv + step_size * grad.sign(), x, self.eps)
        return x_adv.detach()
