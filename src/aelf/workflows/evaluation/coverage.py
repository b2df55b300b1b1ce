"""How often a "95%" interval of :mod:`aelf.workflows.evaluation.stats` holds the true value: simulated studies
with a known answer.

Each simulated study has N test images drawn from a population: image j is answered right by model B with
probability q_j ~ U(0.4, 0.6) under every seed, and by model A with probability q_j + (d + g_j + u_s) / 100,
where d is the true difference in points, g_j ~ N(0, image_sd) is image j's own lean towards A or B (the same under
every seed: what the seeds share) and u_s ~ N(0, seed_sd) is seed s's training noise. The population's expected
A - B is d and A's expected accuracy is 50 + d (a probability is clipped to [0, 1] only beyond 4.5 standard
deviations of the shifts in the settings below, which moves the truth by less than 0.001 points). Outcomes are
drawn independently per seed and image, so the seeds and the two models share the same images, as in a real
study. The intervals see only the 0/1 outcomes.

``python -m aelf.workflows.evaluation.coverage`` prints the coverage table that the module text of ``stats`` and
the docs' claims page quote (saved in ``studies/coverage/coverage.md``); ``tests/test_coverage.py`` holds the
t-interval to its nominal level.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from aelf.workflows.evaluation.stats import accuracy_summary, paired_difference

IMAGE_RANGE = (0.4, 0.6)  # q_j: the images' chance of being right, away from 0 and 1 so that shifts seldom clip

Interval = Callable[[np.ndarray, np.ndarray], tuple[float, float]]  # (A, B) seeds x images -> (lo, hi) in points


@dataclass(frozen=True)
class Setting:
    n_seeds: int
    seed_sd: float  # points
    true_difference: float  # points
    image_sd: float = 2.0  # points: the images' own lean, shared by the seeds
    n_images: int = 1000


def simulate(rng: np.random.Generator, setting: Setting, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """``repeats`` studies of A and B: two bool arrays of repeats x seeds x images (the module's text)."""
    shape = (repeats, setting.n_seeds, setting.n_images)
    q = rng.uniform(*IMAGE_RANGE, size=(repeats, 1, setting.n_images))
    lean = rng.normal(0.0, setting.image_sd, size=(repeats, 1, setting.n_images))
    noise = rng.normal(0.0, setting.seed_sd, size=(repeats, setting.n_seeds, 1))
    a = rng.random(shape) < np.clip(q + (setting.true_difference + lean + noise) / 100, 0.0, 1.0)
    b = rng.random(shape) < q
    return a, b


def t_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    comparison = paired_difference(a, b)
    return comparison.lo, comparison.hi


def t_accuracy(a: np.ndarray, _b: np.ndarray) -> tuple[float, float]:
    summary = accuracy_summary(a)
    return summary.lo, summary.hi


def two_level_bootstrap_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple:
    """The method ``stats`` used before the t-interval, kept as the reference it is measured against: each resample
    draws the seeds with replacement, then image indices (the same for every seed), and the interval is the 2.5% and
    97.5% percentiles of the resampled mean differences."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    n_seeds, n_images = diff.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for i in range(n_boot):
        seeds = rng.integers(0, n_seeds, n_seeds)
        images = rng.integers(0, n_images, n_images)
        means[i] = diff[np.ix_(seeds, images)].mean()
    lo, hi = np.quantile(means * 100, [0.025, 0.975])
    return float(lo), float(hi)


def coverage(interval: Interval, setting: Setting, repeats: int, seed: int = 0, truth: str = "difference") -> float:
    """The share of ``repeats`` simulated studies whose interval holds the truth: the true difference, or (``truth=
    "accuracy"``) A's true accuracy, 50 + the true difference."""
    a, b = simulate(np.random.default_rng(seed), setting, repeats)
    target = setting.true_difference + (50.0 if truth == "accuracy" else 0.0)
    held = 0
    for study in range(repeats):
        lo, hi = interval(a[study], b[study])
        held += lo <= target <= hi
    return held / repeats


def standard_error(rate: float, repeats: int) -> float:
    """The binomial standard error of a coverage measured on ``repeats`` studies."""
    return float(np.sqrt(rate * (1 - rate) / repeats))


SETTINGS = tuple(
    Setting(n_seeds, seed_sd, true_difference)
    for n_seeds in (3, 5)
    for seed_sd in (0.0, 1.0, 3.0, 6.0)
    for true_difference in (0.0, 3.0)
)


def coverage_table(repeats: int, bootstrap_repeats: int, settings: Sequence[Setting] = SETTINGS) -> str:
    """Markdown: each setting's coverage by the t-interval (difference and accuracy) and the old bootstrap."""
    lines = [
        f"Coverage of nominal 95% intervals in simulated studies ({settings[0].n_images} images, image lean SD "
        f"{settings[0].image_sd:g} points; t-interval: "
        f"{repeats} studies a setting, binomial SE {100 * standard_error(0.95, repeats):.1f} points at 95%; the old "
        f"two-level bootstrap: {bootstrap_repeats} studies).",
        "",
        "| seeds | seed SD (points) | true A - B | t: A - B | t: accuracy of A | old bootstrap: A - B |",
        "|---|---|---|---|---|---|",
    ]
    for index, setting in enumerate(settings):
        t_diff = coverage(t_difference, setting, repeats, seed=index)
        t_acc = coverage(t_accuracy, setting, repeats, seed=index, truth="accuracy")
        old = coverage(two_level_bootstrap_difference, setting, bootstrap_repeats, seed=index)
        lines.append(
            f"| {setting.n_seeds} | {setting.seed_sd:g} | {setting.true_difference:+g} | {100 * t_diff:.1f}% | "
            f"{100 * t_acc:.1f}% | {100 * old:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2000, help="simulated studies per setting (t-interval)")
    parser.add_argument("--bootstrap-repeats", type=int, default=400, help="simulated studies per setting (old)")
    args = parser.parse_args(argv)
    print(coverage_table(args.repeats, args.bootstrap_repeats), end="")


if __name__ == "__main__":
    main()
