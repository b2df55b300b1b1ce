"""What the single-step study (:mod:`bench.fast_at`) compares and how it judges it: the variants, the summaries
over seeds with intervals, the verdicts (within MARGIN points of PGD training at <= TIME_FRACTION of its time), the
markdown table and the figure."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402

from aelf.workflows.evaluation import stats
from aelf.workflows.evaluation.per_image import decode_bits
from bench.workloads import necessary_flops

METHODS = {"at": "AT", "aelfs": "AELFs"}
ATTACKS = ("pgd", "fgsm_rs", "n_fgsm")
SINGLE_STEP = ("fgsm_rs", "n_fgsm")
COLUMNS = ("natural", "pgd", "fgsm", "autoattack")
MARGIN = 2.0  # accuracy points: "within 2 points of PGD's AutoAttack accuracy"
TIME_FRACTION = 0.25  # "at <= 1/4 of its training time"


def run_key(method: str, attack: str) -> str:
    return f"{method}-{attack}"


# ----------------------------------------------------------------------------------------------------------------------
# Summaries and verdicts


def outcomes(runs: dict, seeds: list[int], key: str, column: str) -> np.ndarray:
    """seeds x images: 0/1 outcomes of run ``key`` under ``column``."""
    return np.stack([decode_bits(runs[str(seed)][key]["per_image"][column]) for seed in seeds])


def summary_dict(summary: stats.Summary) -> dict:
    return {
        "mean": round(summary.mean, 3),
        "std": None if summary.std is None else round(summary.std, 3),
        "lo": round(summary.lo, 3),
        "hi": round(summary.hi, 3),
        "per_seed": [round(v, 3) for v in summary.per_seed],
        "n_images": summary.n_images,
        "method": summary.method,
        "text": summary.format(1),
    }


def spread(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
        "per_seed": values,
    }


def variant_rows(runs: dict, seeds: list[int], columns: tuple[str, ...], k: int) -> dict:
    """Per method x training attack: minutes (mean ± std over seeds), accuracies with intervals, lean FLOPs."""
    rows = {}
    for method in METHODS:
        for attack in ATTACKS:
            key = run_key(method, attack)
            per_seed = [runs[str(seed)][key] for seed in seeds]
            walls = [r["wall_minutes"] for r in per_seed]
            step = method if attack == "pgd" else key
            rows[key] = {
                "method": method,
                "attack": attack,
                "step_minutes": spread([r["step_minutes"] for r in per_seed]),
                "train_minutes": spread([r["train_minutes"] for r in per_seed]),
                "wall_minutes": spread(walls) if None not in walls else None,
                "lean_flops_per_image_F": necessary_flops(step, 1.0, k if attack == "pgd" else 1),
                **{c: summary_dict(stats.accuracy_summary(outcomes(runs, seeds, key, c))) for c in columns},
            }
    return rows


def verdicts(runs: dict, seeds: list[int], variants: dict, column: str) -> dict:
    """Per method: is a single-step variant within MARGIN points of PGD training on ``column`` (the paired
    difference's interval above -MARGIN) at <= TIME_FRACTION of its training minutes?"""
    found = {}
    st_minutes = statistics.fmean(runs[str(seed)]["st"]["step_minutes"] for seed in seeds)
    for method, label in METHODS.items():
        pgd = variants[run_key(method, "pgd")]
        checks = {}
        for attack in SINGLE_STEP:
            key = run_key(method, attack)
            diff = stats.paired_difference(
                outcomes(runs, seeds, key, column), outcomes(runs, seeds, run_key(method, "pgd"), column)
            )
            ratio = variants[key]["step_minutes"]["mean"] / pgd["step_minutes"]["mean"]
            if diff.lo >= -MARGIN:
                accuracy = "shown"
            elif diff.difference >= -MARGIN:
                accuracy = "not shown"
            else:
                accuracy = "no"
            check = {
                "difference": round(diff.difference, 3),
                "lo": round(diff.lo, 3),
                "hi": round(diff.hi, 3),
                "mcnemar_p": [round(p, 4) for p in diff.mcnemar_p],
                "within_margin": accuracy,
                "time_ratio": round(ratio, 4),
                "time_ratio_per_seed": [
                    round(runs[str(s)][key]["step_minutes"] / runs[str(s)][run_key(method, "pgd")]["step_minutes"], 4)
                    for s in seeds
                ],
                "lean_flop_ratio": round(variants[key]["lean_flops_per_image_F"] / pgd["lean_flops_per_image_F"], 4),
                "time_ok": ratio <= TIME_FRACTION,
                "answer": accuracy == "shown" and ratio <= TIME_FRACTION,
            }
            if method == "aelfs":  # the ST run it starts from is shared by both variants; counted, the ratio grows
                check["time_ratio_with_st"] = round(
                    (variants[key]["step_minutes"]["mean"] + st_minutes) / (pgd["step_minutes"]["mean"] + st_minutes),
                    4,
                )
            check["text"] = verdict_text(attack, diff, check)
            checks[attack] = check
        answer = any(c["answer"] for c in checks.values())
        found[method] = {
            "question": f"is a single-step variant of {label} within {MARGIN:g} points of PGD training's "
            f"{column_label(column)} accuracy at <= 1/{round(1 / TIME_FRACTION)} of its training time?",
            "answer": "yes" if answer else "no",
            "variants": checks,
        }
    return found


def verdict_text(attack: str, diff: stats.Comparison, check: dict) -> str:
    accuracy = {
        "shown": f"within {MARGIN:g} points (the interval's lower end {diff.lo:+.1f} >= -{MARGIN:g})",
        "not shown": f"not shown within {MARGIN:g} points (the mean is, but the interval reaches {diff.lo:+.1f})",
        "no": f"more than {MARGIN:g} points below",
    }[check["within_margin"]]
    time_part = (
        f"{check['time_ratio']:.2f} of PGD's training time (lean FLOPs {check['lean_flop_ratio']:.2f}), "
        f"{'within' if check['time_ok'] else 'above'} 1/{round(1 / TIME_FRACTION)}"
    )
    if "time_ratio_with_st" in check:
        time_part += f"; {check['time_ratio_with_st']:.2f} counting the shared ST run"
    seeds = f", {diff.n_seeds} seeds" if diff.n_seeds > 1 else ""
    return (
        f"{attack}: {diff.difference:+.1f} points [{diff.lo:+.1f}, {diff.hi:+.1f}]{seeds} against PGD training "
        f"({diff.verdict}), {accuracy}; {time_part}: {'yes' if check['answer'] else 'no'}"
    )


def column_label(column: str) -> str:
    return {"natural": "natural", "pgd": "PGD", "fgsm": "FGSM", "autoattack": "AutoAttack"}[column]


# ----------------------------------------------------------------------------------------------------------------------
# Outputs


def markdown(document: dict) -> str:
    settings, variants = document["settings"], document["variants"]
    columns = [c for c in COLUMNS if c in settings["columns"]]
    evaluation = settings["eval"]
    heads = {"natural": "natural", "pgd": evaluation["pgd_text"], "fgsm": evaluation["fgsm_text"]}
    if evaluation["autoattack"]:
        heads["autoattack"] = (
            f"AutoAttack ({evaluation['autoattack']['version']}, {evaluation['autoattack_images']} images)"
        )
    seeds = document["seeds"]
    interval = (
        "Wilson interval over the test images"
        if len(seeds) == 1
        else f"mean ± std over {len(seeds)} seeds, 95% t-interval over seeds and images"
    )
    lines = [
        f"# Single-step training: {', '.join(METHODS.values())} with PGD, fgsm_rs and n_fgsm"
        + (" (SMOKE: tiny settings, not a result)" if document["smoke"] else ""),
        "",
        f"- settings: {settings['experiment']}: {settings['note']}"
        + (f"; with {', '.join(settings['overrides'])}" if settings["overrides"] else ""),
        "- training attacks: " + "; ".join(f"{k}: {v}" for k, v in settings["train_attacks"].items()),
        f"- seeds {', '.join(map(str, seeds))}; {settings['test_images']} test images; accuracies in %: {interval}",
        "- min: the run's training steps at the step time of its config measured in turns with the other variants in "
        "one process (what the time ratios and the figure use); epoch min: the trainer's epoch times summed and wall "
        "min: the training call, both as measured while the run trained, so they carry the machine's load then",
        "",
        "| method | training attack | min | epoch min | wall min | " + " | ".join(heads[c] for c in columns) + " |",
        "|---|---|---|---|---|" + "---|" * len(columns),
    ]
    for row in variants.values():
        minutes, wall = row["train_minutes"], row["wall_minutes"]
        lines.append(
            f"| {METHODS[row['method']]} | {row['attack']} | {minutes_text(row['step_minutes'])} | "
            f"{minutes_text(minutes)} | "
            f"{minutes_text(wall) if wall else 'n/a'} | " + " | ".join(row[c]["text"] for c in columns) + " |"
        )
    st = spread([document["runs"][str(seed)]["st"]["step_minutes"] for seed in seeds])
    lines += [
        "",
        f"ST, the start of every AELFs run (its time not in the AELFs rows): {minutes_text(st)} min.",
        "",
        f"Catastrophic overfitting shows as FGSM accuracy far above {settings['eval']['pgd_text']} accuracy.",
        "",
        "## Verdicts (computed from the numbers above)",
        "",
        f"Paired difference single-step minus PGD training on {column_label(document['verdict_column'])}, in "
        "points, over the same seeds and images (95% paired t-interval over seeds and images); time ratio: mean "
        "minutes (step time) over PGD training's.",
        "",
    ]
    for method, verdict in document["verdicts"].items():
        lines.append(f"**{METHODS[method]}: {verdict['question']} {verdict['answer'].upper()}**")
        lines += [f"- {check['text']}" for check in verdict["variants"].values()]
        lines.append("")
    lines.append(
        f"Figure: {document['figure']}. This invocation: {document['seconds']:.0f} s (reused runs and "
        "cached evaluations take none)."
    )
    return "\n".join(lines) + "\n"


def minutes_text(spread_: dict) -> str:
    if spread_["std"] is None:
        return f"{spread_['mean']:.2f}"
    return f"{spread_['mean']:.2f} ± {spread_['std']:.2f}"


def figure(document: dict, path: Path) -> None:
    """Accuracy under the verdict's attack against training minutes: one small marker per run, the mean of each
    variant with error bars (minutes: std over seeds; accuracy: the 95% interval)."""
    column = document["verdict_column"]
    colors = {"pgd": "tab:blue", "fgsm_rs": "tab:orange", "n_fgsm": "tab:green"}
    markers = {"at": "o", "aelfs": "s"}
    fig, axes = plt.subplots(figsize=(7, 4.5))
    for row in document["variants"].values():
        color, marker = colors[row["attack"]], markers[row["method"]]
        minutes = row["step_minutes"]["per_seed"]
        axes.scatter(minutes, row[column]["per_seed"], color=color, marker=marker, alpha=0.35, s=20)
        mean_x, mean_y = row["step_minutes"]["mean"], row[column]["mean"]
        axes.errorbar(
            mean_x,
            mean_y,
            xerr=row["step_minutes"]["std"] or 0,
            yerr=[[mean_y - row[column]["lo"]], [row[column]["hi"] - mean_y]],
            color=color,
            marker=marker,
            markersize=8,
            capsize=3,
            label=f"{METHODS[row['method']]} {row['attack']}",
        )
    axes.set_xlabel("training minutes (its steps at the step time measured in turns)")
    axes.set_ylabel(f"{column_label(column)} accuracy (%), 95% interval")
    seeds = document["seeds"]
    seed_text = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    axes.set_title(
        f"Single-step vs PGD training, {document['settings']['dataset']}, {seed_text}"
        + (" (smoke)" if document["smoke"] else "")
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
