"""The training loop: one method, one model, one run folder, resumable at any checkpoint.

The optimizer is built only from ``method.trainable_parameters(model)``; every other parameter gets
``requires_grad=False`` for the run, so it cannot change (AELFs' frozen head) and costs no weight-gradient work.
The model is in train mode for the method's loss (:func:`aelf.modes.training`); attacks switch to eval mode
themselves through :func:`aelf.modes.evaluating`.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aelf.checkpoint import (
    WEIGHTS,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
    write_json,
    write_text,
)
from aelf.config import Config, to_dict
from aelf.data import eval_batches, load_dataset, steps_per_epoch, train_batches
from aelf.errors import AelfError, CheckpointError, ConfigError, DivergenceError
from aelf.models import CUSTOM
from aelf.modes import evaluating, training
from aelf.run import CONFIG, META, METRICS, environment, model_for, read_config

LOG_EVERY = 10  # steps between progress-bar refreshes (each one synchronises with the device)


class TrainingInterrupted(AelfError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state, in types that ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def checkpoint_on_signal():
    """While training, SIGINT/SIGTERM only raise a flag; the loop saves a checkpoint at the next step and stops."""
    received: list[int] = []
    handlers = {}

    def handle(signum, _frame):
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
class Progress:
    """Counters and running metric sums of the epoch in progress (device tensors: no sync per step)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    sums: dict | None = None
    bad_step: torch.Tensor | None = None


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / CONFIG).is_file():
            raise CheckpointError(f"{out}: nothing to resume (no {CONFIG})")
        return
    if out.exists() and not out.is_dir():
        raise AelfError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AelfError(f"{out} already exists; use --resume to continue it or --overwrite to replace it")


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


def make_optimizer(method, model: torch.nn.Module, tc) -> torch.optim.Optimizer:
    """SGD over ``method.trainable_parameters(model)`` only; every other parameter gets ``requires_grad=False``."""
    declared = list(method.trainable_parameters(model))
    declared_ids = {id(p) for p in declared}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in declared_ids)
    return torch.optim.SGD(declared, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)


def train_step(method, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    """One optimisation step of ``method`` on the batch (x, y); returns the loss and the method's metrics."""
    with training(model):
        loss, metrics = method.loss(model, x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, metrics


def evaluate_natural(model, x, y, batch_size: int = 1000) -> float:
    """Natural accuracy as a fraction in [0, 1] (the unit of every accuracy in metrics.jsonl)."""
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with evaluating(model), torch.no_grad():
        for xb, yb in eval_batches(x, y, batch_size):
            correct += (model(xb).argmax(1) == yb).sum()
    return round(correct.item() / max(1, len(y)), 6)


def train(
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    model: torch.nn.Module | None = None,
) -> Path:
    """Train ``config`` into the run folder ``out`` and return it. With ``resume``, continue from its last checkpoint.

    ``model``: a user's own network taking pixels in [0, 1], used instead of ``config.model`` (the run records
    ``model.name: custom``). It needs ``forward_features``/``forward_head`` or a last ``nn.Linear`` that produces its
    output (:func:`aelf.models.as_split_model`). Resuming or loading such a run takes a fresh instance of it again.

    Raises :class:`AelfError` subclasses for bad input (before anything is written), :class:`DivergenceError` on a
    non-finite loss (the last good checkpoint is kept) and :class:`TrainingInterrupted` after SIGINT/SIGTERM (a
    checkpoint of the current step is saved).
    """
    out = Path(out)
    prepare_run_dir(out, resume, overwrite)
    if resume:
        config = read_config(out)
    if model is not None:
        config = replace(config, model=replace(config.model, name=CUSTOM))
    elif config.model.name == CUSTOM:
        raise ConfigError(f"{out} trains a user's own model: pass an instance of it (train(..., model=...))")
    check_ready(config)
    tc = config.train
    device = resolve_device(tc.device)
    torch.use_deterministic_algorithms(tc.deterministic, warn_only=device.type == "cuda")

    x_train, y_train = load_dataset(config.data.name, "train", config.data.root, config.data.train_limit)
    x_test, y_test = load_dataset(config.data.name, "test", config.data.root, config.data.test_limit)
    n_steps = steps_per_epoch(len(x_train), tc.batch_size)
    if n_steps == 0:
        raise ConfigError(f"train.batch_size {tc.batch_size} exceeds the {len(x_train)} training images")

    seed_everything(tc.seed)
    model = model_for(config, model)
    if tc.init and not resume:
        load_weights(model, Path(tc.init) / WEIGHTS)
    method = config.method
    model.to(device=device, memory_format=torch.channels_last)
    x_train = x_train.to(device).contiguous(memory_format=torch.channels_last)
    y_train = y_train.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    optimizer = make_optimizer(method, model, tc)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(tc.lr_milestones), tc.lr_gamma)

    state = Progress()
    history: list[dict] = []
    if resume and (folder := latest_checkpoint(out)) is not None:
        saved = load_checkpoint(folder, model)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        state = Progress(saved["epoch"], saved["step_in_epoch"], saved["step"], saved["sums"])
        history = list(saved["history"])
    elif not resume:
        if out.exists() and overwrite:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG, to_dict(config))
        write_json(out / META, {"seed": tc.seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **environment()})

    def checkpoint() -> None:
        check_finite(state)
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
                "rng": rng_state(),
                "history": history,
            },
            keep=tc.keep_checkpoints,
        )

    bar = tqdm(
        total=tc.epochs * n_steps,
        initial=state.global_step,
        desc=f"{method.name} {out.name}",
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    )
    with checkpoint_on_signal() as signals:
        while state.epoch < tc.epochs:
            if state.sums is None:
                state.sums = {}
            epoch_start = time.perf_counter()
            for x, y in train_batches(x_train, y_train, tc.batch_size, tc.seed, state.epoch, state.step_in_epoch):
                loss, metrics = train_step(method, model, optimizer, x, y)
                record_step(state, loss, metrics)
                bar.update(1)
                if state.global_step % LOG_EVERY == 0 or state.step_in_epoch == n_steps:
                    check_finite(state)
                    bar.set_postfix({k: f"{v.item() / state.step_in_epoch:.3f}" for k, v in state.sums.items()})
                if tc.checkpoint_every and state.global_step % tc.checkpoint_every == 0:
                    checkpoint()
                if signals:
                    checkpoint()
                    bar.close()
                    name = signal.Signals(signals[0]).name
                    raise TrainingInterrupted(
                        f"{name} received: checkpoint saved at step {state.global_step} in {out}; "
                        f"continue with: aelf train --resume {out}",
                        signals[0],
                    )
            check_finite(state)
            row = {
                "epoch": state.epoch + 1,
                "step": state.global_step,
                "lr": optimizer.param_groups[0]["lr"],
                **{k: round(v.item() / max(1, state.step_in_epoch), 6) for k, v in state.sums.items()},
                "test_nat_acc": evaluate_natural(model, x_test, y_test),
                "epoch_time_s": round(time.perf_counter() - epoch_start, 3),
            }
            history.append(row)
            scheduler.step()
            state.epoch += 1
            state.step_in_epoch = 0
            state.sums = None
            checkpoint()
            write_text(out / METRICS, "".join(json_line(r) for r in history))
            bar.write(
                f"{method.name} epoch {row['epoch']}/{tc.epochs}: "
                + ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("epoch", "step"))
            )
    bar.close()
    save_weights(model, out / WEIGHTS, metadata={"method": method.name, "epochs": str(tc.epochs)})
    return out


def json_line(row: dict) -> str:
    return json.dumps(row) + "\n"


def record_step(state: Progress, loss: torch.Tensor, metrics: dict) -> None:
    """Add the step's metrics to the epoch sums and remember the first step with a non-finite loss."""
    state.global_step += 1
    state.step_in_epoch += 1
    for key, value in metrics.items():
        value = value.detach().float()
        state.sums[key] = state.sums[key] + value if key in state.sums else value.clone()
    finite = torch.isfinite(loss.detach())
    step = torch.tensor(state.global_step, device=loss.device)
    if state.bad_step is None:
        state.bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
    state.bad_step = torch.where((state.bad_step < 0) & ~finite, step, state.bad_step)


def check_finite(state: Progress) -> None:
    if state.bad_step is not None and (bad := int(state.bad_step.item())) >= 0:
        raise DivergenceError(
            f"non-finite loss at step {bad} (epoch {state.epoch + 1}); the run stopped and its last good "
            "checkpoint is kept: lower train.lr or check the data"
        )

