"""Seeds and intervals in a reproduction's results: per-image outcomes in, 95% intervals and paired comparisons out.

A reproduction with several seeds keeps every seed's result (``per_seed``: run key -> seed -> result) with its
per-image outcomes (:mod:`aelf.workflows.evaluation.per_image`). From them each accuracy gets its interval
(:func:`aelf.workflows.evaluation.stats.accuracy_summary`: Wilson over the test images for one seed, a t-interval
over seeds and images for several, on n - 1 degrees of freedom) and the runs are compared in pairs on the same seeds
and images (:func:`aelf.workflows.evaluation.stats.paired_difference`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aelf.workflows.evaluation import stats
from aelf.workflows.evaluation.per_image import decode_bits
from aelf.workflows.reproduction.paper import SETS

AUTOATTACK = "AutoAttack"  # the result key and column of the AutoAttack robust accuracy
BASELINE = "at"  # by default runs are compared with AT, the method every other adversarial method is measured against


def columns(kind: str, result: dict) -> list[tuple[str, tuple[str, ...]]]:
    """``[(column label, path into a result's per_image)]`` of one run's measured accuracies."""
    per_image = result["per_image"]
    found: list[tuple[str, tuple[str, ...]]] = []
    if kind == "shift":
        found += [(f"nat {s}", ("natural", s)) for s in SETS] + [(f"adv {s}", ("adversarial", s)) for s in SETS]
    else:
        found += [(label, (label,)) for label in per_image if label not in (AUTOATTACK, "attention")]
    if AUTOATTACK in per_image:
        found.append((f"{AUTOATTACK}{' N' if kind == 'shift' else ''}", (AUTOATTACK,)))
    return found


def n_images(result: dict) -> int:
    """How many test images one run's result was measured on (its natural accuracy's outcomes)."""
    natural = result["per_image"]["natural"]
    return int(natural["N"]["n"] if "N" in natural else natural["n"])


def bits_at(per_image: dict, path: tuple[str, ...]) -> np.ndarray:
    """The 0/1 outcomes at ``path`` (e.g. ``("adversarial", "N(U)")``) of one result's per-image outcomes."""
    node = per_image
    for part in path:
        node = node[part]
    return decode_bits(node)


def outcomes(per_seed: dict, seeds: Sequence[int], path: tuple[str, ...]) -> np.ndarray:
    """seeds x images: 0/1 outcomes of one run at ``path`` of its per-image results."""
    return np.stack([bits_at(per_seed[str(seed)]["per_image"], path) for seed in seeds])


def as_record(comparison: stats.Comparison, **extra) -> dict:
    """A comparison as the results file keeps it (points, rounded), with its text."""
    return {
        "difference": round(comparison.difference, 3),
        "lo": round(comparison.lo, 3),
        "hi": round(comparison.hi, 3),
        **extra,
    }


def mean_result(results: Sequence[dict]) -> dict:
    """The seeds' results averaged leaf by leaf (numbers only; per-image outcomes left out): what the tables and
    figures show as the measured row."""
    first = results[0]
    if isinstance(first, dict):
        return {key: mean_result([r[key] for r in results]) for key in first if key != "per_image"}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        if all(r == first for r in results):
            return first  # a count (images) or a setting stays what it is
        return round(float(np.mean(results)), 4)
    return first


def interval_table(document: dict, kind: str) -> str:
    """Markdown: every run's accuracies with their 95% interval (and mean ± std over seeds when there are several)."""
    seeds, per_seed, labels = document["seeds"], document["per_seed"], document["labels"]
    first = next(iter(per_seed.values()))[str(seeds[0])]
    cols = columns(kind, first)
    method = (
        "Wilson score interval over the test images"
        if len(seeds) == 1
        else (
            f"mean ± std over {len(seeds)} seeds, 95% t-interval over seeds and test images, "
            f"{len(seeds) - 1} degrees of freedom"
        )
    )
    lines = [
        f"Accuracy (%) with its 95% interval ({method}).",
        "",
        "| run | " + " | ".join(label for label, _ in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for key, runs in per_seed.items():
        cells = [stats.accuracy_summary(outcomes(runs, seeds, path)).format(1) for _, path in cols]
        lines.append(f"| {labels.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BREADTH_COLUMN = "breadth (mass_90)"  # the shift study's gradient-breadth comparison, in mass_90's own unit


def comparison_paths(kind: str, result: dict) -> list[tuple[str, tuple[str, ...]]]:
    """What each run is compared with AT on: natural and attacked accuracy on N, the natural accuracy on the shifted
    sets and, in the shift study, the breadth of the input gradient (``mass_90`` per image)."""
    if kind == "shift":
        wanted: list[tuple[str, tuple[str, ...]]] = [
            ("nat N", ("natural", "N")),
            ("adv N", ("adversarial", "N")),
            ("nat N(U)", ("natural", "N(U)")),
            ("nat N(D)", ("natural", "N(D)")),
            ("adv N(U)", ("adversarial", "N(U)")),
        ]
        if AUTOATTACK in result["per_image"]:
            wanted.append((f"{AUTOATTACK} N", (AUTOATTACK,)))
        if "attention" in result["per_image"]:
            wanted.append((BREADTH_COLUMN, ("attention", "mass_90")))
        return wanted
    return columns(kind, result)


def breadth(per_seed: dict, seeds: Sequence[int]) -> np.ndarray:
    """seeds x images: one run's ``mass_90`` per image (the fraction of pixels holding 90% of the gradient's mass)."""
    return np.stack([np.asarray(per_seed[str(s)]["per_image"]["attention"]["mass_90"], dtype=float) for s in seeds])


def compare_column(runs: dict, baseline_runs: dict, seeds: Sequence[int], label: str, path: tuple[str, ...]) -> dict:
    """One column of a run against its baseline, paired over seeds and images: accuracy in points, or breadth in
    ``mass_90``'s unit (a fraction of the pixels, 3 decimals)."""
    if label == BREADTH_COLUMN:
        comparison = stats.paired_mean_difference(breadth(runs, seeds), breadth(baseline_runs, seeds))
        text = comparison.format(3)
    else:
        comparison = stats.paired_difference(outcomes(runs, seeds, path), outcomes(baseline_runs, seeds, path))
        text = comparison.format(1)
    return as_record(comparison, verdict=comparison.verdict, method=comparison.method, text=text)


def compare_runs(document: dict, kind: str, key: str, baseline: str) -> dict:
    """``{column: comparison dict}``: run ``key`` minus run ``baseline`` in every column of the comparisons, paired
    over the document's seeds and test images."""
    seeds, per_seed = document["seeds"], document["per_seed"]
    return {
        label: compare_column(per_seed[key], per_seed[baseline], seeds, label, path)
        for label, path in comparison_paths(kind, per_seed[baseline][str(seeds[0])])
    }


def paired_comparisons(document: dict, kind: str, baselines: dict[str, str] | None = None) -> dict:
    """``{run key: {column: comparison dict}}``: every run other than ST against its baseline (``baselines``: run
    key -> the key it is compared with; default AT for every run), paired over the same seeds and test images. A
    run that is its own baseline, or whose baseline the results lack, is not compared."""
    per_seed = document["per_seed"]
    found: dict = {}
    for key in per_seed:
        baseline = (baselines or {}).get(key, BASELINE)
        if key in (baseline, "st") or baseline not in per_seed:
            continue
        found[key] = compare_runs(document, kind, key, baseline)
    return found


def comparisons_markdown(comparisons: dict, labels: dict, baselines: dict[str, str] | None = None) -> str:
    """The comparisons as a table: against AT, or (``baselines``: run key -> its baseline) against each run's own."""
    if not comparisons:
        return ""
    against = {key: (baselines or {}).get(key, BASELINE) for key in comparisons}
    only = set(against.values())
    single = labels.get(next(iter(only)), next(iter(only)).upper()) if len(only) == 1 else None
    breadth_note = (
        f"; {BREADTH_COLUMN} in its own unit, the fraction of pixels holding 90% of the input gradient's mass "
        "(larger: broader)"
        if BREADTH_COLUMN in next(iter(comparisons.values()))
        else ""
    )
    lines = [
        f"Each run minus {single or 'its baseline'}, in accuracy points, paired over the same seeds and test images "
        f"(95% paired t-interval over seeds and images): better / worse / not distinguishable at 95%{breadth_note}.",
        "",
        f"| run vs {single or 'baseline'} | " + " | ".join(next(iter(comparisons.values()))) + " |",
        "|---|" + "---|" * len(next(iter(comparisons.values()))),
    ]
    for key, row in comparisons.items():
        name = labels.get(key, key) + ("" if single else f" vs {labels.get(against[key], against[key])}")
        lines.append(f"| {name} | " + " | ".join(c["text"] for c in row.values()) + " |")
    return "\n".join(lines) + "\n"


def pgd_path(kind: str, result: dict) -> tuple[str, ...]:
    """Where a run's result holds the paper's test attack on N: the shift study's adversarial N, else the first
    attack column."""
    if kind == "shift":
        return ("adversarial", "N")
    return next(path for label, path in columns(kind, result) if label not in ("natural", AUTOATTACK))


def autoattack_gaps(document: dict, kind: str) -> dict:
    """``{run key: comparison dict}``: the paper's PGD accuracy minus AutoAttack's on the same test images (the first
    ones AutoAttack ran on), paired over seeds and images: how much the paper's attack overstates robustness."""
    seeds, per_seed = document["seeds"], document["per_seed"]
    found: dict = {}
    for key, runs in per_seed.items():
        first = runs[str(seeds[0])]
        if AUTOATTACK not in first["per_image"] or key == "st":
            continue
        aa = outcomes(runs, seeds, (AUTOATTACK,))
        pgd = outcomes(runs, seeds, pgd_path(kind, first))[:, : aa.shape[1]]
        gap = stats.paired_difference(pgd, aa)
        found[key] = as_record(gap, n_images=int(aa.shape[1]), text=gap.format(1).split(":")[0])
    return found


def gaps_markdown(gaps: dict, labels: dict, pgd_label: str) -> str:
    if not gaps:
        return ""
    n = next(iter(gaps.values()))["n_images"]
    lines = [
        f"{pgd_label} accuracy minus AutoAttack accuracy on the same first {n} test images, in points (95% paired "
        "t-interval over seeds and images): how much the paper's attack overstates robustness.",
        "",
        "| run | PGD - AutoAttack |",
        "|---|---|",
    ]
    lines += [f"| {labels.get(key, key)} | {gap['text']} |" for key, gap in gaps.items()]
    return "\n".join(lines) + "\n"


def headline(document: dict, key: str = "aelfs", column: str = "adv N") -> str | None:
    """One line: does ``key`` differ from AT under attack on N? None when the results do not hold both."""
    found = document.get("comparisons", {}).get(key, {}).get(column)
    if found is None:
        return None
    label = document["labels"].get(key, key)
    n = len(document["seeds"])
    scale = f"{n} seed{'s' if n > 1 else ''}, {document['n_test_images']} test images"
    method = f" ({found['method']} interval)" if "method" in found else ""
    return f"{label} vs AT, adversarial accuracy on N ({scale}): {found['text']}{method}"
