"""GradAlign (Andriushchenko & Flammarion 2020): keep input gradients aligned across the eps-ball.

    align = mean_i cos(grad_x CE(x_i, y_i), grad_x CE(x_i + eta_i, y_i)),   eta ~ U(-eps, eps) (clipped to [0, 1]),

and a method adds ``weight * (1 - align)`` to its loss. Single-step attacks overfit catastrophically when the loss
stops being locally linear, so that one signed step no longer finds the worst case in the ball; aligned gradients
keep it linear. As in the authors' code, the gradient at x is a constant and the one at x + eta is differentiated
(double backpropagation: ``create_graph=True``).

Both gradients are taken in eval mode, like every attack here (Appendix C): the regulariser should make the
*attack's* linear approximation valid, and aelf's single-step attacks differentiate the eval-mode network. (The
authors' code trains in train mode throughout.) Eval mode also keeps the double backward away from the cross-rank
BatchNorm statistics of a torchrun job and leaves the running statistics untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aelf.core.attacks import input_gradient, project
from aelf.core.errors import ConfigError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier


def check_grad_align(weight: float) -> None:
    if not weight >= 0:
        raise ConfigError(f"method.grad_align must be >= 0 (got {weight})")


def gradient_alignment(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The batch mean of the cosine between the input gradients at x and at a uniform point of the eps-ball.

    x: (N, C, H, W) in [0, 1]; y: (N,). Returns a scalar in [-1, 1] that is differentiable in the model's
    parameters. The noise comes from torch's global generator (like the attacks' random starts).
    """
    x = x.detach()
    with evaluating(model):
        clean = input_gradient(model, x, y)
        noisy = project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps).requires_grad_(True)
        loss = F.cross_entropy(model(noisy), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, noisy, create_graph=True)
    return F.cosine_similarity(clean.flatten(1), grad.flatten(1), dim=1).mean()
