"""A model card: one Markdown page that says what a trained model is, from its run folder's files only.

Read: ``config.json`` (method, model, data, every setting), ``meta.json`` (command, git revision, versions; a
``data`` entry when the run recorded its data set's sizes and classes), ``metrics.jsonl`` (epochs finished, the last
epoch's numbers), every ``*.safetensors`` of the folder (sha256, size, tensor count), and the measurements present:
``eval.json`` (``aelf eval``), ``reproduce-eval.json`` (``aelf reproduce``), ``eval-suite-*.json`` (``aelf eval
--suite``) and ``check.json`` (``aelf check``). Nothing is loaded into a model and nothing is measured again: a
number that no file holds is reported as "not measured", with the command that measures it.

Intervals are Wilson's 95% score intervals (:func:`aelf.workflows.evaluation.stats.wilson_interval`) over the test
images: the number of correct images is recovered from the stored percentage (rounded to 0.01) and the number of images,
which is exact up to 10,000 images. They cover the sampling of test images only, not the variation between training
runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import struct
from pathlib import Path

from aelf.apps.card_rows import CONFIDENCE, interval, measurements
from aelf.core.checkpoint import read_weights
from aelf.core.config import DataConfig
from aelf.core.config_text import flatten_settings
from aelf.core.data import DATASETS
from aelf.core.errors import CheckpointError
from aelf.core.fileio import write_text
from aelf.core.methods import METHODS
from aelf.core.models import CUSTOM, MODELS, CustomModelOptions
from aelf.core.run import load_model, read_config
from aelf.core.run_folder import (
    BEST,
    BEST_INFO,
    CONFIG,
    META,
    METRICS,
    WEIGHTS,
    Meta,
    RunFolder,
)

SETS = ("N", "N(L)", "N(R)", "N(U)", "N(D)")
# The settings of a user's files (data.name: files) left at their defaults, not repeated as "other data settings"
FILE_DEFAULTS = {key: getattr(DataConfig, key) for key in ("test_fraction", "split_seed", "layout")}

PAPER = (
    "*Attention-based Interpretation and Response to The Trade-Off of Adversarial Training*, anonymous authors "
    "(under review as a conference paper at ICLR 2022)"
)


def method_text(name: str) -> tuple[str, str]:
    """``(description, reference)`` of a method from its registry entry (:data:`aelf.core.methods.METHODS`)."""
    method = METHODS.get(name)
    if method is None:
        return f"method {name!r}", "no reference recorded for this method"
    return method.description, method.reference


def dataset_sizes(name: str) -> tuple[int, int] | None:
    """(train, test) images of a named dataset's full splits (its registry entry), to state a run's sizes from its
    limits; None for a user's files or an unknown name."""
    info = DATASETS.get(name)
    if info is None or info.n_train is None or info.n_test is None:
        return None
    return info.n_train, info.n_test


def model_settings(model: dict) -> dict:
    """A run's model section without the settings its model does not read (run folders written before each model had
    its own options carry every model's)."""
    options = {**MODELS, CUSTOM: CustomModelOptions}.get(str(model.get("name")))
    if options is None:
        return dict(model)
    known = {"name"} | {f.name for f in dataclasses.fields(options)}
    return {key: value for key, value in model.items() if key in known}


def write_model_card(run_dir: str | Path) -> Path:
    """Write :func:`model_card` as ``MODEL_CARD.md`` next to the weights, atomically; return its path."""
    return write_card_text(run_dir, model_card(run_dir))


def write_card_text(run_dir: str | Path, text: str) -> Path:
    """Write the text of :func:`model_card` as the run's ``MODEL_CARD.md``, atomically; return its path."""
    path = RunFolder(Path(run_dir)).card_file
    write_text(path, text)
    return path


def model_card(run_dir: str | Path) -> str:
    """The Markdown card of a finished run (see the module's text). CheckpointError when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    folder = RunFolder(run_dir)
    config = folder.config_document()
    if (
        not isinstance(config, dict)
        or not all(isinstance(config.get(k), dict) for k in ("data", "model", "method"))
        or not all(isinstance(config.get(k, {}), dict) for k in ("train", "eval"))
    ):
        raise CheckpointError(f"{folder.config_file}: not an aelf run configuration (no data, model and method)")
    if not folder.is_finished():
        raise CheckpointError(f"{run_dir}: training has not finished (no {WEIGHTS}): no model to describe")
    check_weights(run_dir)
    meta = folder.meta()
    n_test = _test_size(config, meta)
    rows, shifted, measured = measurements(folder, n_test)
    method = config["method"].get("name", "?")
    sections = [
        f"# Model card: {run_dir.name}\n",
        f"{config['model'].get('name', '?')} trained with `{method}` on {config['data'].get('name', '?')}. "
        f"Written from the files of `{run_dir}`; nothing was measured again for this card.\n",
        _method_section(config),
        _data_section(config, meta),
        _training_section(config, folder, meta),
        _accuracy_section(rows, shifted),
        _weights_section(folder),
        _provenance_section(meta),
        f"## Configuration\n\nThe resolved settings (`{CONFIG}`):\n\n```\n" + compact_config(config) + "```\n",
        _limitations_section(folder, config, measured),
    ]
    return "\n".join(sections)


# ----------------------------------------------------------------------------------------------------------------------
# Reading


def check_weights(run_dir: Path) -> None:
    """CheckpointError unless each weights file matches its manifest and loads into the model that config.json
    describes (as ``aelf eval`` loads it): a card never states the sha256 of damaged weights or the settings of
    another model. A run of a user's own network (``model.name: custom``) is checked against its manifest only."""
    config = read_config(run_dir)
    for which, name in (("last", WEIGHTS), ("best", BEST)):
        if not (run_dir / name).is_file():
            continue
        if config.model.name == CUSTOM:
            read_weights(run_dir / name)
        else:
            load_model(run_dir, "cpu", weights=which)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safetensors_summary(path: Path) -> tuple[int, int]:
    """``(tensors, values)`` from a safetensors file's header (8-byte length, then JSON), without loading it."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
        shapes = [entry["shape"] for key, entry in header.items() if key != "__metadata__"]
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{path}: not a valid safetensors file (unreadable header)") from None
    values = 0
    for shape in shapes:
        count = 1
        for size in shape:
            count *= int(size)
        values += count
    return len(shapes), values


def _test_size(config: dict, meta: Meta) -> int | None:
    """Test images of the run: meta.json's data entry, else the named dataset's test split cut at test_limit."""
    recorded = meta.data
    if isinstance(recorded.get("n_test"), int):
        return recorded["n_test"]
    sizes = dataset_sizes(config["data"].get("name"))
    if sizes is None:
        return None
    limit = config["data"].get("test_limit")
    return min(sizes[1], limit) if isinstance(limit, int) else sizes[1]


# ----------------------------------------------------------------------------------------------------------------------
# Sections


def _method_section(config: dict) -> str:
    method = dict(config["method"])
    name = method.pop("name", "?")
    what, reference = method_text(name)
    settings = ", ".join(f"{k} = {v}" for k, v in flatten_settings(method).items()) or "none"
    model = model_settings(config["model"])
    lines = [
        "## Method\n",
        f"- **Method**: `{name}`, {what} ({reference}).",
        f"- **Method settings**: {settings}.",
        f"- **Paper**: {PAPER}. aelf implements its AELF and AELFs and the baselines the paper compares them with.",
        f"- **Model**: `{model.pop('name', '?')}` ({', '.join(f'{k} = {v}' for k, v in model.items())}).",
    ]
    init = config.get("train", {}).get("init")
    if init:
        lines.append(f"- **Started from**: the weights of run `{init}` (train.init).")
    return "\n".join(lines) + "\n"


def _data_section(config: dict, meta: Meta) -> str:
    data = config["data"]
    name = data.get("name", "?")
    lines = ["## Data\n", f"- **Dataset**: `{name}`" + (f" from `{data['root']}`" if data.get("root") else "") + "."]
    recorded = meta.data
    sizes = dataset_sizes(name)
    for split, index in (("train", 0), ("test", 1)):
        limit = data.get(f"{split}_limit")
        if isinstance(recorded.get(f"n_{split}"), int):
            count = f"{recorded[f'n_{split}']:,}"
        elif sizes is not None:
            count = f"{min(sizes[index], limit) if isinstance(limit, int) else sizes[index]:,}"
            count += (
                f" (the first {limit:,} of {sizes[index]:,})" if isinstance(limit, int) and limit < sizes[index] else ""
            )
        else:
            count = "not recorded" + (f" (data.{split}_limit = {limit})" if limit is not None else "")
        val_size = config.get("train", {}).get("val_size")
        if split == "train" and isinstance(val_size, int) and val_size > 0:
            if config.get("train", {}).get("val_holdout", True):
                count += f", of which {val_size:,} held out for robust validation (train.val_size)"
            else:
                count += f", all trained on; {val_size:,} of them also validated on (train.val_holdout: false)"
        lines.append(f"- **{split.capitalize()} images**: {count}.")
    if recorded.get("sha256"):
        lines.append(
            f"- **Data file**: `{recorded.get('source', data.get('root'))}`, sha256 "
            f"`{recorded['sha256']}` (checked whenever the run is reopened)."
        )
    if recorded:
        how = recorded.get("split")
        if how == "stratified":
            lines.append(
                f"- **Split**: stratified, {recorded.get('test_fraction')} of each class for testing, drawn "
                f"with seed {recorded.get('seed')}."
            )
        elif how == "given":
            lines.append("- **Split**: the file's own train and test split.")
        elif how:
            lines.append(f"- **Split**: {how}.")
        if recorded.get("image_shape"):
            lines.append(
                f"- **Images**: {' x '.join(str(s) for s in recorded['image_shape'])} (channels x height x "
                "width), pixels in [0, 1]."
            )
        classes = recorded.get("classes")
        if isinstance(classes, list) and classes:
            shown = ", ".join(str(c) for c in classes[:20]) + (", ..." if len(classes) > 20 else "")
            lines.append(f"- **Classes** ({len(classes)}): {shown}.")
    elif sizes is not None:
        lines.append(f"- **Split**: {DATASETS[name].split}.")
    skipped = ("name", "root", "train_limit", "test_limit")
    extra = {k: v for k, v in data.items() if k not in skipped and v is not None and v != FILE_DEFAULTS.get(k)}
    if extra:
        lines.append(
            "- **Other data settings**: " + ", ".join(f"{k} = {v}" for k, v in flatten_settings(extra).items()) + "."
        )
    return "\n".join(lines) + "\n"


def _training_section(config: dict, folder: RunFolder, meta: Meta) -> str:
    history = folder.metrics
    train = config.get("train", {})
    lines = ["## Training\n"]
    if history:
        last = history[-1]
        seconds = sum(row.get("epoch_time_s", 0) for row in history if isinstance(row.get("epoch_time_s"), int | float))
        lines.append(
            f"- **Epochs**: {last.get('epoch', len(history))} of {train.get('epochs', '?')}, "
            f"{seconds:.0f} s of training in all ({METRICS})."
        )
        numbers = ", ".join(
            f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"  # lr 0.01, not 0.010000000000000002
            for k, v in last.items()
            if k not in ("epoch", "epoch_time_s")
        )
        lines.append(f"- **Last epoch**: {numbers}.")
    else:
        lines.append(f"- **Epochs**: not recorded (no {METRICS}); configured: {train.get('epochs', '?')}.")
    seed = meta.seed if meta.seed is not None else train.get("seed", "?")
    lines.append(f"- **Seed**: {seed}; processes: {meta.world_size}.")
    return "\n".join(lines) + "\n"


def _accuracy_section(rows: list, shifted) -> str:
    lines = [
        "## Accuracy\n",
        f"In percent, with Wilson's {100 * CONFIDENCE:g}% interval over the test images.\n",
        "| measurement | accuracy (%) | 95% interval | test images | attack | source |",
        "|---|---|---|---|---|---|",
    ]
    hints = {
        "natural": "aelf eval RUN",
        "PGD": "aelf eval RUN",
        "AutoAttack": "aelf eval RUN --suite standard",
    }
    for kind in ("natural", "PGD", "AutoAttack", "worst case", "other"):
        found = [row for row in rows if row[0] == kind and isinstance(row[2], int | float)]
        for _, label, accuracy, n, attack, source in found:
            lines.append(
                f"| {label} | {accuracy:.2f} | {interval(accuracy, n)} | {n if n else 'not recorded'} | "
                f"{attack} | {source} |"
            )
        if not found and kind in hints:
            lines.append(f"| {kind} | not measured | | | | run `{hints[kind]}` |")
    if shifted is not None:
        result, n, source = shifted
        lines += [
            "",
            f"Shifted test sets ({source}; N(L), N(R), N(U), N(D): N shifted by eval.shift_pixels):",
            "",
            "| | " + " | ".join(SETS) + " |",
            "|---|" + "---|" * len(SETS),
        ]
        for key in ("natural", "adversarial"):
            values = [result[key].get(s) for s in SETS]
            cells = [f"{v:.2f} {interval(v, n)}" if isinstance(v, int | float) else "-" for v in values]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _validation_images(config: dict) -> str:
    """Where the run's validation images came from (``train.val_holdout``)."""
    if config.get("train", {}).get("val_holdout", True):
        return "images held out from the training data"
    return "training images it was also trained on (train.val_holdout: false)"


def _weights_section(folder: RunFolder) -> str:
    files = sorted(folder.path.glob("*.safetensors"), key=lambda p: (p.name != WEIGHTS, p.name))
    lines = ["## Weights\n", "| file | sha256 | bytes | tensors | values |", "|---|---|---|---|---|"]
    for path in files:
        tensors, values = safetensors_summary(path)
        lines.append(f"| {path.name} | `{sha256_file(path)}` | {path.stat().st_size:,} | {tensors} | {values:,} |")
    lines.append(f"\n`{WEIGHTS}`: the weights at the end of training (safetensors: tensors only, no code).")
    best = folder.best()
    if best is not None:
        lines.append(
            f"`{BEST}`: the weights of the best robust validation accuracy (epoch {best.epoch}, val_adv_acc "
            f"{best.val_adv_acc} on {_validation_images(folder.config_document())}; {BEST_INFO}); "
            "evaluate them with `--weights best`."
        )
    return "\n".join(lines) + "\n"


def _provenance_section(meta: Meta) -> str:
    command = meta.command
    if isinstance(command, list):
        if command and Path(str(command[0])).name in ("aelf", "__main__.py"):  # python -m aelf or the aelf script
            command = ["aelf", *command[1:]]
        command = shlex.join(str(part) for part in command)
    lines = [
        "## Provenance\n",
        f"- **Command**: `{command}`" if command else f"- **Command**: not recorded (no {META})",
        f"- **git revision**: {meta.git_revision or 'not recorded'}",
        f"- **Versions**: aelf {meta.versions.get('aelf', '?')}, torch {meta.versions.get('torch', '?')}, "
        f"Python {meta.versions.get('python', '?')}",
        f"- **Platform**: {meta.platform or 'not recorded'}; started {meta.started or 'not recorded'}",
    ]
    return "\n".join(lines) + "\n"


def _limitations_section(folder: RunFolder, config: dict, measured: set[str]) -> str:
    missing = [
        kind for kind in ("natural accuracy", "PGD accuracy", "AutoAttack accuracy") if kind.split()[0] not in measured
    ]
    if not folder.check_file.is_file():
        missing.append("gradient-masking checks (aelf check)")
    attack = config.get("eval", {}).get("attack")
    eps = attack.get("eps") if isinstance(attack, dict) else None
    lines = ["## Limitations\n"]
    lines.append(
        f"- Not measured: {', '.join(missing)}."
        if missing
        else "- Measured: natural, PGD and AutoAttack accuracy and the gradient-masking checks."
    )
    lines.append(
        f"- Robustness is measured against l-inf attacks only (eval eps {eps}); other budgets and threat "
        "models (l2, patches, common corruptions) are not measured. A PGD accuracy is an upper bound that "
        "stronger attacks may lower."
    )
    lines.append(
        "- One training run: the intervals cover the sampling of test images, not the variation between training seeds."
    )
    return "\n".join(lines) + "\n"


def compact_config(config: dict) -> str:
    """One line per section: ``data: name="mnist5k" root=null ...``."""
    lines = []
    for section, values in config.items():
        if isinstance(values, dict):
            lines.append(f"{section}: " + " ".join(f"{k}={v}" for k, v in flatten_settings(values).items()))
        else:
            lines.append(f"{section}: {json.dumps(values)}")
    return "\n".join(lines) + "\n"
