"""Single-step against multi-step adversarial training (issue 17): AT and AELFs, each trained with PGD, fgsm_rs and
n_fgsm on mnist5k with the settings of ``aelf reproduce table2 --preset quick`` (or ``--preset medium``).

    aelf reproduce fast-at --seeds 8,9,10                    # studies/fast-at
    aelf reproduce fast-at --preset medium --seeds 8,9,10    # studies/fast-at-medium

Every run is table2's with the same preset and seed; only the training attack changes:

- ``pgd``: the preset's PGD(0.3, 8, 0.04), no random start (``st``, ``at-pgd`` and ``aelfs-pgd`` are table2's
  ``st``, ``at`` and ``aelfs``: finished ones in ``studies/table2-PRESET/seed-N`` are copied, not trained again);
- ``fgsm_rs``: FGSM from a uniform start in the eps-ball, step 1.25 eps = 0.375, projected back onto the ball (Wong
  et al. 2020, whose MNIST runs at eps 0.3 used this step; their optimiser and schedule are not copied: only the
  attack differs);
- ``n_fgsm``: noise of half-width 2 eps = 0.6, step eps = 0.3, no projection (de Jorge et al. 2022's k = 2, alpha =
  eps). aelf's defaults for both attacks are exactly these.

MNIST at eps 0.3 is where single-step training is known to overfit catastrophically; a collapsed run shows as FGSM
accuracy far above its PGD accuracy (both are measured). Each run is tested on the 1,000 mnist5k test images:
natural, PGD(0.3, 16, 0.02) (the paper's attack), FGSM(0.3) and AutoAttack (version ``quick``) on the first 500 (the
verdict rests on a paired difference of a few points, which the quick preset's 200 cannot resolve).

The time axis: each run's training steps at the step time of its config, measured in turns with the other variants
in one process (``OUT/step-times.json``, once per study folder), since the epochs' wall times of runs trained hours
apart on a shared machine measure the load as much as the method. The verdict per method: is a single-step variant
within MARGIN points of PGD training (the paired difference's interval above -MARGIN) at <= TIME_FRACTION of its
training time?

The analysis (:func:`summary_of`, :func:`figure`) serves any study whose single-step runs each name their method's
PGD run as ``Run.baseline`` (``fast-at-methods`` too).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402

from aelf.core.config import Config, to_dict
from aelf.core.data import dataset_info
from aelf.core.fileio import read_cached, write_cached
from aelf.core.memory_format import model_memory_format
from aelf.core.methods import METHODS as METHOD_CLASSES
from aelf.core.modes import training
from aelf.core.optim import make_optimizer
from aelf.core.run import model_for
from aelf.core.step import set_determinism, train_step
from aelf.workflows.evaluation import stats
from aelf.workflows.reproduction import evidence, paper_experiments, plots
from aelf.workflows.reproduction.evidence import AUTOATTACK
from aelf.workflows.reproduction.experiment import EXPERIMENTS, Experiment, Run, register_experiment

METHODS = ("at", "aelfs")
TRAIN_ATTACKS = {"pgd": None, "fgsm_rs": {"name": "fgsm_rs"}, "n_fgsm": {"name": "n_fgsm"}}
MARGIN = 2.0  # accuracy points: "within 2 points of PGD training's accuracy"
TIME_FRACTION = 0.25  # "at <= 1/4 of its training time"
AA_IMAGES = 500
STEP_TIMES = "step-times.json"


def run_key(method: str, attack: str) -> str:
    return f"{method}-{attack}"


def method_run(method: str, key: str, label: str, settings: dict, single_step: bool = True) -> Run:
    """A run of ``method`` (``settings``: its config layer), started from ``st`` when the method needs a start
    (its registry's ``needs_init``); a single-step run is compared with the method's PGD run."""
    return Run(
        key,
        label,
        settings,
        init="st" if getattr(METHOD_CLASSES[method], "needs_init", False) else None,
        baseline=run_key(method, "pgd") if single_step else None,
    )


def runs(methods=METHODS, attacks=TRAIN_ATTACKS) -> tuple[Run, ...]:
    """ST (AELFs' start), then every method x training attack, each single-step run compared with its method's PGD
    run (the attack ``pgd``: the preset's)."""
    found = [Run("st", "ST", {"method": {"name": "st"}})]
    for method in methods:
        for attack, spec in attacks.items():
            settings = {"method": {"name": method, **({"attack": spec} if spec else {})}}
            label = f"{METHOD_CLASSES[method].label} {attack}"
            found.append(method_run(method, run_key(method, attack), label, settings, single_step=spec is not None))
    return tuple(found)


def training_attack(run: Run) -> str:
    """The training attack of a run, in words: ``pgd`` (the preset's) or the single-step attack with the options
    that differ from its defaults."""
    method = run.settings["method"]
    spec = method.get("attack")
    if spec is None:
        return "pgd"
    words = [spec["name"]]
    if "clip_start" in spec:
        words.append("clipped start" if spec["clip_start"] else "unclipped start")
    if "step_scale" in spec:
        words.append(f"step {spec['step_scale']:g} eps")
    if method.get("attack_mode") == "train":
        words.append("crafted in train mode")
    for name, value in method.items():
        if name not in ("name", "attack", "attack_mode"):
            words.append(f"{name} {value}")
    train = run.settings.get("train", {})
    words += [f"{train[name]} {name}" for name in ("optimizer", "schedule") if name in train]
    return ", ".join(words)


def preset(name: str):
    """table2's preset, tested with PGD, FGSM and AutoAttack on the first AA_IMAGES test images."""
    base = EXPERIMENTS["table2"].presets[name]
    pgd = paper_experiments.MNIST_PGD
    return replace(
        base,
        test_attacks={"PGD": pgd, "FGSM": {"name": "fgsm", "eps": pgd["eps"]}},
        autoattack="quick",
        autoattack_examples=AA_IMAGES,
        note=f"the runs of table2 --preset {name} ({base.note}), each method trained with PGD, fgsm_rs and n_fgsm "
        f"at the same eps; tested here with PGD, FGSM and AutoAttack (quick) on the first {AA_IMAGES} test images",
    )


# ----------------------------------------------------------------------------------------------------------------------
# Step timing: the time axis, measured so that a busy machine cannot bias it


def step_seconds(configs: dict[str, Config], repeats: int = 5, steps: int = 2, seed: int = 0) -> dict[str, float]:
    """Median seconds of one training step of each run's config (its model, method, attack, batch size), the runs
    timed in turns in this process: ``repeats`` rounds, each timing ``steps`` steps of every run in order."""
    device = torch.device("cpu")
    set_determinism(True, device)
    paths = {}
    for key, config in configs.items():
        torch.manual_seed(seed)
        model = model_for(config)
        fmt = model_memory_format(model, device)
        model = model.to(memory_format=fmt)  # type: ignore[call-overload]  # torch: untyped
        optimizer = make_optimizer(config.method, model, config.train)
        generator = torch.Generator().manual_seed(seed)
        shape = (config.train.batch_size, dataset_info(config.data.name).in_channels, 32, 32)
        x = torch.rand(shape, generator=generator).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (config.train.batch_size,), generator=generator)
        paths[key] = (config.method, model, optimizer, x, y)
    times: dict[str, list[float]] = {key: [] for key in paths}
    for round_ in range(repeats + 1):
        for key, (method, model, optimizer, x, y) in paths.items():
            start = time.perf_counter()
            with training(model):
                for _ in range(steps):
                    train_step(method, model, optimizer, x, y)
            if round_:  # the first round warms oneDNN's kernels up
                times[key].append((time.perf_counter() - start) / steps)
    return {key: round(statistics.median(values), 5) for key, values in times.items()}


def cached_step_seconds(out: Path, configs: dict[str, Config]) -> dict[str, float]:
    """:func:`step_seconds`, measured once per study folder (``STEP_TIMES``) for these configs."""
    key = {
        name: to_dict(replace(config, train=replace(config.train, seed=0, init=None)))
        for name, config in configs.items()
    }
    cached = read_cached(out / STEP_TIMES, key)
    if cached is not None:
        return cached
    seconds = step_seconds(configs)
    write_cached(out / STEP_TIMES, key, seconds)
    return seconds


def forward_passes(method: str, n_steps: int) -> float:
    """Forward-pass equivalents of one image of a training step, counted leanly (the bench's formulas: a backward
    pass costs two forwards; JT and AELFs attack half the batch)."""
    return {"st": 3.0, "at": 2 * n_steps + 3.0, "jt": n_steps + 3.0, "aelfs": n_steps + 3.0}[method]


def compared(runs: tuple[Run, ...]) -> dict[str, Run]:
    """The runs in the time table: every trained run but ST, by key."""
    return {run.key: run for run in runs if run.method not in (None, "st")}


# ----------------------------------------------------------------------------------------------------------------------
# The study's analysis of the results document


def spread(values: list[float | None]) -> dict | None:
    present = [v for v in values if v is not None]
    if not values or len(present) < len(values):
        return None
    return {
        "mean": round(statistics.fmean(present), 4),
        "std": round(statistics.stdev(present), 4) if len(present) > 1 else None,
        "per_seed": values,
    }


def minutes(document: dict, key: str, seconds_per_step: float) -> dict:
    """Per seed: the run's steps at the measured step time, and its epochs' recorded training time, in minutes."""
    timings = [document["timing"][key][str(seed)] or {} for seed in document["seeds"]]
    steps = [t.get("steps") for t in timings]
    train = [t.get("train_s") for t in timings]
    return {
        "step_minutes": spread([None if s is None else round(s * seconds_per_step / 60, 4) for s in steps]),
        "train_minutes": spread([None if s is None else round(s / 60, 4) for s in train]),
    }


def variant_rows(document: dict, seconds: dict[str, float], column: str, k: int, runs: tuple[Run, ...]) -> dict:
    """Per run but ST: minutes (mean ± std over seeds), the verdict column's accuracy with its interval, and the lean
    forward passes of a step (``k``: the PGD training attack's steps)."""
    seeds, rows = document["seeds"], {}
    for key, run in compared(runs).items():
        method = str(run.method)
        accuracy = stats.accuracy_summary(evidence.outcomes(document["per_seed"][key], seeds, (column,)))
        rows[key] = {
            "method": method,
            "attack": training_attack(run),
            "baseline": run.baseline,
            **minutes(document, key, seconds[key]),
            "forward_passes": forward_passes(method, 1 if run.baseline else k),
            column: {
                "mean": round(accuracy.mean, 3),
                "lo": round(accuracy.lo, 3),
                "hi": round(accuracy.hi, 3),
                "per_seed": [round(v, 3) for v in accuracy.per_seed],
                "text": accuracy.format(1),
            },
        }
    return rows


def check(document: dict, rows: dict, key: str, column: str, st_minutes: float | None) -> dict:
    """One single-step run against its method's PGD training: accuracy within MARGIN, time within TIME_FRACTION."""
    row = rows[key]
    pgd = rows[row["baseline"]]
    diff = document["comparisons"][key][column]
    accuracy = "shown" if diff["lo"] >= -MARGIN else "not shown" if diff["difference"] >= -MARGIN else "no"
    found = {**{k: diff[k] for k in ("difference", "lo", "hi", "verdict")}, "within_margin": accuracy}
    found["forward_pass_ratio"] = round(row["forward_passes"] / pgd["forward_passes"], 4)
    if row["step_minutes"] and pgd["step_minutes"]:
        ratio = row["step_minutes"]["mean"] / pgd["step_minutes"]["mean"]
        found["time_ratio"] = round(ratio, 4)
        found["time_ok"] = ratio <= TIME_FRACTION
        if row["method"] == "aelfs" and st_minutes is not None:  # the ST run both start from, counted
            found["time_ratio_with_st"] = round(
                (row["step_minutes"]["mean"] + st_minutes) / (pgd["step_minutes"]["mean"] + st_minutes), 4
            )
    found["answer"] = accuracy == "shown" and bool(found.get("time_ok"))
    found["text"] = verdict_text(row["attack"], diff, found)
    return found


def verdict_text(attack: str, diff: dict, found: dict) -> str:
    accuracy = {
        "shown": f"within {MARGIN:g} points (the interval's lower end {diff['lo']:+.1f} >= -{MARGIN:g})",
        "not shown": f"not shown within {MARGIN:g} points (the mean is, but the interval reaches {diff['lo']:+.1f})",
        "no": f"more than {MARGIN:g} points below",
    }[found["within_margin"]]
    if "time_ratio" in found:
        time_part = (
            f"{found['time_ratio']:.2f} of PGD's training time (lean forward passes "
            f"{found['forward_pass_ratio']:.2f}), "
            f"{'within' if found['time_ok'] else 'above'} 1/{round(1 / TIME_FRACTION)}"
        )
        if "time_ratio_with_st" in found:
            time_part += f"; {found['time_ratio_with_st']:.2f} counting the shared ST run"
    else:
        time_part = "training time not recorded"
    return (
        f"{attack}: {diff['text']} against PGD training, {accuracy}; {time_part}: {'yes' if found['answer'] else 'no'}"
    )


def summary_of(runs: tuple[Run, ...]):
    """``Experiment.summary`` of a study of these runs: the time table and the verdicts (``document["fast_at"]``,
    one per method: is one of its single-step runs within MARGIN of its PGD run at <= TIME_FRACTION of its time?)
    and their Markdown."""

    def summary(document: dict, plans: dict, out: Path) -> tuple[dict, str]:
        configs = next(iter(plans.values()))[0].configs
        seconds = cached_step_seconds(out, configs)
        column = AUTOATTACK if document["evaluation"]["autoattack"] else "PGD"
        pgd_runs = [key for key, run in compared(runs).items() if run.baseline is None]
        k = configs[pgd_runs[0]].method.attack.n_steps
        rows = variant_rows(document, seconds, column, k, runs)
        st = minutes(document, "st", seconds["st"])["step_minutes"]
        verdicts = {}
        for method in dict.fromkeys(row["method"] for row in rows.values()):
            label = METHOD_CLASSES[method].label
            single = [key for key, row in rows.items() if row["method"] == method and row["baseline"]]
            checks = {key: check(document, rows, key, column, st and st["mean"]) for key in single}
            verdicts[method] = {
                "question": f"is a single-step variant of {label} within {MARGIN:g} points of PGD training's "
                f"{column} accuracy at <= 1/{round(1 / TIME_FRACTION)} of its training time?",
                "answer": "yes" if any(c["answer"] for c in checks.values()) else "no",
                "variants": checks,
            }
        found = {"step_seconds": seconds, "verdict_column": column, "variants": rows, "st_step_minutes": st}
        found["verdicts"] = verdicts
        return {"fast_at": found}, markdown(found)

    return summary


def minutes_text(value: dict | None) -> str:
    if value is None:
        return "n/a"
    return f"{value['mean']:.2f}" if value["std"] is None else f"{value['mean']:.2f} ± {value['std']:.2f}"


def markdown(found: dict) -> str:
    column = found["verdict_column"]
    lines = [
        "## Training time and verdicts (computed from the numbers above)",
        "",
        "min: the run's training steps at the step time of its config measured in turns with the other variants in "
        "one process (what the time ratios and the figure use); epoch min: the trainer's epoch times as recorded "
        "while the run trained (they carry the machine's load then).",
        "",
        f"| method | training attack | min | epoch min | forward passes / image | {column} |",
        "|---|---|---|---|---|---|",
    ]
    for row in found["variants"].values():
        lines.append(
            f"| {METHOD_CLASSES[row['method']].label} | {row['attack']} | {minutes_text(row['step_minutes'])} | "
            f"{minutes_text(row['train_minutes'])} | {row['forward_passes']:g} | {row[column]['text']} |"
        )
    lines += [
        "",
        f"ST, the start of every AELFs run (its time not in the AELFs rows): {minutes_text(found['st_step_minutes'])} "
        "min. Catastrophic overfitting shows as FGSM accuracy far above PGD accuracy.",
        "",
    ]
    for method, verdict in found["verdicts"].items():
        lines.append(f"**{METHOD_CLASSES[method].label}: {verdict['question']} {verdict['answer'].upper()}**")
        lines += [f"- {c['text']}" for c in verdict["variants"].values()]
        lines.append("")
    return "\n".join(lines)


def figure(document: dict, path: Path) -> None:
    """Accuracy under the verdict's attack against training minutes: one small marker per run, the mean of each
    variant with error bars (minutes: std over seeds; accuracy: the 95% interval)."""
    found = document["fast_at"]
    column = found["verdict_column"]
    attacks = list(dict.fromkeys(row["attack"] for row in found["variants"].values()))
    palette = plt.get_cmap("tab10")
    colors = {attack: palette(i % 10) for i, attack in enumerate(attacks)}
    markers = {"at": "o", "jt": "^", "aelfs": "s"}
    fig, axes = plt.subplots(figsize=(10, 4.5))
    for row in found["variants"].values():
        if row["step_minutes"] is None:
            continue
        color, marker = colors[row["attack"]], markers.get(row["method"], "D")
        accuracy, spent = row[column], row["step_minutes"]
        axes.scatter(spent["per_seed"], accuracy["per_seed"], color=color, marker=marker, alpha=0.35, s=20)
        axes.errorbar(
            spent["mean"],
            accuracy["mean"],
            xerr=spent["std"] or 0,
            yerr=[[accuracy["mean"] - accuracy["lo"]], [accuracy["hi"] - accuracy["mean"]]],
            color=color,
            marker=marker,
            markersize=8,
            capsize=3,
            label=f"{METHOD_CLASSES[row['method']].label} {row['attack']}",
        )
    axes.set_xlabel("training minutes (its steps at the step time measured in turns)")
    axes.set_ylabel(f"{column} accuracy (%), 95% interval")
    seeds = document["seeds"]
    axes.set_title(
        f"Single-step vs PGD training, {plots.scale_text(document)}, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}"
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the axes: never over a point
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


RUNS = runs()
EXPERIMENT = register_experiment(
    Experiment(
        name="fast-at",
        title="Single-step training: AT and AELFs with PGD, fgsm_rs and n_fgsm (table2's settings)",
        kind="robust",
        dataset="mnist",
        runs=RUNS,
        presets={name: preset(name) for name in ("quick", "medium")},
        paper_rows={},
        paper_label="",
        figure=figure,
        baseline=run_key("at", "pgd"),
        reuse_runs_from={"quick": "studies/table2-quick", "medium": "studies/table2-medium"},
        folders={"quick": "studies/fast-at", "medium": "studies/fast-at-medium"},
        summary=summary_of(RUNS),
    )
)
