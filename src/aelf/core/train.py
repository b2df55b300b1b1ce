"""The training loop: one method, one model, one run folder, resumable at any checkpoint.

The optimizer is built only from ``method.trainable_parameters(model)``; every other parameter gets
``requires_grad=False`` for the run, so it cannot change (AELFs' frozen head) and costs no weight-gradient work.
The model is in train mode for the method's loss (:func:`aelf.core.modes.training`); attacks switch to eval mode
themselves through :func:`aelf.core.modes.evaluating`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from aelf.core import cpu_heap, distributed
from aelf.core.accuracy import count_correct
from aelf.core.best import save_best
from aelf.core.checkpoint import (
    WEIGHTS,
    clean_staging,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
    write_json,
    write_text,
)
from aelf.core.checks import check_user_model, checked_once
from aelf.core.config import Config, to_dict
from aelf.core.data import batch_generator, steps_per_epoch, train_batches
from aelf.core.errors import CheckpointError, ConfigError, DivergenceError, TrainingInterrupted
from aelf.core.memory_format import model_memory_format
from aelf.core.models import CUSTOM, CustomModelOptions, split_interface, split_state
from aelf.core.modes import training
from aelf.core.optim import make_optimizer, make_scheduler, per_iteration, step_lr
from aelf.core.protocols import LossAndMetrics, Method, SplitModel
from aelf.core.resume import (
    TIME_KEY,
    check_out_dir,
    rank_state,
    record_extension,
    restore_scheduler,
    rng_state,
    seed_everything,
    set_rng_state,
    starting_point,
    timeless,
    with_times,
)
from aelf.core.run import CONFIG, META, METRICS, check_fits, environment, model_for, read_config, run_data
from aelf.core.runlock import LOCK, run_lock
from aelf.core.tensorboard import TensorBoardLogger
from aelf.core.validation import (
    OVERFIT,
    hold_out,
    is_best,
    is_validation_epoch,
    overfit_event,
    overfit_message,
    stopped_on_overfit,
    validate,
    validation_attacks,
    validation_seed,
)

LOG_EVERY = 10  # steps between progress-bar refreshes (each one synchronises with the device)
log = logging.getLogger(__name__)


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


def check_ready(config: Config) -> None:
    """Problems that do not need data or models: found before any work starts."""
    method = config.method
    if getattr(method, "needs_init", False) and not config.train.init:
        raise ConfigError(f"method {method.name} starts from a trained run: give one with --init RUN (train.init)")
    if config.train.init:
        init_dir = Path(config.train.init)
        if not (init_dir / WEIGHTS).is_file():
            raise CheckpointError(f"train.init: {init_dir} is not a finished run (no {WEIGHTS})")
        init_config = read_config(init_dir)
        if init_config.model != config.model or init_config.data.name != config.data.name:
            raise ConfigError(
                f"train.init: {init_dir} was trained with model {to_dict(init_config.model)} on "
                f"{init_config.data.name}, not model {to_dict(config.model)} on {config.data.name}"
            )


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


def train(
    config: Config | None,
    out: str | Path,
    *,
    resume: bool = False,
    resume_if_exists: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    model: torch.nn.Module | None = None,
) -> Path:
    """Train ``config`` into the run folder ``out`` and return it. With ``resume``, continue from its last checkpoint.

    ``resume_if_exists``: start the run, or continue it when ``out`` already holds a run of the same configuration
    (another configuration is a ConfigError naming the settings that differ; :mod:`aelf.core.resume`).
    With ``resume`` and a ``config``, that config may differ from the run's saved one only by more ``train.epochs``: the
    finished (or stopped) run continues to the new end, recorded in meta.json's ``extended``.
    ``model``: a user's own network taking pixels in [0, 1], used instead of ``config.model`` (the run records
    ``model.name: custom``). It needs ``forward_features``/``forward_head`` or a last ``nn.Linear`` that produces its
    output (:func:`aelf.core.models.as_split_model`). Resuming or loading such a run takes a fresh instance of it again.

    The writing process holds ``out/.lock`` while it trains (:mod:`aelf.core.runlock`): a second writer of the same
    folder gets :class:`~aelf.core.runlock.RunLockedError`. Raises :class:`AelfError` subclasses for bad input
    (before anything is written), :class:`DivergenceError` on a non-finite loss (the last good checkpoint is kept)
    and :class:`TrainingInterrupted` after SIGINT/SIGTERM (a checkpoint of the current step is saved).
    """
    out = Path(out)
    check_out_dir(out, resume, resume_if_exists, overwrite)  # a refused folder is not even locked
    with run_lock(out) if distributed.is_main_process() else contextlib.nullcontext():
        return _train(config, out, resume, resume_if_exists, overwrite, progress, model)


def _train(
    config: Config | None,
    out: Path,
    resume: bool,
    resume_if_exists: bool,
    overwrite: bool,
    progress: bool,
    model: nn.Module | None,
) -> Path:
    if model is not None and config is not None:
        config = replace(config, model=CustomModelOptions(config.model.width, config.model.activation))
    config, resume = starting_point(out, config, resume, resume_if_exists, overwrite)
    saved_epochs = read_config(out).train.epochs if resume else None
    if model is not None:
        config = replace(config, model=CustomModelOptions(config.model.width, config.model.activation))
    elif config.model.name == CUSTOM:
        raise ConfigError(f"{out} trains a user's own model: pass an instance of it (train(..., model=...))")
    check_ready(config)
    tc = config.train
    context, device = distributed.setup(tc.device, tc.dist_timeout_s)
    rank_slice = distributed.shard(tc.batch_size, context)
    set_determinism(tc.deterministic, device)

    data = run_data(config, out if resume else None)  # a user's files: checked against the run's record on resume
    (x_train, y_train), (x_test, y_test) = data.pair("train"), data.pair("test")
    validation: tuple[torch.Tensor, torch.Tensor] | None = None
    if tc.val_size:  # robust validation on images held out from the training data (aelf.core.validation)
        x_train, y_train, x_val, y_val = hold_out(x_train, y_train, tc.val_size, tc.seed)
        validation = (x_val, y_val)
    n_steps = steps_per_epoch(len(x_train), tc.batch_size)
    if n_steps == 0:
        raise ConfigError(
            f"train.batch_size {tc.batch_size} exceeds the {len(x_train)} training images"
            f"{' left after train.val_size' if tc.val_size else ''}: give --set train.batch_size={len(x_train)} "
            "(or fewer)"
        )
    distributed.barrier(context)  # every rank has checked the folder before rank 0 writes into it
    if context.is_main:
        clean_staging(out)  # temporary files and half-written checkpoints of a process that was killed

    seed_everything(tc.seed)  # the same initial weights on every rank
    user_model = model
    model = model_for(config, model, data.spec)
    # before anything is written: a user's network against the data, or ours against the images' size
    if user_model is not None:
        check_user_model(model, x_train[:2], data.spec.num_classes)
    else:
        check_fits(model, x_train, data.spec.num_classes, data.source)
    if tc.init and not resume:  # a split-BN model starting from a plain run: both sets copy its BatchNorm
        load_weights(model, Path(tc.init) / WEIGHTS, convert=lambda tensors: split_state(model, tensors))
    if context.distributed:
        seed_everything(tc.seed + 1_000_003 * context.rank)  # but each rank its own random starts and dropout
    method = config.method
    memory_format = model_memory_format(model, device)  # channels_last unless it reaches a broken CPU kernel
    model.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]  # torch: untyped
    model = distributed.sync_batchnorm(model, context, device, tc.sync_batchnorm)
    x_train = x_train.to(device).contiguous(memory_format=memory_format)
    y_train = y_train.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    if validation is not None:
        x_val, y_val = validation
        validation = (x_val.to(device).contiguous(memory_format=torch.channels_last), y_val.to(device))
    val_attacks = validation_attacks(config.eval.attack, tc.val_attack_steps)
    optimizer = make_optimizer(method, split_interface(model), tc)
    if tc.compile:
        compile_in_place(model)
    loss_module = distributed.wrap(split_interface(model), method, context, device)
    autocast_dtype = torch.bfloat16 if tc.amp == "bf16" else None
    augment = data.family.augment
    scheduler = make_scheduler(optimizer, tc, n_steps)
    iteration_schedule = per_iteration(tc)  # cosine, cyclic, warm-up: the rate changes every step

    state = TrainingState()
    history: list[dict[str, Any]] = []
    if resume and (folder := latest_checkpoint(out)) is not None:
        saved = load_checkpoint(folder, model)
        optimizer.load_state_dict(saved["optimizer"])
        restore_scheduler(scheduler, saved["scheduler"])
        mine = rank_state(saved, context, tc.seed)
        set_rng_state(mine["rng"])
        state = TrainingState(saved["epoch"], saved["step_in_epoch"], saved["step"], mine["sums"])
        history = with_times(list(saved["history"]), out)
        if context.is_main and saved_epochs != tc.epochs:  # --resume RUN --set train.epochs=N: a longer run
            record_extension(out, read_config(out), config, state.global_step)
        if context.is_main:
            print(
                f"resuming {out} from step {state.global_step} of {tc.epochs * n_steps} (epoch {state.epoch + 1} of "
                f"{tc.epochs}, {folder.name})",
                flush=True,
            )
    elif not resume and context.is_main:
        if out.exists() and overwrite:
            for path in out.iterdir():
                if path.name == LOCK:  # this process holds it
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG, to_dict(config))
        meta = {"seed": tc.seed, "world_size": context.world_size, **environment(), **data.meta()}
        write_json(out / META, {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta})

    stopped = stopped_on_overfit(history, tc.stop_on_overfit)  # a resumed run that had ended on the guard

    def checkpoint() -> None:
        check_finite(state, context, device)
        per_rank = distributed.gather_objects({"rng": rng_state(), "sums": state.sums}, context)
        if context.is_main:
            save_checkpoint(
                out,
                model,
                {
                    "step": state.global_step,
                    "epoch": state.epoch,
                    "step_in_epoch": state.step_in_epoch,
                    "sums": state.sums,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": per_rank[0]["rng"],
                    "ranks": per_rank if context.distributed else [],
                    "world_size": context.world_size,
                    "history": [timeless(row) for row in history],
                },
                keep=tc.keep_checkpoints,
            )
        distributed.barrier(context)

    def stop_requested(signals: list[int]) -> int:
        """The signal to stop on, agreed by every rank (checked every LOG_EVERY steps when distributed), or 0."""
        if not context.distributed:
            return signals[0] if signals else 0
        if state.global_step % LOG_EVERY and state.step_in_epoch != n_steps:
            return 0
        return distributed.agree_max(signals[0] if signals else 0, context, device)

    # Training curves for TensorBoard, when it is installed (rank 0 only); on resume, epochs logged after the
    # checkpoint by the interrupted run are dropped.
    tensorboard = TensorBoardLogger(out, purge_step=state.epoch + 1) if context.is_main else None
    bar = tqdm(
        total=tc.epochs * n_steps,
        initial=state.global_step,
        desc=f"{method.name} {out.name}",
        disable=not (progress and context.is_main),
        dynamic_ncols=True,
        leave=False,
    )
    with (
        checkpoint_on_signal() as signals,
        tensorboard or contextlib.nullcontext(),
        cpu_heap.for_run(tc, device),  # no page faults per step on CPU (aelf.core.cpu_heap)
        checked_once(),  # the data were checked when loaded: attacks do not check every batch again
    ):
        while state.epoch < tc.epochs and not stopped:
            if state.sums is None:
                state.sums = {}
            epoch_start = time.perf_counter()
            for x, y in train_batches(x_train, y_train, tc.batch_size, tc.seed, state.epoch, state.step_in_epoch):
                if augment is not None:  # Appendix C: random crops and flips for CIFAR, done on the device
                    x = augment(x, generator=batch_generator(tc.seed, state.epoch, state.step_in_epoch))
                x, y = x[rank_slice], y[rank_slice]  # this rank's share of the global batch
                loss, metrics = train_step(method, model, optimizer, x, y, loss_module, autocast_dtype)
                if iteration_schedule:
                    scheduler.step()
                record_step(state, loss, metrics)
                bar.update(1)
                if state.global_step % LOG_EVERY == 0 or state.step_in_epoch == n_steps:
                    check_finite(state, context, device)
                    bar.set_postfix({k: f"{v.item() / state.step_in_epoch:.3f}" for k, v in state.sums.items()})
                if tc.checkpoint_every and state.global_step % tc.checkpoint_every == 0:
                    checkpoint()
                if signum := stop_requested(signals):
                    checkpoint()
                    bar.close()
                    raise TrainingInterrupted(
                        f"{signal.Signals(signum).name} received: checkpoint saved at step {state.global_step} in "
                        f"{out}; continue with: aelf train --resume {out}",
                        signum,
                    )
            check_finite(state, context, device)
            steps = max(1, state.step_in_epoch)
            row = {
                "epoch": state.epoch + 1,
                "step": state.global_step,
                "lr": step_lr(tc, n_steps, state.global_step - 1)
                if iteration_schedule
                else optimizer.param_groups[0]["lr"],
                **{
                    k: round(distributed.all_sum(v, context).item() / (steps * context.world_size), 6)
                    for k, v in state.sums.items()
                },
                "test_nat_acc": evaluate_natural(model, x_test, y_test, context=context),
                TIME_KEY: round(time.perf_counter() - epoch_start, 3),
            }
            if validation is not None and is_validation_epoch(state.epoch + 1, tc.eval_every, tc.epochs):
                seed = validation_seed(tc.seed, state.epoch + 1)
                row |= validate(model, *validation, val_attacks, seed, config.eval.batch_size, context)
            history.append(row)
            if overfit := overfit_event(history, tc.overfit_drop):
                row[OVERFIT] = overfit
                stopped = tc.stop_on_overfit
            if not iteration_schedule:
                scheduler.step()
            state.epoch += 1
            state.step_in_epoch = 0
            state.sums = None
            if context.is_main and is_best(history):
                save_best(out, model, row)  # before the checkpoint: a replayed epoch rewrites the same weights
            checkpoint()
            if context.is_main:
                if overfit:
                    log.warning("%s%s", overfit_message(overfit, history), "; training stops" if stopped else "")
                write_text(out / METRICS, "".join(json_line(r) for r in history))
                if tensorboard is not None:
                    tensorboard.log_epoch(row)
                bar.write(
                    f"{method.name} epoch {row['epoch']}/{tc.epochs}: "
                    + ", ".join(
                        f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()
                        if k not in ("epoch", "step")
                    )
                )
    bar.close()
    if context.is_main:
        save_weights(model, out / WEIGHTS, metadata={"method": method.name, "epochs": str(state.epoch)})
    distributed.barrier(context)
    return out


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
