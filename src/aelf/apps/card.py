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
from typing import Any

from aelf.core.checkpoint import read_weights
from aelf.core.config import DataConfig
from aelf.core.data import DATASETS
from aelf.core.errors import CheckpointError
from aelf.core.fileio import read_json, write_text
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
    EvalResult,
    Meta,
    RunFolder,
    as_dict,
)
from aelf.workflows.evaluation.stats import wilson_interval

SETS = ("N", "N(L)", "N(R)", "N(U)", "N(D)")
CONFIDENCE = 0.95
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
    rows, shifted, measured = _measurements(folder, n_test)
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
# Numbers


def interval(accuracy, n: int | None) -> str:
    """``[lo, hi]`` in percent: Wilson over n images, from an accuracy in percent rounded to 0.01; "-" when n is
    unknown or does not fit the accuracy."""
    if not isinstance(n, int) or n < 1 or not isinstance(accuracy, int | float):
        return "-"
    k = round(accuracy * n / 100)
    if not 0 <= k <= n or abs(100 * k / n - accuracy) > 0.0051:
        return "-"
    lo, hi = wilson_interval(k, n, CONFIDENCE)
    return f"[{100 * lo:.2f}, {100 * hi:.2f}]"


def describe_attack(spec: dict | None) -> str:
    """``PGD l-inf eps 0.3, 16 steps of 0.02, ce loss`` from an attack's settings."""
    if not isinstance(spec, dict):
        return "-"
    name = spec.get("name", "PGD" if "n_steps" in spec else "attack")
    parts = [f"{name} l-inf eps {spec['eps']:.4g}" if isinstance(spec.get("eps"), int | float) else str(name)]
    if "n_steps" in spec:
        parts.append(
            f"{spec['n_steps']} steps of {spec.get('step_size', '?'):.4g}"
            if isinstance(spec.get("step_size"), int | float)
            else f"{spec['n_steps']} steps"
        )
    if spec.get("loss") not in (None, "ce"):
        parts.append(f"{spec['loss']} loss")
    if (spec.get("n_restarts") or 1) > 1:
        parts.append(f"{spec['n_restarts']} restarts")
    if spec.get("random_start"):
        parts.append("random start")
    if spec.get("version"):
        parts.append(f"version {spec['version']}")
    return ", ".join(parts)


Row = tuple[str, str, Any, Any, str, str]  # kind, label, accuracy, images, attack, source file
Shifted = tuple[dict[str, Any], Any, str]  # {natural: {set: acc}, adversarial: {...}}, images, source file


def _measurements(folder: RunFolder, n_test: int | None) -> tuple[list[Row], Shifted | None, set[str]]:
    """``(rows, shifted, measured)``: headline rows (kind, label, accuracy, n, attack, source), the shifted-set
    table from eval.json or reproduce-eval.json, and the kinds measured."""
    rows: list[Row] = []
    shifted: Shifted | None = None
    for weights in ("last", "best"):
        evaluated = folder.eval(weights)
        if evaluated is not None:
            rows += _eval_rows(evaluated, n_test, folder.eval_file(weights).name)
            n = evaluated.n_examples if evaluated.n_examples is not None else n_test
            shifted = shifted or (_tables(evaluated), n, folder.eval_file(weights).name)
    reproduced_rows, reproduced_shift = _reproduced_rows(folder, n_test, shifted is None)
    rows += reproduced_rows
    shifted = shifted or reproduced_shift
    for path in folder.suite_files():
        rows += _suite_rows(read_json(path), path.name)
    measured = {row[0] for row in rows if isinstance(row[2], int | float)}
    return rows, shifted, measured


def _tables(result: EvalResult) -> dict[str, Any]:
    return {"natural": result.natural, "adversarial": result.adversarial}


def _eval_rows(evaluated: EvalResult, n_test: int | None, source: str) -> list[Row]:
    n = evaluated.n_examples if evaluated.n_examples is not None else n_test
    which = ", best weights" if evaluated.weights == "best" else ""
    return [
        ("natural", f"natural (N){which}", evaluated.natural.get("N"), n, "-", source),
        (
            "PGD",
            f"adversarial (N){which}",
            evaluated.adversarial.get("N"),
            n,
            describe_attack(evaluated.attack),
            source,
        ),
    ]


def _reproduced_rows(folder: RunFolder, n_test: int | None, want_shift: bool) -> tuple[list[Row], Shifted | None]:
    """The rows of ``aelf reproduce``'s cached measurements and, when ``want_shift``, their shifted-set table."""
    saved = folder.reproduced()
    if saved is None:
        return [], None
    source = folder.reproduce_file.name
    result, key = saved.result, saved.key
    attacks = as_dict(key.get("test_attacks"))
    rows: list[Row] = []
    shifted: Shifted | None = None
    tables = EvalResult.from_json(result)
    if tables is not None:
        if want_shift:
            (label,) = list(attacks)[:1] or ["attack"]
            rows.append(("natural", "natural (N)", tables.natural.get("N"), n_test, "-", source))
            rows.append(
                (
                    "PGD",
                    f"adversarial (N), {label}",
                    tables.adversarial.get("N"),
                    n_test,
                    describe_attack(attacks.get(label)),
                    source,
                )
            )
            shifted = (_tables(tables), n_test, source)
    else:
        if isinstance(result.get("natural"), int | float):
            rows.append(("natural", "natural", result["natural"], n_test, "-", source))
        for label, spec in attacks.items():
            if isinstance(result.get(label), int | float):
                rows.append(("PGD", label, result[label], n_test, describe_attack(spec), source))
    if isinstance(result.get("AutoAttack"), int | float):
        examples = key.get("autoattack_examples")
        n = min(examples, n_test) if isinstance(examples, int) and n_test else examples or n_test
        spec = {"name": "AutoAttack", **as_dict(key.get("autoattack"))}
        rows.append(("AutoAttack", "AutoAttack", result["AutoAttack"], n, describe_attack(spec), source))
    return rows, shifted


def _suite_rows(suite, source: str) -> list:
    if not isinstance(suite, dict):
        return []
    n, name = suite.get("n_examples"), suite.get("suite", "?")
    if suite.get("weights") == "best":
        name += ", best weights"
    rows = [("natural", f"natural (suite {name})", suite.get("clean"), n, "-", source)]
    earlier: list[str] = []
    for entry in suite.get("attacks", []):
        if not isinstance(entry, dict):
            continue
        attack_name, spec = str(entry.get("name")), entry.get("attack")
        kind = "AutoAttack" if attack_name.startswith("AutoAttack") else "PGD" if "PGD" in attack_name else "other"
        if entry.get("accuracy") is not None:
            rows.append(
                (kind, f"{attack_name} alone (suite {name})", entry["accuracy"], n, describe_attack(spec), source)
            )
        elif kind != "other":
            within = f", worst case with {', '.join(earlier)}" if earlier else ""
            rows.append(
                (kind, f"{attack_name} (suite {name}{within})", entry.get("after"), n, describe_attack(spec), source)
            )
        earlier.append(attack_name)
    rows.append(
        (
            "worst case",
            f"worst case of suite {name} ({', '.join(earlier)})",
            suite.get("worst_case"),
            n,
            f"l-inf eps {suite.get('eps')}",
            source,
        )
    )
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Sections


def _method_section(config: dict) -> str:
    method = dict(config["method"])
    name = method.pop("name", "?")
    what, reference = method_text(name)
    settings = ", ".join(f"{k} = {v}" for k, v in flatten(method).items()) or "none"
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
            count += f", of which {val_size:,} held out for robust validation (train.val_size)"
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
        lines.append("- **Other data settings**: " + ", ".join(f"{k} = {v}" for k, v in flatten(extra).items()) + ".")
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
            f"{best.val_adv_acc} on images held out from the training data; {BEST_INFO}); "
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


def flatten(settings: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings -> ``{"attack.eps": "0.3", ...}`` (values as JSON text)."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def compact_config(config: dict) -> str:
    """One line per section: ``data: name="mnist5k" root=null ...``."""
    lines = []
    for section, values in config.items():
        if isinstance(values, dict):
            lines.append(f"{section}: " + " ".join(f"{k}={v}" for k, v in flatten(values).items()))
        else:
            lines.append(f"{section}: {json.dumps(values)}")
    return "\n".join(lines) + "\n"
