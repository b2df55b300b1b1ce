"""AELF, the full Attention-Extended Learning Framework (Algorithm 1, Eq. 8).

    L1 = CE(W f, y),   L2 = d(f', sg(f)),   f = M_c(x) (N, D),   f' = M_c(x') (N, D),

where sg is stop-gradient: the natural features f are a constant target (Algorithm 1 line 8, "f <- f^"), so the
fitting is one-way, f' -> f, never f -> f' (footnote 4). The head W learns from L1 only, the feature extractor c
from L1 + lambda_feat * L2. ``distance`` picks d, averaged over the batch: ``l2`` ||f' - f||_2, ``squared_l2``
||f' - f||_2^2 or ``l1`` ||f' - f||_1.

One loss, one backward, one optimizer step is exactly Algorithm 1. Its lines 5-9 compute L1 once, update
w <- w - alpha dL1/dw, then c <- c - alpha d(L1 + lambda L2)/dc, with L1 still the loss of line 5: both gradients
are taken at the parameters of the start of the step. For L = L1 + lambda * L2(f', sg(f)):

- dL/dw = dL1/dw, because f' = M_c(x') does not involve w and sg(f) is a constant;
- dL/dc = d(L1 + lambda L2)/dc at the same parameters; updating w first does not change L2 (no w in it).

Plain SGD updates each parameter from its own gradient, so one optimizer over c and w takes the two updates of the
algorithm at once (with momentum and weight decay too, given the same settings for both). The test suite checks
this against a literal two-optimizer implementation.

The whole batch is natural *and* adversarial (Algorithm 1 lines 2-3 perturb the selected set), unlike the half
batches of JT and AELFs (Appendix C describes the joint methods). x and x' go through the model in two forward
passes, as lines 4 and 7 of the algorithm, so BatchNorm normalises the clean target features f with statistics of
clean inputs only. Algorithm 1 starts from any initialisation: no ST run is required (``train.init`` may give one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.attacks import PGD, AnyTrainingAttack
from aelf.core.attacks.craft import craft
from aelf.core.errors import ConfigError
from aelf.core.modes import check_attack_mode
from aelf.core.protocols import LossAndMetrics, SplitModel

DISTANCES = ("l2", "squared_l2", "l1")


def feature_distance(feats_adv: torch.Tensor, feats_target: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """Batch mean of ||feats_adv - feats_target|| (``l2``, ``squared_l2`` or ``l1``); both (N, D); a scalar."""
    diff = (feats_adv - feats_target).flatten(1)
    if distance == "l1":
        return diff.abs().sum(dim=1).mean()
    if distance == "squared_l2":
        return diff.square().sum(dim=1).mean()
    return diff.norm(dim=1).mean()


@dataclass(frozen=True)
class AELF:
    """``lambda_feat``: Eq. 8's lambda, the weight of L2; ``distance``: L2's norm; ``attack``: makes x' (CE, as AT);
    ``attack_mode``: ``eval`` (default) or ``train``, the mode it crafts x' in (:mod:`aelf.core.attacks.craft`)."""

    name: ClassVar[str] = "aelf"
    label: ClassVar[str] = "AELF"
    description: ClassVar[str] = (
        "AELF, the Attention-Extended Learning Framework: adversarial features fitted to the clean features"
    )
    reference: ClassVar[str] = "the paper's method: Algorithm 1, Eq. 8"
    lambda_feat: float = 1.0
    distance: str = "l2"
    attack: AnyTrainingAttack = field(default_factory=PGD)
    attack_mode: str = "eval"

    def __post_init__(self) -> None:
        check_attack_mode(self.attack_mode)
        if not self.lambda_feat >= 0:
            raise ConfigError(f"method.lambda_feat must be >= 0 (got {self.lambda_feat})")
        if self.distance not in DISTANCES:
            raise ConfigError(f"method.distance must be one of {', '.join(DISTANCES)} (got {self.distance!r})")

    def trainable_parameters(self, model: SplitModel) -> list[nn.Parameter]:
        return list(model.parameters())

    def loss(self, model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        x_adv = craft(self.attack, model, x, y, self.attack_mode)
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        ce_nat = F.cross_entropy(logits, y)
        feats_adv = model.forward_features(x_adv)
        # detach: f is the fixed target of line 8; L2's gradient reaches c only through f'
        feat_dist = feature_distance(feats_adv, feats.detach(), self.distance)
        loss = ce_nat + self.lambda_feat * feat_dist
        with torch.no_grad():
            logits_adv = model.forward_head(feats_adv)
        return loss, {
            "loss": loss.detach(),
            "ce_nat": ce_nat.detach(),
            "feat_dist": feat_dist.detach(),
            "nat_acc": (logits.detach().argmax(1) == y).float().mean(),
            "adv_acc": (logits_adv.argmax(1) == y).float().mean(),
        }
