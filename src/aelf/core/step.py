"""One optimisation step and its bookkeeping: the optimizer over a method's parameters, the step itself, the epoch's
running metric sums, the non-finite-loss guard, the process-wide determinism setting and the signal flag.

The optimizer is built only from ``method.trainable_parameters(model)``; every other parameter gets
``requires_grad=False`` for the run, so it cannot change (AELFs' frozen head) and costs no weight-gradient work.
The model is in train mode for the method's loss (:func:`aelf.core.modes.training`); attacks switch to eval mode
themselves through :func:`aelf.core.modes.evaluating`.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aelf.core import distributed
from aelf.core.accuracy import count_correct
from aelf.core.errors import DivergenceError
from aelf.core.modes import training
from aelf.core.protocols import LossAndMetrics, Method, SplitModel


def set_determinism(enabled: bool, device: torch.device) -> None:
    """The trainer's process-wide setting: ``torch.use_deterministic_algorithms(enabled)`` (warn-only on CUDA, where
    some kernels have no deterministic version), without PyTorch's NaN-fill of new tensors.

    Deterministic mode also fills every new tensor with NaN (a debugging aid that costs a large share of a step's CPU
    time, BENCHMARKS.md) and changes no result, since every tensor we read was written first.
    """
    torch.use_deterministic_algorithms(enabled, warn_only=device.type == "cuda")
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # torch: untyped


@contextmanager
def checkpoint_on_signal() -> Iterator[list[int]]:
    """While training, SIGINT/SIGTERM only raise a flag; the loop saves a checkpoint at the next step and stops."""
    received: list[int] = []
    handlers = {}

    def handle(signum: int, _frame: object) -> None:
        received.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[signum] = signal.signal(signum, handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield received
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


@dataclass
class TrainingState:
    """Counters and running metric sums of the epoch in progress (device tensors: no sync per step)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    sums: dict[str, Any] | None = None
    bad_step: torch.Tensor | None = None


def train_step(
    method: Method,
    model: SplitModel,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_module: torch.nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> LossAndMetrics:
    """One optimisation step of ``method`` on the batch (x, y); returns the loss and the method's metrics.

    ``loss_module``: what computes ``method.loss(model, x, y)``; under DDP the wrapped :class:`MethodLoss`, whose
    backward averages the gradients across ranks. ``autocast_dtype``: run the loss, its attacks included, under
    ``torch.autocast`` in that dtype (``train.amp: bf16``); parameters and optimizer stay fp32.
    """
    with training(model), torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss, metrics = loss_module(x, y) if loss_module is not None else method.loss(model, x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, metrics


def compile_in_place(model: torch.nn.Module) -> None:
    """``train.compile``: torch.compile each direct child of the model in place.

    Methods call ``forward_features`` and ``forward_head`` as well as ``forward``, and ``torch.compile(model)`` would
    only compile the latter; compiling the children (CNNb: the feature stack and the head) covers every entry point
    while the module keeps its attributes and ``state_dict`` keys.
    """
    for child in model.children():
        child.compile()


def evaluate_natural(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    context: distributed.Context = distributed.SINGLE,
) -> float:
    """Natural accuracy as a fraction in [0, 1] (the unit of every accuracy in metrics.jsonl), sharded across
    torchrun ranks like :func:`aelf.core.accuracy.count_correct`."""
    return round(count_correct(model, x, y, None, batch_size, context) / max(1, len(y)), 6)


def json_line(row: dict[str, Any]) -> str:
    return json.dumps(row) + "\n"


def record_step(state: TrainingState, loss: torch.Tensor, metrics: dict[str, Any]) -> None:
    """Add the step's metrics to the epoch sums and remember the first step with a non-finite loss."""
    state.global_step += 1
    state.step_in_epoch += 1
    if state.sums is None:
        state.sums = {}
    for key, value in metrics.items():
        value = value.detach().float()
        state.sums[key] = state.sums[key] + value if key in state.sums else value.clone()
    finite = torch.isfinite(loss.detach())
    step = torch.tensor(state.global_step, device=loss.device)
    if state.bad_step is None:
        state.bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
    state.bad_step = torch.where((state.bad_step < 0) & ~finite, step, state.bad_step)


def check_finite(
    state: TrainingState, context: distributed.Context = distributed.SINGLE, device: torch.device | None = None
) -> None:
    """Stop on a non-finite loss; under DDP every rank stops if any rank saw one (the first bad step wins)."""
    never = 2**62  # no bad step on this rank
    bad = int(state.bad_step.item()) if state.bad_step is not None else -1
    bad = distributed.agree_min(bad if bad >= 0 else never, context, device)
    if bad != never:
        raise DivergenceError(
            f"non-finite loss at step {bad} (epoch {state.epoch + 1}); the run stopped and its last good "
            "checkpoint is kept: lower train.lr or check the data"
        )
