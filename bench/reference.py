"""The reference loop, written the way common adversarial-training repositories write it: the oracle the
aelf path is timed against, and which the tests compare aelf's attacks and objectives with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.workloads import AELFS_BETA, GRAD_ALIGN, TRADES_BETA, Workload

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


def reference_fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float):
    """FGSM with a random start as Wong et al.'s code writes it: a uniform delta in the eps-ball (x + delta kept in
    [0, 1]), ``loss.backward()`` (weight gradients too), one signed step of alpha on delta, delta clamped back to the
    ball and x + delta to [0, 1]; eval mode during the attack, train mode after."""
    model.eval()
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    delta = (torch.clamp(x + delta, 0.0, 1.0) - x).requires_grad_()
    loss = F.cross_entropy(model(x + delta), y)
    loss.backward()
    delta = torch.clamp(delta.detach() + alpha * delta.grad.sign(), -eps, eps)
    model.zero_grad()
    model.train()
    return torch.clamp(x + delta, 0.0, 1.0).detach()


def reference_n_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: float, alpha: float):
    """N-FGSM as de Jorge et al.'s code writes it: uniform noise of half-width ``noise`` (x + eta kept in [0, 1]),
    ``loss.backward()``, one signed step of alpha, no projection onto the eps-ball, the result clamped to [0, 1];
    eval mode during the attack, train mode after."""
    model.eval()
    x_noisy = torch.clamp(x + torch.zeros_like(x).uniform_(-noise, noise), 0.0, 1.0).requires_grad_()
    loss = F.cross_entropy(model(x_noisy), y)
    loss.backward()
    x_adv = x_noisy.detach() + alpha * x_noisy.grad.sign()
    model.zero_grad()
    model.train()
    return torch.clamp(x_adv, 0.0, 1.0).detach()


def reference_grad_align(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """GradAlign's 1 - cos term as the authors' code writes it (``get_input_grad`` twice: at x without a graph, at a
    uniform point of the eps-ball with ``create_graph=True``), in eval mode as aelf takes it, train mode after."""
    model.eval()
    clean = x.detach().clone().requires_grad_()
    grad1 = torch.autograd.grad(F.cross_entropy(model(clean), y), clean)[0].detach()
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    noisy = (torch.clamp(x + delta, 0.0, 1.0)).requires_grad_()
    grad2 = torch.autograd.grad(F.cross_entropy(model(noisy), y), noisy, create_graph=True)[0]
    model.train()
    cos = F.cosine_similarity(grad1.reshape(len(x), -1), grad2.reshape(len(x), -1), 1)
    return 1.0 - cos.mean()


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

    def single_step(x, y):
        if step.split("-")[1] == "fgsm_rs":
            return reference_fgsm_rs(model, x, y, fast.eps, fast.step)
        return reference_n_fgsm(model, x, y, noisy.noise_scale * noisy.eps, noisy.step)

    def at_single(x, y):
        x_adv = single_step(x, y)
        loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def aelfs_single(x, y):
        n_nat = x.shape[0] - x.shape[0] // 2
        x_adv = single_step(x[n_nat:], y[n_nat:])
        loss = reference_aelfs_objective(model, x[:n_nat], x_adv, y, AELFS_BETA)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def at_grad_align(x, y):
        x_adv = single_step(x, y)
        reg = reference_grad_align(model, x, y, fast.eps)
        loss = F.cross_entropy(model(x_adv), y) + GRAD_ALIGN * reg
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    fast, noisy = workload.fgsm_rs, workload.n_fgsm
    return {
        "st": st,
        "at": at,
        "trades": trades,
        "aelfs": aelfs,
        "at-fgsm_rs": at_single,
        "at-n_fgsm": at_single,
        "aelfs-fgsm_rs": aelfs_single,
        "aelfs-n_fgsm": aelfs_single,
        "at-fgsm_rs-gradalign": at_grad_align,
    }[step]


# --------------------------------------------------------------------------------------------------------------
# The two training paths.
