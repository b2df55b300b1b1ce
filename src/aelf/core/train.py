"""The training loop: one method, one model, one run folder, resumable at any checkpoint.

:func:`train` reads top to bottom as the run's steps: its settings (:func:`~aelf.core.resume.run_settings`), the
set-up (:func:`set_up`: device, data, model, optimizer), then either :func:`restore` (continue from the newest
checkpoint) or :func:`prepare_folder` (a new run's folder), the epochs (:func:`train_epochs`: :func:`one_epoch`,
then :func:`epoch_record` and :func:`end_epoch`) and the final weights. One step and its bookkeeping are in
:mod:`aelf.core.step`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from aelf.core import cpu_heap, distributed
from aelf.core.attacks import FGSM, PGD
from aelf.core.best import save_best
from aelf.core.checkpoint import (
    clean_staging,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from aelf.core.checks import check_user_model, checked_once
from aelf.core.config import Config, to_dict
from aelf.core.data import batch_generator, steps_per_epoch, train_batches
from aelf.core.data.source import RunData
from aelf.core.errors import CheckpointError, ConfigError, TrainingInterrupted
from aelf.core.fileio import write_json, write_text
from aelf.core.memory_format import model_memory_format
from aelf.core.models import split_interface, split_state
from aelf.core.optim import make_optimizer, make_scheduler, per_iteration, step_lr
from aelf.core.protocols import Method
from aelf.core.resume import (
    TIME_KEY,
    check_out_dir,
    rank_state,
    record_extension,
    restore_scheduler,
    rng_state,
    run_settings,
    seed_everything,
    set_rng_state,
    timeless,
    with_times,
)
from aelf.core.run import check_fits, environment, model_for, read_config, run_data
from aelf.core.run_folder import CONFIG, LOCK, META, METRICS, WEIGHTS
from aelf.core.runlock import run_lock
from aelf.core.step import (
    TrainingState,
    check_finite,
    checkpoint_on_signal,
    compile_in_place,
    evaluate_natural,
    json_line,
    record_step,
    set_determinism,
    train_step,
)
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
    user_model: nn.Module | None,
) -> Path:
    """The steps of a run, top to bottom: settings, set-up, restore or prepare the folder, the epochs, the weights."""
    config, resume = run_settings(config, out, resume, resume_if_exists, overwrite, user_model)
    saved_epochs = read_config(out).train.epochs if resume else None
    check_ready(config)
    run, data = set_up(config, out, resume, user_model)
    if resume and (folder := latest_checkpoint(out)) is not None:
        restore(run, folder, saved_epochs)
    elif not resume and run.context.is_main:
        prepare_folder(run, overwrite, data.meta())
    train_epochs(run, progress)
    if run.context.is_main:
        save_weights(run.model, out / WEIGHTS, metadata={"method": run.method.name, "epochs": str(run.state.epoch)})
    distributed.barrier(run.context)
    return out


@dataclass
class TrainingData:
    """The run's tensors on its device: training images (less the held-out ones), test images and, with robust
    validation, the validation slice; how one global batch is shared between ranks and how many steps an epoch has."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    validation: tuple[torch.Tensor, torch.Tensor] | None
    augment: Callable[..., torch.Tensor] | None
    n_steps: int
    rank_slice: slice


@dataclass
class Run:
    """What a run holds while it trains: where, on what, the model and its optimisation, and its progress."""

    config: Config
    out: Path
    context: distributed.Context
    device: torch.device
    data: TrainingData
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    iteration_schedule: bool  # cosine, cyclic, warm-up: the rate changes every step
    loss_module: nn.Module
    autocast_dtype: torch.dtype | None
    val_attacks: tuple[PGD, FGSM]
    state: TrainingState = field(default_factory=TrainingState)
    history: list[dict[str, Any]] = field(default_factory=list)


def load_data(config: Config, out: Path, resume: bool, context: distributed.Context) -> tuple[TrainingData, RunData]:
    """The run's data on the CPU, the validation slice split off (:mod:`aelf.core.validation`); a user's
    files are checked against the run's record when it continues."""
    tc = config.train
    data = run_data(config, out if resume else None)
    (x_train, y_train), (x_test, y_test) = data.pair("train"), data.pair("test")
    validation = None
    if tc.val_size:
        x_kept, y_kept, x_val, y_val = hold_out(x_train, y_train, tc.val_size, tc.seed)
        if tc.val_holdout:
            x_train, y_train = x_kept, y_kept
        validation = (x_val, y_val)
    n_steps = steps_per_epoch(len(x_train), tc.batch_size)
    if n_steps == 0:
        raise ConfigError(
            f"train.batch_size {tc.batch_size} exceeds the {len(x_train)} training images"
            f"{' left after train.val_size' if tc.val_size and tc.val_holdout else ''}: give "
            f"--set train.batch_size={len(x_train)} (or fewer)"
        )
    rank_slice = distributed.shard(tc.batch_size, context)
    tensors = TrainingData(x_train, y_train, x_test, y_test, validation, data.family.augment, n_steps, rank_slice)
    return tensors, data


def build_model(
    config: Config, resume: bool, user_model: nn.Module | None, data: RunData, x_train: torch.Tensor
) -> nn.Module:
    """The run's model with its initial weights (``train.init`` for a new run), checked against the training images
    before anything is written: a user's network against the data, or ours against the images' size."""
    model = model_for(config, user_model, data.spec)
    if user_model is not None:
        check_user_model(model, x_train[:2], data.spec.num_classes)
    else:
        check_fits(model, x_train, data.spec.num_classes, data.source)
    if config.train.init and not resume:  # a split-BN model starting from a plain run: both sets copy its BatchNorm
        load_weights(model, Path(config.train.init) / WEIGHTS, convert=lambda tensors: split_state(model, tensors))
    return model


def to_device(data: TrainingData, device: torch.device, memory_format: torch.memory_format) -> TrainingData:
    """The tensors on the device; images in the model's memory format."""
    validation = data.validation
    if validation is not None:
        validation = (validation[0].to(device).contiguous(memory_format=memory_format), validation[1].to(device))
    return replace(
        data,
        x_train=data.x_train.to(device).contiguous(memory_format=memory_format),
        y_train=data.y_train.to(device),
        x_test=data.x_test.to(device),
        y_test=data.y_test.to(device),
        validation=validation,
    )


def set_up(config: Config, out: Path, resume: bool, user_model: nn.Module | None) -> tuple[Run, RunData]:
    """Device, data, model (initial weights drawn from ``train.seed``), optimizer, schedule and the step's loss."""
    tc = config.train
    context, device = distributed.setup(tc.device, tc.dist_timeout_s)
    set_determinism(tc.deterministic, device)
    tensors, data = load_data(config, out, resume, context)
    distributed.barrier(context)  # every rank has checked the folder before rank 0 writes into it
    if context.is_main:
        clean_staging(out)  # temporary files and half-written checkpoints of a process that was killed
    seed_everything(tc.seed)  # the same initial weights on every rank
    model = build_model(config, resume, user_model, data, tensors.x_train)
    if context.distributed:
        seed_everything(tc.seed + 1_000_003 * context.rank)  # but each rank its own random starts and dropout
    memory_format = model_memory_format(model, device)  # channels_last unless it reaches a broken CPU kernel
    model.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]  # torch: untyped
    model = distributed.sync_batchnorm(model, context, device, tc.sync_batchnorm)
    tensors = to_device(tensors, device, memory_format)
    val_attacks = validation_attacks(config.eval.attack, tc.val_attack_steps)
    optimizer = make_optimizer(config.method, split_interface(model), tc)
    if tc.compile:
        compile_in_place(model)
    loss_module = distributed.wrap(split_interface(model), config.method, context, device)
    autocast_dtype = torch.bfloat16 if tc.amp == "bf16" else None
    scheduler = make_scheduler(optimizer, tc, tensors.n_steps)
    run = Run(
        config,
        out,
        context,
        device,
        tensors,
        model,
        config.method,
        optimizer,
        scheduler,
        per_iteration(tc),
        loss_module,
        autocast_dtype,
        val_attacks,
    )
    return run, data


def restore(run: Run, folder: Path, saved_epochs: int | None) -> None:
    """Continue from the checkpoint in ``folder``: weights, optimizer, schedule, random streams, counters, history
    (and, when the run continues to more epochs than ``saved_epochs``, the record of that in meta.json)."""
    saved = load_checkpoint(folder, run.model)
    run.optimizer.load_state_dict(saved["optimizer"])
    restore_scheduler(run.scheduler, saved["scheduler"])
    mine = rank_state(saved, run.context, run.config.train.seed)
    set_rng_state(mine["rng"])
    run.state = TrainingState(saved["epoch"], saved["step_in_epoch"], saved["step"], mine["sums"])
    run.history = with_times(list(saved["history"]), run.out)
    if run.context.is_main and saved_epochs != run.config.train.epochs:  # --resume RUN --set train.epochs=N
        record_extension(run.out, read_config(run.out), run.config, run.state.global_step)
    if run.context.is_main:
        tc, state = run.config.train, run.state
        print(
            f"resuming {run.out} from step {state.global_step} of {tc.epochs * run.data.n_steps} (epoch "
            f"{state.epoch + 1} of {tc.epochs}, {folder.name})",
            flush=True,
        )


def prepare_folder(run: Run, overwrite: bool, data_meta: dict[str, Any]) -> None:
    """A new run's folder: emptied when it is overwritten (the lock this process holds stays), then its settings
    (``config.json``) and provenance (``meta.json``)."""
    out, tc = run.out, run.config.train
    if out.exists() and overwrite:
        for path in out.iterdir():
            if path.name == LOCK:  # this process holds it
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, to_dict(run.config))
    meta = {"seed": tc.seed, "world_size": run.context.world_size, **environment(), **data_meta}
    write_json(out / META, {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta})


def train_epochs(run: Run, progress: bool) -> None:
    """The epochs still to train, each followed by its record; ends early when the overfitting guard says so."""
    tc = run.config.train
    stopped = stopped_on_overfit(run.history, tc.stop_on_overfit)  # a resumed run that had ended on the guard
    # Training curves for TensorBoard, when it is installed (rank 0 only); on resume, epochs logged after the
    # checkpoint by the interrupted run are dropped.
    tensorboard = TensorBoardLogger(run.out, purge_step=run.state.epoch + 1) if run.context.is_main else None
    bar = tqdm(
        total=tc.epochs * run.data.n_steps,
        initial=run.state.global_step,
        desc=f"{run.method.name} {run.out.name}",
        disable=not (progress and run.context.is_main),
        dynamic_ncols=True,
        leave=False,
    )
    with (
        checkpoint_on_signal() as signals,
        tensorboard or contextlib.nullcontext(),
        cpu_heap.for_run(tc, run.device),  # no page faults per step on CPU (aelf.core.cpu_heap)
        checked_once(),  # the data were checked when loaded: attacks do not check every batch again
    ):
        while run.state.epoch < tc.epochs and not stopped:
            epoch_start = time.perf_counter()
            one_epoch(run, bar, signals)
            row = epoch_record(run, epoch_start)
            stopped = end_epoch(run, row, tensorboard, bar)
    bar.close()


def one_epoch(run: Run, bar: tqdm, signals: list[int]) -> None:
    """The rest of the current epoch's steps; a checkpoint every ``train.checkpoint_every`` steps and, after
    SIGINT/SIGTERM, one more before stopping (:class:`TrainingInterrupted`)."""
    tc, state, data = run.config.train, run.state, run.data
    if state.sums is None:
        state.sums = {}
    for x, y in train_batches(data.x_train, data.y_train, tc.batch_size, tc.seed, state.epoch, state.step_in_epoch):
        if data.augment is not None:  # Appendix C: random crops and flips for CIFAR, done on the device
            x = data.augment(x, generator=batch_generator(tc.seed, state.epoch, state.step_in_epoch))
        x, y = x[data.rank_slice], y[data.rank_slice]  # this rank's share of the global batch
        model = split_interface(run.model)
        loss, metrics = train_step(run.method, model, run.optimizer, x, y, run.loss_module, run.autocast_dtype)
        if run.iteration_schedule:
            run.scheduler.step()
        record_step(state, loss, metrics)
        bar.update(1)
        if state.global_step % LOG_EVERY == 0 or state.step_in_epoch == data.n_steps:
            check_finite(state, run.context, run.device)
            bar.set_postfix({k: f"{v.item() / state.step_in_epoch:.3f}" for k, v in state.sums.items()})
        if tc.checkpoint_every and state.global_step % tc.checkpoint_every == 0:
            checkpoint(run)
        if signum := stop_requested(run, signals):
            checkpoint(run)
            bar.close()
            raise TrainingInterrupted(
                f"{signal.Signals(signum).name} received: checkpoint saved at step {state.global_step} in "
                f"{run.out}; continue with: aelf train --resume {run.out}",
                signum,
            )


def epoch_record(run: Run, epoch_start: float) -> dict[str, Any]:
    """The finished epoch's row of ``metrics.jsonl``: the mean of each metric over the epoch's steps and ranks, the
    natural test accuracy, the robust validation (on its epochs) and the epoch's wall-clock time."""
    tc, state, context = run.config.train, run.state, run.context
    check_finite(state, context, run.device)
    steps = max(1, state.step_in_epoch)
    sums = state.sums or {}
    row = {
        "epoch": state.epoch + 1,
        "step": state.global_step,
        "lr": step_lr(tc, run.data.n_steps, state.global_step - 1)
        if run.iteration_schedule
        else run.optimizer.param_groups[0]["lr"],
        **{k: round(distributed.all_sum(v, context).item() / (steps * context.world_size), 6) for k, v in sums.items()},
        "test_nat_acc": evaluate_natural(run.model, run.data.x_test, run.data.y_test, context=context),
        TIME_KEY: round(time.perf_counter() - epoch_start, 3),
    }
    validation = run.data.validation
    if validation is not None and is_validation_epoch(state.epoch + 1, tc.eval_every, tc.epochs):
        seed = validation_seed(tc.seed, state.epoch + 1)
        row |= validate(run.model, *validation, run.val_attacks, seed, run.config.eval.batch_size, context)
    return row


def end_epoch(run: Run, row: dict[str, Any], tensorboard: TensorBoardLogger | None, bar: tqdm) -> bool:
    """Record the epoch: history, overfitting guard, schedule, best weights, checkpoint, metrics.jsonl, TensorBoard
    and the progress line. Returns whether training stops here (the guard with ``train.stop_on_overfit``)."""
    tc, state, history = run.config.train, run.state, run.history
    history.append(row)
    stopped = False
    if overfit := overfit_event(history, tc.overfit_drop):
        row[OVERFIT] = overfit
        stopped = tc.stop_on_overfit
    if not run.iteration_schedule:
        run.scheduler.step()
    state.epoch += 1
    state.step_in_epoch = 0
    state.sums = None
    if run.context.is_main and is_best(history):
        save_best(run.out, run.model, row)  # before the checkpoint: a replayed epoch rewrites the same weights
    checkpoint(run)
    if run.context.is_main:
        if overfit:
            log.warning("%s%s", overfit_message(overfit, history), "; training stops" if stopped else "")
        write_text(run.out / METRICS, "".join(json_line(r) for r in history))
        if tensorboard is not None:
            tensorboard.log_epoch(row)
        numbers = (f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        shown = [text for text, key in zip(numbers, row, strict=True) if key not in ("epoch", "step")]
        bar.write(f"{run.method.name} epoch {row['epoch']}/{tc.epochs}: " + ", ".join(shown))
    return stopped


def checkpoint(run: Run) -> None:
    """Save the training state of every rank (rank 0 writes), after checking that no rank saw a non-finite loss."""
    state, context = run.state, run.context
    check_finite(state, context, run.device)
    per_rank = distributed.gather_objects({"rng": rng_state(), "sums": state.sums}, context)
    if context.is_main:
        saved = {
            "step": state.global_step,
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "sums": state.sums,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": per_rank[0]["rng"],
            "ranks": per_rank if context.distributed else [],
            "world_size": context.world_size,
            "history": [timeless(row) for row in run.history],
        }
        save_checkpoint(run.out, run.model, saved, keep=run.config.train.keep_checkpoints)
    distributed.barrier(context)


def stop_requested(run: Run, signals: list[int]) -> int:
    """The signal to stop on, agreed by every rank (checked every LOG_EVERY steps when distributed), or 0."""
    state, context = run.state, run.context
    if not context.distributed:
        return signals[0] if signals else 0
    if state.global_step % LOG_EVERY and state.step_in_epoch != run.data.n_steps:
        return 0
    return distributed.agree_max(signals[0] if signals else 0, context, run.device)
