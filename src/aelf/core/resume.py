"""What a run folder holds decides how training starts: fresh, resumed, or refused.

- ``--resume RUN``: continue RUN with its saved settings.
- ``--out RUN --resume-if-exists`` (``train(..., resume_if_exists=True)``): start RUN, or continue it when it already
  holds a run of the very same configuration, so one command can be repeated until the run has finished (a job
  scheduler's restarts, ``torchrun --max-restarts``). Another configuration is refused, naming the settings that
  differ.
- A checkpoint written by another number of processes is resumed with the new number (:func:`rank_state`): weights,
  optimizer, schedule, counters, data order and the epoch's running metrics continue; each rank that existed before
  continues its own random stream and a new rank starts one drawn from (seed, rank, step).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelf.core import distributed
from aelf.core.config import Config, to_dict
from aelf.core.errors import AelfError, CheckpointError, ConfigError
from aelf.core.fileio import read_json, write_json
from aelf.core.models import CUSTOM, CustomModelOptions
from aelf.core.run import read_config
from aelf.core.run_folder import CONFIG, LOCK, META, RunFolder

TIME_KEY = "epoch_time_s"  # wall-clock: kept in metrics.jsonl, never in checkpoints (their bytes must repeat)
log = logging.getLogger(__name__)


def is_leftover(path: Path) -> bool:
    """The lock file and temporary files of an interrupted write: a folder holding only these is empty."""
    return path.name == LOCK or (path.name.startswith(".") and path.name.endswith(".tmp"))


RUN_SECTIONS = ("data", "model", "method", "train", "eval")


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds an aelf run: the ``config.json`` aelf writes (a JSON object of its sections) and a
    ``meta.json``. Only such a folder is ever emptied by ``--overwrite``."""
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    sections = isinstance(config, dict) and all(isinstance(config.get(key), dict) for key in RUN_SECTIONS)
    return sections and (path / META).is_file()


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that cannot be started in (or resumed); checked before the folder is locked, so that a
    refused command writes nothing, and again under the lock."""
    if resume:
        if not (out / CONFIG).is_file():
            raise CheckpointError(f"{out}: nothing to resume (no {CONFIG})")
        return
    if out.exists() and not out.is_dir():
        raise AelfError(f"{out} exists and is not a folder")
    if not out.is_dir() or all(is_leftover(p) for p in out.iterdir()):
        return
    if not is_run_folder(out):
        raise AelfError(
            f"{out} is not empty and is not an aelf run folder (it has no {CONFIG} and {META} written by aelf); "
            "nothing in it was changed: give a new or empty folder as --out"
        )
    if not overwrite:
        raise AelfError(
            f"{out} already exists; use --resume to continue it, --resume-if-exists to continue it with the same "
            "settings, or --overwrite to replace it"
        )


def check_out_dir(out: Path, resume: bool, resume_if_exists: bool, overwrite: bool) -> None:
    """The checks of :func:`starting_point` that need only the folder, made before it is locked."""
    if resume_if_exists and (resume or overwrite or (out / CONFIG).is_file()):
        return  # the flags and the run's settings are checked under the lock
    prepare_run_dir(out, resume, overwrite)


def _flat(data: object, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: data}


def config_differences(saved: Config, given: Config) -> list[str]:
    """``key: saved -> given`` for each setting that differs."""
    old, new = _flat(to_dict(saved)), _flat(to_dict(given))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def starting_point(
    out: Path, config: Config | None, resume: bool, resume_if_exists: bool, overwrite: bool
) -> tuple[Config, bool]:
    """``(config, resume)``: the configuration to train and whether to continue the folder's checkpoints."""
    if resume_if_exists and (resume or overwrite):
        raise ConfigError("--resume-if-exists goes with --out and the run's settings, without --resume or --overwrite")
    if config is None and not resume:
        raise ConfigError("a new run needs its settings (a Config); only resume=True reads them from the run folder")
    if resume_if_exists and config is not None and (out / CONFIG).is_file():
        saved = read_config(out)
        if saved != config:
            differences = config_differences(saved, config)
            shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
            raise ConfigError(
                f"{out} holds a run with other settings ({shown}); give the same settings to continue it, another "
                "--out for a new run, or --overwrite to replace it"
            )
        return saved, True
    prepare_run_dir(out, resume, overwrite)
    if resume and config is not None:
        return extended_config(out, read_config(out), config), True
    if resume:
        return read_config(out), True
    assert config is not None  # checked above: a new run has its settings
    return config, False


EXTENDABLE = "train.epochs"


def extended_config(out: Path, saved: Config, config: Config) -> Config:
    """The run's saved settings with more epochs (``--resume RUN --set train.epochs=N``): the one setting a run can
    continue with; fewer epochs or any other change is a ConfigError."""
    differences = [line for line in config_differences(saved, config) if not line.startswith(f"{EXTENDABLE}:")]
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise ConfigError(
            f"{out}: a run continues with its saved settings, only {EXTENDABLE} may grow (given: {shown}); "
            "train another --out for other settings"
        )
    if config.train.epochs < saved.train.epochs:
        raise ConfigError(
            f"{out}: {EXTENDABLE} can only grow when a run continues ({saved.train.epochs} -> {config.train.epochs})"
        )
    return config


def record_extension(out: Path, saved: Config, config: Config, step: int) -> None:
    """Write the longer run's config.json and add the change to meta.json's ``extended`` list."""
    meta = read_json(out / META)
    meta = meta if isinstance(meta, dict) else {}
    entry = {
        "epochs": [saved.train.epochs, config.train.epochs],
        "at_step": step,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
    }
    write_json(out / META, {**meta, "extended": [*meta.get("extended", []), entry]})
    write_json(out / CONFIG, to_dict(config))


def timeless(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != TIME_KEY}


def with_times(history: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """A checkpoint's history rows with their epoch times, from the metrics.jsonl the run wrote before it stopped
    (a row whose metrics differ keeps no time)."""
    try:
        written = RunFolder(out).metrics
    except (OSError, ValueError, CheckpointError):
        written = []
    by_epoch = {row.get("epoch"): row for row in written}
    return [by_epoch[row["epoch"]] if timeless(by_epoch.get(row["epoch"], {})) == row else row for row in history]


def _mean_sums(ranks: list[dict[str, Any]]) -> dict[str, Any] | None:
    if any(rank["sums"] is None for rank in ranks):
        return None
    return {key: sum(rank["sums"][key] for rank in ranks) / len(ranks) for key in ranks[0]["sums"]}


def rank_state(saved: dict[str, Any], context: distributed.Context, seed: int) -> dict[str, Any]:
    """This rank's RNG state and metric sums from a checkpoint, for any number of ranks.

    The same number of ranks: each rank's own. Another number: a rank that existed continues its random stream, a
    new one gets a stream seeded from (seed, rank, step); every rank takes the mean of the old ranks' metric sums, so
    the epoch's metrics (the mean over ranks of sums per step) are those of the steps already taken.
    """
    ranks = saved.get("ranks") or [{"rng": saved["rng"], "sums": saved["sums"]}]
    if len(ranks) == context.world_size:
        return ranks[context.rank]
    if context.rank < len(ranks):
        rng = ranks[context.rank]["rng"]
    else:
        rng = fresh_rng_state(seed + 1_000_003 * context.rank + 7_919 * saved["step"])
    if context.is_main:
        log.warning(
            "aelf: warning: the checkpoint at step %d was written by %d process(es) and resumes on %d: ranks beyond "
            "the first %d start new random streams, so the run will not match one on a fixed number of processes",
            saved["step"],
            len(ranks),
            context.world_size,
            min(len(ranks), context.world_size),
        )
    return {"rng": rng, "sums": _mean_sums(ranks)}


def rng_state() -> dict[str, Any]:
    """Every RNG state (Python, NumPy, torch, CUDA) as numbers, tuples and tensors: JSON plus safetensors."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(np.asarray(keys).astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fresh_rng_state(seed: int) -> dict[str, Any]:
    """The RNG states ``seed_everything(seed)`` would give, without changing this process's."""
    saved = rng_state()
    seed_everything(seed)
    fresh = rng_state()
    set_rng_state(saved)
    return fresh


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def restore_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    """MultiStepLR keeps its milestones in a Counter, which a checkpoint gives back as a plain dict."""
    if isinstance(state.get("milestones"), dict):
        state = {**state, "milestones": Counter(state["milestones"])}
    scheduler.load_state_dict(state)


def with_user_model(config: Config, user_model: torch.nn.Module | None) -> Config:
    """The configuration of a run of a user's own network: ``model.name: custom`` with the width and activation."""
    if user_model is None:
        return config
    return replace(config, model=CustomModelOptions(config.model.width, config.model.activation))


def run_settings(
    config: Config | None,
    out: Path,
    resume: bool,
    resume_if_exists: bool,
    overwrite: bool,
    user_model: torch.nn.Module | None,
) -> tuple[Config, bool]:
    """``(config, resume)``: what to train (the given settings, or the run's own when it continues) and whether to
    continue the folder's checkpoints. A user's network must come with a run of one, and only with one."""
    given = with_user_model(config, user_model) if config is not None else None
    config, resume = starting_point(out, given, resume, resume_if_exists, overwrite)
    custom = config.model.name == CUSTOM
    if user_model is None and custom:
        raise ConfigError(f"{out} trains a user's own model: pass an instance of it (train(..., model=...))")
    if user_model is not None and not custom:
        raise ConfigError(f"{out} trains model {config.model.name}, not a user's own: resume it without model=...")
    return config, resume
