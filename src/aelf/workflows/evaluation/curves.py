"""Robustness curves: accuracy against the l-inf radius eps and against the number of PGD steps, for several runs.

The attack is PGD-CE without random start, step size 2.5 eps / n_steps (as in
:mod:`aelf.workflows.evaluation.robustness`): against eps with ``n_steps`` steps (eps 0 is the clean accuracy); against
steps at each run's ``eval.attack.eps``. A curve that does not fall towards 0 as eps grows, or that rises with more
steps, is a sign of gradient masking. Output: one PNG with both panels (matplotlib's Agg canvas, no display needed), a
Markdown table and JSON.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aelf.core.accuracy import correct_mask, percent
from aelf.core.errors import ConfigError
from aelf.core.fileio import atomic_write, write_json, write_text
from aelf.core.run import open_run, read_config, run_labels
from aelf.workflows.evaluation.robustness import pgd

PNG, MARKDOWN, JSON = "curves.png", "curves.md", "curves.json"
CURVE_STEPS = 20  # PGD steps of the accuracy-against-eps curve


def accuracy_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_steps: int, batch_size: int) -> float:
    """Accuracy in percent under PGD-CE(eps, n_steps, 2.5 eps / n_steps); the clean accuracy for eps 0."""
    return percent(correct_mask(model, x, y, pgd(eps, n_steps) if eps else None, batch_size))


def accuracy_vs_eps(model, x, y, eps_values, n_steps: int = CURVE_STEPS, batch_size: int = 500) -> list[float]:
    """Accuracy in percent at each eps (pixel units) of ``eps_values``; x (N, C, H, W) in [0, 1], y (N,)."""
    return [accuracy_at(model, x, y, eps, n_steps, batch_size) for eps in eps_values]


def accuracy_vs_steps(model, x, y, eps: float, steps_values, batch_size: int = 500) -> list[float]:
    """Accuracy in percent under PGD with each number of steps of ``steps_values`` at radius eps."""
    return [accuracy_at(model, x, y, eps, n_steps, batch_size) for n_steps in steps_values]


def check_values(eps_values, steps_values) -> None:
    if not eps_values:
        raise ConfigError("curves need at least one eps value")
    if any(not 0 <= eps <= 1 for eps in eps_values):
        raise ConfigError(f"eps values must be in [0, 1] (pixel units; got {list(eps_values)})")
    if any(n < 1 for n in steps_values or []):
        raise ConfigError(f"step counts must be at least 1 (got {list(steps_values)})")


def curves_for_runs(
    run_dirs,
    eps_values,
    steps_values=None,
    n_examples: int | None = None,
    device: str = "auto",
    seed: int = 0,
    weights: str = "last",
) -> dict:
    """``{"eps": [...], "steps": [...] | None, "attack": ..., "runs": {label: {...}}}``, accuracies in percent, on each
    run's first ``n_examples`` test images, with each run's ``last`` or ``best`` weights."""

    eps_values = [float(eps) for eps in eps_values]
    steps_values = [int(n) for n in steps_values] if steps_values else None
    check_values(eps_values, steps_values)
    if not run_dirs:
        raise ConfigError("curves need at least one run folder")
    if n_examples is not None and n_examples < 1:
        raise ConfigError(f"--n-examples must be at least 1 (got {n_examples})")
    for run in run_dirs:  # every folder is checked before any attack runs
        read_config(run)
    result = {
        "eps": eps_values,
        "steps": steps_values,
        "attack": f"PGD-CE, no random start, step size 2.5 eps / n_steps; {CURVE_STEPS} steps against eps",
        "runs": {},
    }
    for label, run_dir in zip(run_labels(run_dirs), run_dirs, strict=True):
        with open_run(run_dir, device, weights=weights, n_examples=n_examples) as run:
            batch_size, eps = run.config.eval.batch_size, run.config.eval.attack.eps
            torch.manual_seed(seed)
            entry = {
                "run": str(run_dir),
                "n_examples": len(run.x),
                "weights": weights,
                "eval_eps": eps,
                "accuracy_vs_eps": accuracy_vs_eps(run.model, run.x, run.y, eps_values, CURVE_STEPS, batch_size),
            }
            if steps_values:
                entry["accuracy_vs_steps"] = accuracy_vs_steps(run.model, run.x, run.y, eps, steps_values, batch_size)
        result["runs"][label] = entry
    return result


def curves_markdown(curves: dict) -> str:
    """Markdown: one table against eps, one against steps (when measured); rows are runs."""
    lines = [f"Accuracy (%) against l-inf eps ({curves['attack']})", ""]
    lines += [
        "| run | " + " | ".join(f"eps {eps:.4g}" for eps in curves["eps"]) + " |",
        "|---|" + "---|" * len(curves["eps"]),
    ]
    for label, entry in curves["runs"].items():
        lines.append(f"| {label} | " + " | ".join(f"{a:.2f}" for a in entry["accuracy_vs_eps"]) + " |")
    if curves["steps"]:
        lines += ["", "Accuracy (%) against PGD steps, at each run's eval eps", ""]
        lines += [
            "| run | eps | " + " | ".join(f"{n} steps" for n in curves["steps"]) + " |",
            "|---|---|" + "---|" * len(curves["steps"]),
        ]
        for label, entry in curves["runs"].items():
            cells = " | ".join(f"{a:.2f}" for a in entry["accuracy_vs_steps"])
            lines.append(f"| {label} | {entry['eval_eps']:.4g} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict, path: str | Path) -> None:
    """Write the PNG: accuracy against eps (and against steps, log2 axis, when measured), one line per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 2 if curves["steps"] else 1
    figure = Figure(figsize=(5 * panels, 4), layout="constrained")
    FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no display, no global backend change
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for label, entry in curves["runs"].items():
        axes[0].plot(curves["eps"], entry["accuracy_vs_eps"], marker="o", label=label)
        if panels == 2:
            axes[1].plot(curves["steps"], entry["accuracy_vs_steps"], marker="o", label=label)
    axes[0].set(
        xlabel="l-inf eps (pixels in [0, 1])",
        ylabel="accuracy (%)",
        ylim=(-2, 102),
        title=f"PGD-CE, {CURVE_STEPS} steps",
    )
    if panels == 2:
        axes[1].set_xscale("log", base=2)
        axes[1].set_xticks(curves["steps"], [str(n) for n in curves["steps"]])  # 1, 2, 4 rather than 2^0, 2^1, 2^2
        axes[1].set(xlabel="PGD steps", ylabel="accuracy (%)", ylim=(-2, 102), title="at each run's eval eps")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


def write_curves(curves: dict, out_dir: str | Path) -> list[Path]:
    """curves.png, curves.md and curves.json in ``out_dir`` (created if needed), each written atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, out_dir / PNG)
    write_text(out_dir / MARKDOWN, curves_markdown(curves))
    write_json(out_dir / JSON, curves)
    return [out_dir / PNG, out_dir / MARKDOWN, out_dir / JSON]
