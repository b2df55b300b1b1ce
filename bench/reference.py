"""The reference loop, written the way common adversarial-training repositories write it: the oracle the
aelf path is timed against, and which the tests compare aelf's attacks and objectives with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.workloads import AELFS_BETA, TRADES_BETA, Workload

# --------------------------------------------------------------------------------------------------------------
# The reference loop, written the way common adversarial-training repositories write it.


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, n_steps: int):
    """A naive l-inf PGD from x: ``loss.backward()`` (which also computes every weight gradient), ``x_adv.grad``,
    ``model.zero_grad()``; eval mode during the attack, train mode after."""
    model.eval()
    x_adv = x.detach().clone()
    for _ in range(n_steps):
        x_adv.requires_grad_()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        grad = x_adv.grad.detach()
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
        model.zero_grad()
    model.train()
    return x_adv.detach()


def reference_trades_attack(model: nn.Module, x_natural: torch.Tensor, eps: float, step_size: float, n_steps: int):
    """The inner maximisation of the TRADES repository's ``trades_loss`` (l-inf), as written there: the clean
    target ``softmax(model(x_natural))`` is recomputed at every step; eval mode inside, train mode after."""
    criterion_kl = nn.KLDivLoss(reduction="sum")  # the code's size_average=False (a deprecated spelling of it)
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, device=x_natural.device).detach()
    for _ in range(n_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - eps), x_natural + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    return torch.clamp(x_adv, 0.0, 1.0).detach()


def reference_trades_objective(
    model: nn.Module, x_natural: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """The outer loss of the TRADES repository: CE(model(x)) + beta * KLDivLoss(size_average=False) / batch, with
    ``model(x_natural)`` run once for the cross-entropy and once more for the KL target."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    batch_size = len(x_natural)
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(
        F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1)
    )
    return loss_natural + beta * loss_robust


def reference_aelfs_objective(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """JT-style AELFs loss: 0.5 CE(natural half) + 0.5 CE(adversarial half) + beta (mean ||f|| + mean ||f'||)."""
    n_nat = x.shape[0]
    feats = model.forward_features(torch.cat([x, x_adv]))
    logits = model.forward_head(feats)
    loss = 0.5 * F.cross_entropy(logits[:n_nat], y[:n_nat]) + 0.5 * F.cross_entropy(logits[n_nat:], y[n_nat:])
    return loss + beta * (feats[:n_nat].norm(dim=1).mean() + feats[n_nat:].norm(dim=1).mean())


def reference_step_function(step: str, workload: Workload, model: nn.Module, optimizer) -> Callable:
    """``fn(x, y)``: one reference training step on a batch already on the device."""
    pgd, tk = workload.pgd, workload.trades

    def st(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def at(x, y):
        x_adv = reference_pgd(model, x, y, pgd.eps, pgd.step_size, pgd.n_steps)
        loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def trades(x, y):
        x_adv = reference_trades_attack(model, x, tk.eps, tk.step_size, tk.n_steps)
        optimizer.zero_grad()
        loss = reference_trades_objective(model, x, x_adv, y, TRADES_BETA)
        loss.backward()
        optimizer.step()

    def aelfs(x, y):
        n_nat = x.shape[0] - x.shape[0] // 2
        x_adv = reference_pgd(model, x[n_nat:], y[n_nat:], pgd.eps, pgd.step_size, pgd.n_steps)
        loss = reference_aelfs_objective(model, x[:n_nat], x_adv, y, AELFS_BETA)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return {"st": st, "at": at, "trades": trades, "aelfs": aelfs}[step]


# --------------------------------------------------------------------------------------------------------------
# The two training paths.
