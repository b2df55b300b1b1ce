"""PNG figures of `aelf reproduce` results (matplotlib, Agg backend: no display needed).

Each function takes the JSON document of :func:`aelf.workflows.reproduction.reproduce.reproduce` and a path to write.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402

from aelf.workflows.evaluation import stats  # noqa: E402
from aelf.workflows.reproduction.evidence import outcomes  # noqa: E402
from aelf.workflows.reproduction.paper import SETS  # noqa: E402


def scale_text(document: dict) -> str:
    """What a figure measured: the preset, the ``--set`` overrides that changed it, the dataset."""
    overrides = "".join(f", {item}" for item in document.get("overrides", ()))
    return f"{document['preset']} preset{overrides}, {document['dataset']}"


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def tradeoff_bars(document: dict, path: Path) -> None:
    """Fig. 1: natural and adversarial test accuracy per trained model, side by side."""
    measured, labels = document["measured"], document["labels"]
    attack = next(iter(document["test_attacks"]))
    keys = list(measured)
    positions = range(len(keys))
    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(keys)), 4))
    axes.bar([p - 0.2 for p in positions], [measured[k]["natural"] for k in keys], 0.4, label="natural")
    axes.bar([p + 0.2 for p in positions], [measured[k][attack] for k in keys], 0.4, label=f"adversarial {attack}")
    axes.set_xticks(list(positions), [labels[k] for k in keys], rotation=20)
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"{document['experiment']}: measured\n({scale_text(document)})", fontsize=10)
    axes.legend()
    _save(figure, path)


def shift_bars(document: dict, path: Path) -> None:
    """Fig. 3(b): natural accuracy of each model on N, N(L), N(R), N(U), N(D)."""
    measured, labels = document["measured"], document["labels"]
    width = 0.8 / max(1, len(measured))
    figure, axes = plt.subplots(figsize=(7, 4))
    for index, (key, row) in enumerate(measured.items()):
        offsets = [s + (index - (len(measured) - 1) / 2) * width for s in range(len(SETS))]
        axes.bar(offsets, [row["natural"][s] for s in SETS], width, label=labels[key])
    axes.set_xticks(range(len(SETS)), SETS)
    axes.set_ylabel("natural test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"shifted test sets: measured\n({scale_text(document)})", fontsize=10)
    axes.legend()
    _save(figure, path)


def beta_curve(document: dict, path: Path) -> None:
    """Fig. 5: natural and adversarial accuracy of AELFs against beta, each point with its 95% interval (Wilson over
    the test images for one seed, the t-interval over seeds and images for several)."""
    seeds, per_seed = document["seeds"], document["per_seed"]
    attack = next(iter(document["test_attacks"]))
    keys = sorted(
        (key for key in per_seed if key.startswith("aelfs-beta")), key=lambda k: float(k[len("aelfs-beta") :])
    )
    betas = [float(key[len("aelfs-beta") :]) for key in keys]
    figure, axes = plt.subplots(figsize=(6, 4))
    for path_, marker, label in (("natural", "o-", "natural"), (attack, "s-", f"adversarial {attack}")):
        summaries = [stats.accuracy_summary(outcomes(per_seed[key], seeds, (path_,))) for key in keys]
        means = [s.mean for s in summaries]
        errors = [
            [m - s.lo for m, s in zip(means, summaries, strict=True)],
            [s.hi - m for m, s in zip(means, summaries, strict=True)],
        ]
        axes.errorbar(betas, means, yerr=errors, fmt=marker, capsize=3, label=label)
    axes.set_xlabel("beta")
    axes.set_ylabel("test accuracy (%), 95% interval")
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    axes.set_title(f"AELFs beta sensitivity: measured\n({scale_text(document)}, {seed_text})", fontsize=10)
    axes.legend()
    _save(figure, path)
