"""TRADES' inner maximisation (Zhang et al. 2019): l-inf PGD on KL(softmax(model(x)) || softmax(model(x')))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from aelf.core.attacks.pgd import check_budget, check_pixel_size, project
from aelf.core.checks import check_attack_inputs
from aelf.core.errors import ConfigError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier


def kl_input_gradient(model: Classifier, x_adv: torch.Tensor, probs_nat: torch.Tensor) -> torch.Tensor:
    """d KL(probs_nat || softmax(model(x_adv))) / d x_adv, the KL summed over the batch (as the TRADES code).

    x_adv: (N, C, H, W); probs_nat: (N, K) constant target probabilities. Returns a tensor shaped like x_adv.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), probs_nat, reduction="sum")
    (grad,) = torch.autograd.grad(kl, x_adv)
    return grad


@dataclass(frozen=True)
class TradesKL:
    """x' = argmax over the eps-ball of KL(p(x) || p(x')), found with sign steps, as in the TRADES code.

    Defaults are the TRADES code's CIFAR-10 settings: eps 0.031, 10 steps of 0.007. The start is
    x + ``init_std`` * N(0, 1) (the code's 0.001; with 0 the ascent starts at x, the KL's minimum, where its
    gradient is zero and sign steps do not move). The KL target p(x) = softmax(model(x)) is computed once, in eval
    mode like every forward of the attack (the code recomputes it at each step, with the same result). Called as
    ``attack(model, x, y)`` like every attack; the labels y are not used.
    """

    name: ClassVar[str] = "trades_kl"
    label: ClassVar[str] = "TRADES-KL"
    description: ClassVar[str] = "l-inf sign-step ascent on the KL divergence between natural and adversarial outputs"
    reference: ClassVar[str] = "Zhang et al. 2019 (TRADES' inner maximisation)"
    family_budget: ClassVar[tuple[str, ...]] = ("eps", "n_steps", "step_size")  # the family's paper attack, whole
    eps: float = 0.031
    n_steps: int = 10
    step_size: float = 0.007
    init_std: float = 0.001

    def __post_init__(self) -> None:
        check_budget(self.eps, self.n_steps, self.step_size)
        if not self.init_std >= 0:
            raise ConfigError(f"attack init_std must be >= 0 (got {self.init_std})")
        check_pixel_size("init_std", self.init_std)

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1]. Returns x' with |x' - x| <= eps and x' in [0, 1]; the model's modes are kept."""
        check_attack_inputs(model, x, y)
        with evaluating(model):
            with torch.no_grad():
                probs_nat = F.softmax(model(x), dim=1)
            return self.perturb(model, x, probs_nat)

    def perturb(self, model: Classifier, x: torch.Tensor, probs_nat: torch.Tensor) -> torch.Tensor:
        """The sign-step ascent on KL(probs_nat || softmax(model(x'))) from x + init_std * N(0, 1); probs_nat: (N, K).

        Runs in the model's current mode (``__call__`` sets eval mode).
        """
        x = x.detach()
        # TRADES does not project the noisy start: every step below projects, so only the first forward sees it.
        x_adv = x + self.init_std * torch.randn_like(x)
        for _ in range(self.n_steps):
            grad = kl_input_gradient(model, x_adv, probs_nat)
            x_adv = project(x_adv + self.step_size * grad.sign(), x, self.eps)
        return x_adv.detach()
