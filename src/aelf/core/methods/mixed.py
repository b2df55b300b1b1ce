"""What the joint methods (JT, JT*, AELFs) share: a batch whose second part is made adversarial (Appendix C), the
natural:adversarial loss weights (checked by :func:`check_weights`), the feature-norm penalty of Eq. 10 and the
choice of one or two sets of BatchNorm layers (``bn``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.attacks.craft import craft
from aelf.core.errors import ConfigError
from aelf.core.models.split_bn import natural_inputs
from aelf.core.protocols import Attack, SplitModel


def check_weights(lambda_nat: float, lambda_adv: float) -> None:
    """The natural:adversarial loss ratio, written lambda1:lambda2 in Eq. 10: each in [0, 1], summing to 1."""
    for key, value in (("lambda_nat", lambda_nat), ("lambda_adv", lambda_adv)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"method.{key} must be in [0, 1] (got {value})")
    if abs(lambda_nat + lambda_adv - 1.0) > 1e-6:
        raise ConfigError(f"method.lambda_nat + method.lambda_adv must be 1 (got {lambda_nat} + {lambda_adv})")


PENALTIES = ("l2", "squared_l2")


def check_penalty(beta: float, beta_nat: float | None, beta_adv: float | None, penalty: str) -> None:
    for key, value in (("beta", beta), ("beta_nat", beta_nat), ("beta_adv", beta_adv)):
        if value is not None and not value >= 0:
            raise ConfigError(f"method.{key} must be >= 0 (got {value})")
    if penalty not in PENALTIES:
        raise ConfigError(f"method.penalty must be one of {', '.join(PENALTIES)} (got {penalty!r})")


def feature_penalty(
    feats: torch.Tensor,
    n_nat: int,
    beta: float,
    beta_nat: float | None = None,
    beta_adv: float | None = None,
    penalty: str = "l2",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 10's beta * (||f||_2 + ||f'||_2), with beta optionally set apart for f and f' (Section 3.2).

    feats: (N, D), natural rows first (``mixed_forward``). Each norm is averaged over its part of the batch:
    ``beta_nat * mean ||f|| + beta_adv * mean ||f'||``, ``None`` meaning ``beta``; ``penalty="squared_l2"`` squares
    the norms. Returns ``(penalty, norms)``, norms (N,) being the l2 norms of the rows.
    """
    norms = feats.norm(dim=1)
    values = norms.square() if penalty == "squared_l2" else norms
    beta_nat = beta if beta_nat is None else beta_nat
    beta_adv = beta if beta_adv is None else beta_adv
    mean_nat, mean_adv = values[:n_nat].mean(), values[n_nat:].mean()
    if beta_nat == beta_adv:  # factored out: one beta gives the original Eq. 10 expression bit for bit
        return beta_nat * (mean_nat + mean_adv), norms
    return beta_nat * mean_nat + beta_adv * mean_adv, norms


def check_fraction(adv_fraction: float) -> None:
    if not 0.0 < adv_fraction < 1.0:
        raise ConfigError(f"method.adv_fraction must be strictly between 0 and 1 (got {adv_fraction})")


def n_adversarial(batch_size: int, adv_fraction: float) -> int:
    """How many examples of a batch are made adversarial: the last ``n`` (at least one, at most all but one)."""
    return min(batch_size - 1, max(1, round(batch_size * adv_fraction)))


def mixed_forward(
    model: SplitModel,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    adv_fraction: float,
    attack_mode: str = "eval",
    bn: str = "shared",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Attack the last part of the batch and run natural and adversarial examples through the model.

    x: (N, C, H, W) in [0, 1]; y: (N,); ``attack_mode``: the mode the attack crafts in (``eval`` or ``train``,
    :func:`aelf.core.attacks.craft.craft`). Returns ``(feats, logits, n_nat)`` for the batch
    ``cat([x[:n_nat], attack(x[n_nat:])])``. ``bn="shared"``: one forward pass, so BatchNorm sees the same mixed
    batch as in the paper. ``bn="split"`` (a model with split BatchNorm, :mod:`aelf.core.models.split_bn`): the
    natural part through the natural set, the adversarial part through the adversarial set, in two passes (the
    layers between BatchNorms act on each image alone, so this is the one batch with each part normalised by its own
    statistics).
    """
    n_nat = x.shape[0] - n_adversarial(x.shape[0], adv_fraction)
    x_adv = craft(attack, model, x[n_nat:], y[n_nat:], attack_mode)
    if bn == "split":
        assert isinstance(model, nn.Module)  # split BatchNorm layers live in a torch module
        with natural_inputs(model):
            feats_nat = model.forward_features(x[:n_nat])
        feats = torch.cat([feats_nat, model.forward_features(x_adv)])
    else:
        feats = model.forward_features(torch.cat([x[:n_nat], x_adv]))
    return feats, model.forward_head(feats), n_nat


def split_losses(
    logits: torch.Tensor, y: torch.Tensor, n_nat: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy and accuracy of the natural part and of the adversarial part."""
    ce_nat = F.cross_entropy(logits[:n_nat], y[:n_nat])
    ce_adv = F.cross_entropy(logits[n_nat:], y[n_nat:])
    correct = (logits.detach().argmax(1) == y).float()
    return ce_nat, ce_adv, {"nat_acc": correct[:n_nat].mean(), "adv_acc": correct[n_nat:].mean()}
