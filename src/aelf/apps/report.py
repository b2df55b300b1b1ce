"""``aelf report``: one self-contained HTML page about one run or a side-by-side comparison of several.

Sections: the runs, their resolved configurations (one table, differing settings highlighted), training curves
(``metrics.jsonl``: losses, accuracies and learning rate per epoch; with robust validation a panel and a table of the
validation natural, adversarial and FGSM accuracy, the best epoch of ``best.json`` and overfitting warnings),
accuracy (``eval.json``, else the cached ``aelf reproduce`` evaluation, else a note to run ``aelf eval``; plus
``eval-suite-*.json``, ``check.json``, ``attention-metrics.json`` and a folder's ``results.md``/``table.md`` when
present) and attention (the figure of :mod:`aelf.workflows.attention.figure` on the first test images and the
breadth metrics of :mod:`aelf.workflows.attention.metrics` on the first test images, computed now, with each run's
``last`` or ``best`` weights). Images are embedded as base64 PNG
data URIs, the style sheet is inline: the page loads nothing from anywhere. All text is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aelf.core import __version__
from aelf.core.config_text import flatten_settings
from aelf.core.errors import AelfError, CheckpointError, ConfigError
from aelf.core.fileio import read_json, write_text
from aelf.core.methods import METHODS
from aelf.core.run import read_config, run_labels
from aelf.core.run_folder import (
    BEST,
    CHECK,
    CONFIG,
    EVAL,
    EVAL_BEST,
    META,
    METRICS,
    REPRODUCE_EVAL,
    WEIGHTS,
    RunFolder,
    is_shift_result,
)
from aelf.core.validation import ADV, FGSM_ACC, NAT, OVERFIT
from aelf.workflows.attention.figure import attention_figure
from aelf.workflows.attention.maps import THRESHOLDS, dataset_key, open_runs
from aelf.workflows.attention.metrics import COLUMNS as METRIC_COLUMNS
from aelf.workflows.attention.metrics import DEFINITIONS, attention_metrics_report, metrics_files
from aelf.workflows.reproduction.paper import SETS

FOLDER_TABLES = ("results.md", "table.md")  # what aelf reproduce / aelf demo write next to their runs
N_IMAGES = 3  # test images in the attention figure
N_EXAMPLES = 100  # test images for the attention metrics
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; }
th { background: #eee; }
tr.diff td { background: #fff3c4; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; }
.note { color: #666; font-style: italic; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def resolve_runs(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(run folders, folders of runs)``: each path is a run folder (it has config.json) or a folder whose
    sub-folders include run folders (an ``aelf reproduce`` or ``aelf demo`` output)."""
    if not paths:
        raise ConfigError("give at least one run folder or folder of runs")
    runs: list[Path] = []
    folders: list[Path] = []
    for given in paths:
        path = Path(given)
        if RunFolder(path).is_run():
            found = [path]
        elif path.is_dir():
            # In training order (ST before the AELFs run started from it), then by name.
            found = [sub for sub in path.iterdir() if RunFolder(sub).is_run()]
            found.sort(key=lambda run: (started(run), run.name))
            if not found:
                raise AelfError(f"{path}: not a run folder (no {CONFIG}) and holds no run folders")
            folders.append(path)
        else:
            raise AelfError(f"run folder not found: {path}")
        runs += [run for run in found if run not in runs]
    return runs, folders


def started(run: Path) -> str:
    """When the run started (meta.json), for ordering a folder's runs as they were trained; '' when unknown."""
    try:
        meta = RunFolder(run).meta()
    except CheckpointError:
        return ""
    return str(meta.started or "")


def method_text(run: Path) -> str:
    """``AELFs: <description> (<reference>)`` for the run's method, from the method registry."""
    config = RunFolder.optional(RunFolder(run).config_file)
    method = config.get("method") if isinstance(config, dict) else None
    name = method.get("name") if isinstance(method, dict) else None
    if not isinstance(name, str) or name not in METHODS:
        return str(name) if name is not None else "-"
    return f"{METHODS[name].label}: {METHODS[name].description} ({METHODS[name].reference})"


def read_optional(path: Path):
    """The JSON document at ``path``, or None when the file is absent."""
    return read_json(path) if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------------------
# HTML pieces


def table(header: Sequence, rows: Sequence[Sequence], row_classes: Sequence[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
    body = []
    for index, row in enumerate(rows):
        css = row_classes[index] if row_classes else ""
        attr = f' class="{esc(css)}"' if css else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>\n"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>\n'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>\n"


def image(png: bytes, alt: str) -> str:
    return f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></p>\n'


def figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def number(value) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


# ----------------------------------------------------------------------------------------------------------------------
# Sections


def config_section(runs: list[Path], labels: list[str]) -> str:
    configs = [flatten_settings(RunFolder(run).config_document()) for run in runs]
    keys = list(dict.fromkeys(key for config in configs for key in config))
    rows = [[key] + [config.get(key, "-") for config in configs] for key in keys]
    classes = ["diff" if len({config.get(key) for config in configs}) > 1 else "" for key in keys]
    parts = ['<section id="config">\n<h2>Configuration</h2>\n']
    if len(runs) > 1:
        parts.append(note(f"Resolved settings of every run ({CONFIG}); highlighted rows differ between runs."))
    parts.append(table(["setting", *labels], rows, classes))
    for run, label in zip(runs, labels, strict=True):
        meta = RunFolder.optional(RunFolder(run).meta_file)
        if meta is not None:
            parts.append(
                f"<details><summary>{esc(label)}: {META}</summary>\n{pre(json.dumps(meta, indent=2))}</details>\n"
            )
    return "".join(parts) + "</section>\n"


def training_section(runs: list[Path], labels: list[str]) -> str:
    histories = {label: RunFolder(run).metrics for run, label in zip(runs, labels, strict=True)}
    parts = ['<section id="training">\n<h2>Training curves</h2>\n']
    if not any(histories.values()):
        parts.append(note(f"no {METRICS} in any run: no finished epoch yet"))
        return "".join(parts) + "</section>\n"
    validated = any(ADV in row for rows in histories.values() for row in rows)
    figure = training_figure(histories, dict(zip(labels, runs, strict=True)))
    alt = "training curves: loss, accuracy and learning rate per epoch"
    parts.append(image(figure_png(figure), alt + (" and robust validation accuracy" if validated else "")))
    if validated:
        parts.append(validation_table(histories, dict(zip(labels, runs, strict=True))))
    missing = [label for label, rows in histories.items() if not rows]
    if missing:
        parts.append(note(f"no finished epoch yet: {', '.join(missing)}"))
    return "".join(parts) + "</section>\n"


def training_figure(histories: dict[str, list[dict]], runs: dict[str, Path]):
    """Loss, accuracy and learning rate per epoch of each run; a robust validation panel when any run validated."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    validated = any(ADV in row for rows in histories.values() for row in rows)
    figure = Figure(figsize=(17 if validated else 13, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, acc_ax, lr_ax, *rest = figure.subplots(1, 4 if validated else 3)
    # Colour = run, line style = metric (the same metric has the same style in every run).
    all_keys = list(dict.fromkeys(key for rows in histories.values() for row in rows for key in row))
    panels = (
        (loss_ax, [k for k in all_keys if "loss" in k]),
        (acc_ax, [k for k in all_keys if k.endswith("acc") and k not in VALIDATION_KEYS]),
    )
    styles = ("-", "--", ":", "-.")
    for index, (label, rows) in enumerate(histories.items()):
        if not rows:
            continue
        colour = f"C{index % 10}"
        epochs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
        keys = set().union(*rows)
        for ax, panel_keys in panels:
            for position, key in enumerate(panel_keys):
                if key in keys:
                    values = [row.get(key) for row in rows]
                    ax.plot(
                        epochs,
                        values,
                        styles[position % len(styles)],
                        color=colour,
                        marker=".",
                        label=f"{label}: {key}",
                    )
        if "lr" in keys:
            lr_ax.plot(epochs, [row.get("lr") for row in rows], "-", color=colour, marker=".", label=label)
    if validated:
        validation_panel(rest[0], histories, runs)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (fraction)", title="accuracy (train, test_nat_acc: test)")
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    lr_ax.set_yscale("log")
    for ax in (loss_ax, acc_ax, lr_ax, *rest):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    return figure


VALIDATION_KEYS = (NAT, ADV, FGSM_ACC)


def validation_panel(ax, histories: dict[str, list[dict]], runs: dict[str, Path]) -> None:
    """Validation natural (solid), adversarial (dashed) and FGSM (dotted) accuracy of the validated epochs; a star at
    the epoch of best.safetensors, a cross where an overfitting warning began."""
    for index, (label, rows) in enumerate(histories.items()):
        validated = [row for row in rows if ADV in row]
        if not validated:
            continue
        colour = f"C{index % 10}"
        epochs = [row.get("epoch") for row in validated]
        for key, style in zip(VALIDATION_KEYS, ("-", "--", ":"), strict=True):
            ax.plot(
                epochs, [row.get(key) for row in validated], style, color=colour, marker=".", label=f"{label}: {key}"
            )
        best = RunFolder(runs[label]).best()
        if best is not None and isinstance(best.val_adv_acc, int | float):
            ax.plot([best.epoch], [best.val_adv_acc], "*", color=colour, markersize=12, label=f"{label}: best")
        warned = [row for row in validated if OVERFIT in row]
        if warned:
            ax.plot(
                [row["epoch"] for row in warned],
                [row[ADV] for row in warned],
                "x",
                color="red",
                markersize=10,
                label=f"{label}: overfitting",
            )
    ax.set(xlabel="epoch", ylabel="accuracy (fraction)", title="robust validation\n(training images)")


def validation_table(histories: dict[str, list[dict]], runs: dict[str, Path]) -> str:
    """One row per validated run: the last and best validation accuracies and the overfitting warnings."""
    rows = []
    for label, history in histories.items():
        validated = [row for row in history if ADV in row]
        if not validated:
            continue
        last = validated[-1]
        best = RunFolder(runs[label]).best()
        best_text = f"epoch {best.epoch}: {number(best.val_adv_acc)}" if best is not None else "-"
        warnings = ", ".join(f"epoch {row['epoch']}: {row[OVERFIT]}" for row in validated if OVERFIT in row)
        rows.append([label, *(number(last.get(key, "-")) for key in VALIDATION_KEYS), best_text, warnings or "none"])
    header = [
        "run",
        "last val_nat_acc",
        "last val_adv_acc",
        "last val_fgsm_acc",
        f"best val_adv_acc ({BEST})",
        "overfitting warnings",
    ]
    return table(header, rows)


def shift_rows(results: dict[str, dict]) -> str:
    header = ["run"] + [f"nat {s}" for s in SETS] + [f"adv {s}" for s in SETS]
    rows = [
        [label]
        + [number(result["natural"].get(s, "-")) for s in SETS]
        + [number(result["adversarial"].get(s, "-")) for s in SETS]
        for label, result in results.items()
    ]
    return table(header, rows)


def accuracy_section(runs: list[Path], labels: list[str], folders: list[Path]) -> str:
    parts = ['<section id="accuracy">\n<h2>Accuracy</h2>\n']
    evaluated: dict[str, Any] = {}
    reproduced: dict[str, Any] = {}
    other: dict[str, Any] = {}
    missing: list[tuple[str, Path]] = []
    best: dict[str, Any] = {
        label: RunFolder.optional(RunFolder(run).eval_file("best")) for run, label in zip(runs, labels, strict=True)
    }
    best = {label: result for label, result in best.items() if is_shift_result(result)}
    for run, label in zip(runs, labels, strict=True):
        result = RunFolder.optional(RunFolder(run).eval_file())
        saved = RunFolder(run).reproduced()
        cached = saved.result if saved is not None else None
        if is_shift_result(result):
            evaluated[label] = result
        elif is_shift_result(cached):
            reproduced[label] = cached
        elif isinstance(cached, dict):
            other[label] = cached
        else:
            missing.append((label, run))
    if evaluated:
        attacks = {json.dumps(r.get("attack")) for r in evaluated.values()}
        attack = json.loads(attacks.pop()) if len(attacks) == 1 else None
        text = ", ".join(f"{k} {v}" for k, v in attack.items()) if isinstance(attack, dict) else f"see each {EVAL}"
        parts.append(
            f"<h3>Natural and adversarial accuracy (%) on N and the shifted sets ({EVAL}; attack: {esc(text)})</h3>\n"
        )
        parts.append(shift_rows(evaluated))
    if best:
        parts.append(f"<h3>With the best weights ({BEST}; {EVAL_BEST}, aelf eval --weights best)</h3>\n")
        parts.append(shift_rows(best))
    if reproduced:
        parts.append(f"<h3>Natural and adversarial accuracy (%) from aelf reproduce ({REPRODUCE_EVAL})</h3>\n")
        parts.append(shift_rows(reproduced))
    if other:
        columns = list(dict.fromkeys(key for result in other.values() for key in result))
        parts.append(f"<h3>Accuracy (%) from aelf reproduce ({REPRODUCE_EVAL})</h3>\n")
        parts.append(
            table(["run", *columns], [[label] + [number(r.get(c, "-")) for c in columns] for label, r in other.items()])
        )
    for label, run in missing:
        parts.append(note(f"{label}: not evaluated yet: run aelf eval {run}"))
    for run, label in zip(runs, labels, strict=True):
        for suite_file in RunFolder(run).suite_files():
            suite = read_json(suite_file)
            parts.append(
                f"<h3>{esc(label)}: {esc(suite_file.name)} (suite {esc(suite.get('suite'))}, eps "
                f"{esc(suite.get('eps'))}, {esc(suite.get('n_examples'))} examples)</h3>\n"
            )
            rows = [["clean", "", number(suite.get("clean", "-"))]]
            rows += [
                [
                    a.get("name"),
                    number(a.get("accuracy") if a.get("accuracy") is not None else "-"),
                    number(a.get("after", "-")),
                ]
                for a in suite.get("attacks", [])
            ]
            rows.append(["worst case", "", number(suite.get("worst_case", "-"))])
            parts.append(table(["attack", "accuracy alone (%)", "worst case so far (%)"], rows))
        check = RunFolder(run).check()
        if check is not None:
            parts.append(f"<h3>{esc(label)}: gradient-masking checks ({CHECK}, eps {esc(check.get('eps'))})</h3>\n")
            rows = [
                [c.get("name"), c.get("status"), ", ".join(f"{k} {number(v)}" for k, v in c.get("numbers", {}).items())]
                for c in check.get("checks", [])
            ]
            parts.append(table(["check", "status", "numbers"], rows))
    for folder in folders:
        for name in FOLDER_TABLES:
            if (folder / name).is_file():
                parts.append(f"<h3>{esc(folder / name)}</h3>\n{pre((folder / name).read_text())}")
    return "".join(parts) + "</section>\n"


def metrics_rows(models: dict) -> list[list[str]]:
    def cell(entry):
        return "-" if entry.get("mean") is None else f"{entry['mean']:.4f} ± {entry['std']:.4f}"

    return [
        [label] + [cell(row[name]) for name in METRIC_COLUMNS] + [str(row.get("n_zero_maps", 0))]
        for label, row in models.items()
    ]


def attention_section(
    runs: list[Path], labels: list[str], n_images: int, n_examples: int, device: str, weights: str = "last"
) -> str:
    parts = ['<section id="attention">\n<h2>Attention</h2>\n']
    finished = [(run, label) for run, label in zip(runs, labels, strict=True) if RunFolder(run).is_finished()]
    for run, label in zip(runs, labels, strict=True):
        if not RunFolder(run).is_finished():
            parts.append(note(f"{label}: training has not finished (no {WEIGHTS}): no attention maps"))
    groups: dict[str, list[tuple[Path, str]]] = {}
    for run, label in finished:
        groups.setdefault(dataset_key(read_config(run)), []).append((run, label))
    header = ["run", *METRIC_COLUMNS.values(), "zero maps"]
    for dataset, members in groups.items():
        group_runs = [run for run, _ in members]
        with open_runs(group_runs, device, weights) as (models, x, y):
            models = dict(zip([label for _, label in members], models.values(), strict=True))
            count = min(n_images, len(x))
            plural = "s" if count > 1 else ""
            parts.append(f"<h3>{esc(dataset)}: attention maps on the first {count} test image{plural}</h3>\n")
            with tempfile.TemporaryDirectory() as scratch:
                names = [f"#{i}, y={int(y[i])}" for i in range(count)]
                path = Path(scratch) / "attention.png"
                attention_figure(models, x[:count], y[:count], path, image_names=names, panels=False)
                parts.append(image(path.read_bytes(), f"attention maps of {', '.join(models)} on {dataset}"))
            parts.append(
                note(
                    "Columns per image: input; footnote-3 normalised dCE/dx on black (red +, green -) and on "
                    f"white (green +, red -); gradient signs where the normalised |G| exceeds "
                    f"{', '.join(f'{t:g}' for t in THRESHOLDS)}; "
                    "Grad-CAM (last conv); SmoothGrad; Integrated Gradients (black baseline)."
                )
            )
            _, document = attention_metrics_report(models, x[:n_examples], y[:n_examples])
            parts.append(
                f"<h3>{esc(dataset)}: attention breadth on the first {document['n_examples']} test images "
                "(mean ± std over images)</h3>\n"
            )
            parts.append(table(header, metrics_rows(document["models"])))
            parts.append(table(["metric", "definition"], [[k, v] for k, v in DEFINITIONS.items()]))
            parts.append(note(f"foreground: mean pixel intensity > {document['foreground_threshold']:g}"))
    for run, label in zip(runs, labels, strict=True):
        for _, name in map(metrics_files, ("last", "best")):
            saved = read_optional(run / name)
            if isinstance(saved, dict) and isinstance(saved.get("models"), dict):
                parts.append(f"<h3>{esc(label)}: saved {esc(name)} ({esc(saved.get('n_examples'))} test images)</h3>\n")
                parts.append(table(header, metrics_rows(saved["models"])))
    return "".join(parts) + "</section>\n"


def build_report(
    paths: Sequence[str | Path],
    n_images: int = N_IMAGES,
    n_examples: int = N_EXAMPLES,
    device: str = "auto",
    weights: str = "last",
) -> str:
    """The HTML page (a string) for the runs found in ``paths`` (see :func:`resolve_runs`); the attention section
    uses each run's ``last`` (default) or ``best`` weights."""

    if n_images < 1 or n_examples < 1:
        raise ConfigError(f"--n-images and --n-examples must be at least 1 (got {n_images}, {n_examples})")
    runs, folders = resolve_runs(paths)
    labels = run_labels(runs)
    title = "aelf report: " + ", ".join(labels)
    run_rows = [
        [label, str(run), method_text(run), "finished" if RunFolder(run).is_finished() else "not finished"]
        for run, label in zip(runs, labels, strict=True)
    ]
    body = [
        f"<h1>{esc(title)}</h1>\n",
        f'<section id="runs">\n<h2>Runs</h2>\n{table(["run", "folder", "method", "training"], run_rows)}</section>\n',
        config_section(runs, labels),
        training_section(runs, labels),
        accuracy_section(runs, labels, folders),
        attention_section(runs, labels, n_images, n_examples, device, weights),
        f'<footer><p class="note">{esc(f"written by aelf {__version__}")}</p></footer>\n',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n" + "".join(body) + "</body>\n</html>\n"
    )


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    n_images: int = N_IMAGES,
    n_examples: int = N_EXAMPLES,
    device: str = "auto",
    weights: str = "last",
) -> Path:
    """Build the page and write it to ``out`` atomically (nothing is written when an input is bad)."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the path of the HTML file to write")
    page = build_report(paths, n_images, n_examples, device, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    return out
