"""TRADES (Eq. 5; Zhang et al. 2019): natural cross-entropy plus beta times the KL from natural to adversarial output.

    loss = CE(model(x), y) + beta * KL(softmax(model(x)) || softmax(model(x'))),

the KL summed over classes and averaged over the batch (``batchmean``, the TRADES code's ``(1 / batch_size) *
KLDivLoss(size_average=False)``), x' from :class:`~aelf.core.attacks.TradesKL`. The paper's "TR lambda = 1, 2, 3, 6"
(Tables 3-5) is this ``beta``; 6 is TRADES' own CIFAR-10 choice.

Forward passes per step, and why the clean logits are not shared between the attack and the loss:

- the attack runs in eval mode (Appendix C; BatchNorm with running statistics), so its KL target softmax(model(x))
  must be an eval-mode output too, as in the TRADES code: against a train-mode target the KL would not be zero at
  x' = x and the ascent would chase the BatchNorm mode difference. The attack computes that target once, without
  gradient (the code recomputes it at every step, to the same value);
- the loss runs in train mode: one forward of x gives the logits of both the cross-entropy and the KL's first
  argument (the code runs x through the model twice for them; same values, BatchNorm's running statistics are
  updated once instead of twice). As in the code, the KL's gradient flows through both distributions;
- x' goes through the model in its own forward pass, so BatchNorm normalises natural and adversarial batches
  separately, as in the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aelf.core.attacks import TradesKL
from aelf.core.errors import ConfigError
from aelf.core.protocols import LossAndMetrics, SplitModel


@dataclass(frozen=True)
class TRADES:
    """``beta``: weight of the KL term (the paper's TR lambda; default 6). ``attack``: the inner maximisation.

    The attack must be a :class:`~aelf.core.attacks.TradesKL` (the KL maximisation of Zhang et al.): a run is rebuilt
    from its saved config, which can only describe that attack, so any other would make the run unreadable.
    The single-step training attacks (``fgsm_rs``, ``n_fgsm``) are not offered: they ascend the cross-entropy with
    the labels, not TRADES' KL, so TRADES with them would be another method; single-step TRADES is this attack
    with ``n_steps: 1`` (and ``step_size`` eps), its ``init_std`` noise being the random start.
    """

    name: ClassVar[str] = "trades"
    label: ClassVar[str] = "TRADES"
    description: ClassVar[str] = (
        "TRADES: natural cross-entropy plus beta times the KL divergence to the adversarial output"
    )
    reference: ClassVar[str] = "Zhang et al. 2019; Eq. 5 of the paper"
    beta: float = 6.0
    attack: TradesKL = field(default_factory=TradesKL)

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ConfigError(f"method.beta must be >= 0 (got {self.beta})")
        if not isinstance(self.attack, TradesKL):
            raise ConfigError(f"method.attack of trades must be a TradesKL (got {type(self.attack).__name__})")

    def trainable_parameters(self, model: SplitModel) -> list[nn.Parameter]:
        return list(model.parameters())

    def loss(self, model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> LossAndMetrics:
        x_adv = self.attack(model, x, y)
        logits_nat = model(x)
        logits_adv = model(x_adv)
        ce_nat = F.cross_entropy(logits_nat, y)
        kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="batchmean")
        loss = ce_nat + self.beta * kl
        return loss, {
            "loss": loss.detach(),
            "kl": kl.detach(),
            "nat_acc": (logits_nat.detach().argmax(1) == y).float().mean(),
            "adv_acc": (logits_adv.detach().argmax(1) == y).float().mean(),
        }
