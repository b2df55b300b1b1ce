"""Accuracies with error bars, and paired comparisons of two models, from per-image correctness.

The input is what an evaluation knows image by image: for one model and one test set, a 0/1 (or bool) array over
the test images, 1 where the model was right. With several training seeds it is a list of such arrays, one per
seed, over the same images in the same order (and, for a comparison, the same seeds for both models).

Choices
-------
**One seed: Wilson's interval** (Wilson 1927) over the test images. It is the score interval of a binomial
proportion: closed form, never outside [0, 1], and close to its nominal coverage even at 0 or n correct and for
small n, where the textbook interval p +- z sqrt(p(1-p)/n) collapses to a point or leaves [0, 1] (Newcombe 1998;
Brown, Cai & DasGupta 2001). It covers only the test-set sampling: what another draw of test images would give,
not what another training run would give.

**Several seeds: a t-interval with two variance components.** What a claim about a *method* needs is the expected
accuracy (or difference) over training seeds *and* test images. With n seeds over the same N images, the
seed-averaged value m has variance tau^2/n (training noise: seed, and even the CPU's rounding) plus the variance
that the N images share across seeds. The interval is m +- t(n-1) sqrt(V), with V = s_seeds^2 / n + V_images:
s_seeds^2 the sample variance of the n per-seed values, and V_images the variance of the N per-image values
averaged over seeds, divided by N, less the part of it that differs between seeds (the mean within-image variance
across seeds over nN), floored at 0. That part is already in s_seeds^2; subtracting it keeps it from being counted
twice. The degrees of freedom are n - 1 (t(2) = 4.30 for 3 seeds, t(4) = 2.78 for 5): the seed term rests on n
values. Welch-Satterthwaite's df, which lets the image term lend degrees of freedom when the seeds agree, was tried
and covered 93.1% at 3 seeds with a seed SD of 6 points, below the 94% this module is held to. For an accuracy the
interval is widened, where needed, to hold Wilson's interval of the mean over the N images, so that it does not
collapse to a point at 0% or 100%.

This replaced a two-level percentile bootstrap (seeds, then images), whose seed level puts its 2.5% and 97.5%
points near the lowest and highest of 3 seeds. Measured coverage of a nominal 95% interval on simulated studies
with a known answer (``python -m aelf.workflows.evaluation.coverage --repeats 1000 --bootstrap-repeats 200``;
table in ``studies/coverage/coverage.md``): the t-interval on A - B covered 94.8% to 97.1% in all 16 settings
(3 and 5 seeds; seed SD 0, 1, 3, 6 points; true difference 0 and 3 points), and on an accuracy 95.3% to 100%; the
bootstrap covered 84-85% at 3 seeds with a seed SD of 6 points and 90.5% at 5 seeds. ``tests/test_coverage.py``
holds the t-interval to at least 94% (less the test's own binomial error) in every setting and checks that the
bootstrap fails the same check. With a few seeds the interval is wide: that is what 3 or 5 seeds can say.

**Comparisons are paired.** A - B is computed per image and seed (+1 only A right, -1 only B right, 0 otherwise),
because both models saw the same images under the same seeds: the difference only carries what varies between
them, so a real difference of a point or two can be told from noise where two separate intervals overlap. The same
t-interval is taken over these differences (one seed: the image term alone, df N-1). Per seed an exact McNemar
test (a two-sided binomial test on the images where exactly one model is right) is also given, the classic test
for two classifiers on one test set.

**Verdicts.** "better" when the whole interval for A - B lies above 0, "worse" when it lies below 0, and
"not distinguishable" when it contains 0: at the stated confidence, the data cannot tell the sign of the
difference. It does not mean the models are equal; a larger test set or more seeds may separate them.

Everything is closed form and deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.stats import t as student_t

from aelf.core.errors import AelfError

BETTER = "better"
WORSE = "worse"
NOT_DISTINGUISHABLE = "not distinguishable"


class StatsError(AelfError, ValueError):
    """Per-image results that cannot be summarised or compared: wrong shapes, values other than 0/1, bad settings."""


def normal_quantile(confidence: float) -> float:
    """z such that a standard normal lies within [-z, z] with probability ``confidence`` (1.96 for 0.95)."""
    _check_confidence(confidence)
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for k successes in n trials, as fractions in [0, 1]."""
    if not (_is_int(k) and _is_int(n)):
        raise StatsError(f"Wilson interval: k and n must be integers, got k={k!r}, n={n!r}")
    if n <= 0:
        raise StatsError(f"Wilson interval: n must be at least 1, got n={n}")
    if not 0 <= k <= n:
        raise StatsError(f"Wilson interval: k must be between 0 and n={n}, got k={k}")
    z = normal_quantile(confidence)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at k = 0 (k = n) the bound is exactly 0 (1); rounding would leave a trace of 1e-17 either side
    lo = 0.0 if k == 0 else max(0.0, float(centre - half))
    hi = 1.0 if k == n else min(1.0, float(centre + half))
    return lo, hi


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: images only A got right, and only B got right.

    Under "A and B are equally good" each discordant image is a fair coin; p = 2 P(X <= min) for X ~ Bin(n, 1/2),
    capped at 1, and 1 when there are no discordant images. Exact integer arithmetic: no overflow for large n.
    """
    if min(only_a, only_b) < 0:
        raise StatsError(f"McNemar: discordant counts must be non-negative, got {only_a} and {only_b}")
    n = int(only_a) + int(only_b)
    k = min(int(only_a), int(only_b))
    if n == 0:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class Summary:
    """An accuracy over seeds, in percent, with its interval. ``std`` is None for one seed."""

    mean: float
    std: float | None
    n_seeds: int
    n_images: int
    lo: float
    hi: float
    per_seed: tuple[float, ...]
    confidence: float
    method: str  # "wilson" (one seed) or "t (seeds + images)"
    df: float | None = None  # the t-interval's degrees of freedom (None for Wilson)

    def format(self, digits: int = 1) -> str:
        """``66.9 ± 1.2 (n=3) [64.1, 69.5]``; one seed: ``66.9 [63.9, 69.7]``."""
        interval = f"[{self.lo:.{digits}f}, {self.hi:.{digits}f}]"
        if self.n_seeds == 1:
            return f"{self.mean:.{digits}f} {interval}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n_seeds}) {interval}"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class Comparison:
    """A - B in accuracy points (percent), paired over seeds and images, with its interval and verdict."""

    difference: float
    lo: float
    hi: float
    verdict: str  # BETTER, WORSE or NOT_DISTINGUISHABLE (for A against B)
    n_seeds: int
    n_images: int
    per_seed: tuple[float, ...]  # A - B for each seed, in points
    mcnemar_p: tuple[float, ...]  # exact two-sided McNemar p-value for each seed
    confidence: float
    method: str  # "paired t (images)" or "paired t (seeds + images)"
    df: float | None = None  # the t-interval's degrees of freedom (inf where every value is the same)
    p_value: float | None = None  # two-sided, from the same t statistic (for multiple-comparison corrections)

    def format(self, digits: int = 1) -> str:
        """``+2.1 [-0.4, +4.6] (n=3): not distinguishable at 95%``."""
        seeds = f" (n={self.n_seeds})" if self.n_seeds > 1 else ""
        return (
            f"{self.difference:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]{seeds}: "
            f"{self.verdict} at {100 * self.confidence:g}%"
        )

    def __str__(self) -> str:
        return self.format()


def verdict_of(lo: float, hi: float) -> str:
    """BETTER when the interval lies above 0, WORSE below, else NOT_DISTINGUISHABLE."""
    return BETTER if lo > 0 else WORSE if hi < 0 else NOT_DISTINGUISHABLE


def mean_variance_df(values: np.ndarray) -> tuple[float, float, float]:
    """``(mean, V, df)`` of the mean of a seeds x images array: the variance with a seed component and a
    shared-image component, and its degrees of freedom, n - 1 for n seeds and N - 1 for one seed (the module's
    text)."""
    n_seeds, n_images = values.shape
    per_seed = values.mean(axis=1)
    mean = float(per_seed.mean())
    image_means = float(values.mean(axis=0).var(ddof=1)) / n_images if n_images > 1 else 0.0
    if n_seeds > 1:
        seed_part = float(per_seed.var(ddof=1)) / n_seeds
        # the image noise that differs between seeds is in seed_part already: keep only what the seeds share
        within = float(values.var(axis=0, ddof=1).mean())
        image_part = max(image_means - within / (n_seeds * n_images), 0.0)
    else:
        seed_part, image_part = 0.0, image_means
    # n - 1 whenever there are seeds: the seed term rests on n values, and letting the images lend it degrees of
    # freedom (Welch-Satterthwaite) under-covered at 3 seeds in simulation (this module's text)
    df = float(n_seeds - 1) if n_seeds > 1 else float(n_images - 1)
    return mean, seed_part + image_part, df


def seeds_and_images_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """``(mean, lo, hi, df)``: the t-interval of :func:`mean_variance_df`. Where the variance is 0 the interval is
    the mean itself and df is inf."""
    mean, variance, df = mean_variance_df(values)
    if variance <= 0.0:
        return mean, mean, mean, float("inf")
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * variance**0.5
    return mean, mean - half, mean + half, df


def t_p_value(values: np.ndarray) -> float:
    """Two-sided p-value of "the mean of ``values`` (seeds x images) is 0" from the same t statistic as the interval:
    the interval at confidence c excludes 0 exactly when this is below 1 - c."""
    mean, variance, df = mean_variance_df(values)
    if variance <= 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return float(2 * student_t.sf(abs(mean) / variance**0.5, df))


def accuracy_summary(per_seed, confidence: float = 0.95, *, name: str = "results") -> Summary:
    """Mean accuracy over seeds with a ``confidence`` interval: Wilson for one seed, else the t-interval over seeds
    and images (the module's text), widened where needed to hold Wilson's interval of the mean over the images.

    ``per_seed`` is one 0/1 array over the test images, a list of them (one per seed), or a seeds x images array.
    """
    _check_confidence(confidence)
    correct = as_seeds(per_seed, name)
    n_seeds, n_images = correct.shape
    accuracies = correct.mean(axis=1) * 100
    std = float(accuracies.std(ddof=1)) if n_seeds > 1 else None
    wilson_lo, wilson_hi = wilson_interval(int(round(correct.mean() * n_images)), n_images, confidence)
    if n_seeds == 1:
        lo, hi, method, df = 100 * wilson_lo, 100 * wilson_hi, "wilson", None
    else:
        _, t_lo, t_hi, df = seeds_and_images_interval(correct.astype(np.float64), confidence)
        lo, hi = 100 * max(0.0, min(t_lo, wilson_lo)), 100 * min(1.0, max(t_hi, wilson_hi))
        method = "t (seeds + images)"
    return Summary(
        mean=float(accuracies.mean()),
        std=std,
        n_seeds=n_seeds,
        n_images=n_images,
        lo=lo,
        hi=hi,
        per_seed=tuple(float(a) for a in accuracies),
        confidence=confidence,
        method=method,
        df=df,
    )


def paired_difference(a_per_seed, b_per_seed, confidence: float = 0.95) -> Comparison:
    """A - B in accuracy points, paired over the same seeds and images, with its t-interval and verdict.

    Seed i of A is paired with seed i of B, and image j with image j: both lists must hold the same number of seeds
    over the same test images in the same order.
    """
    _check_confidence(confidence)
    a = as_seeds(a_per_seed, "A")
    b = as_seeds(b_per_seed, "B")
    if a.shape[0] != b.shape[0]:
        raise StatsError(
            f"paired comparison: A has {a.shape[0]} seed(s) and B has {b.shape[0]}; pairing needs the same seeds"
        )
    if a.shape[1] != b.shape[1]:
        raise StatsError(
            f"paired comparison: A has {a.shape[1]} images per seed and B has {b.shape[1]}; "
            "pairing needs the same test images in the same order"
        )
    n_seeds, n_images = a.shape
    # per image and seed: +1 only A right, -1 only B right, 0 both or neither; A - B is its mean
    diff = a.astype(np.int8) - b.astype(np.int8)
    _, lo, hi, df = seeds_and_images_interval(diff.astype(np.float64), confidence)
    lo, hi = 100 * max(-1.0, lo), 100 * min(1.0, hi)
    only_a = (diff == 1).sum(axis=1)
    only_b = (diff == -1).sum(axis=1)
    per_seed = diff.mean(axis=1) * 100
    return Comparison(
        difference=float(per_seed.mean()),
        lo=lo,
        hi=hi,
        verdict=verdict_of(lo, hi),
        n_seeds=n_seeds,
        n_images=n_images,
        per_seed=tuple(float(d) for d in per_seed),
        mcnemar_p=tuple(mcnemar_exact(int(x), int(y)) for x, y in zip(only_a, only_b, strict=True)),
        confidence=confidence,
        method="paired t (seeds + images)" if n_seeds > 1 else "paired t (images)",
        df=df,
        p_value=t_p_value(diff.astype(np.float64)),
    )


def paired_mean_difference(a_per_seed, b_per_seed, confidence: float = 0.95) -> Comparison:
    """Mean(A) - mean(B) of a per-image measurement (e.g. an attention-breadth metric), paired like
    :func:`paired_difference`, with the same t-interval. ``difference``, ``lo`` and ``hi`` are in the measurement's
    own unit; ``mcnemar_p`` is empty (McNemar needs 0/1 outcomes)."""
    _check_confidence(confidence)
    a, b = (_as_float_seeds(values, name) for values, name in ((a_per_seed, "A"), (b_per_seed, "B")))
    if a.shape != b.shape:
        raise StatsError(f"paired comparison: A is {a.shape} (seeds x images) and B is {b.shape}; they must match")
    diff = a - b
    per_seed = diff.mean(axis=1)
    _, lo, hi, df = seeds_and_images_interval(diff, confidence)
    return Comparison(
        difference=float(per_seed.mean()),
        lo=lo,
        hi=hi,
        verdict=verdict_of(lo, hi),
        n_seeds=a.shape[0],
        n_images=a.shape[1],
        per_seed=tuple(float(d) for d in per_seed),
        mcnemar_p=(),
        confidence=confidence,
        method="paired t (seeds + images)" if a.shape[0] > 1 else "paired t (images)",
        df=df,
        p_value=t_p_value(diff),
    )


def _as_float_seeds(per_seed, name: str) -> np.ndarray:
    values = np.asarray(per_seed, dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.size == 0:
        raise StatsError(f"{name}: expected one array of per-image values per seed, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise StatsError(f"{name}: per-image values must be finite")
    return values


def as_seeds(per_seed, name: str = "results") -> np.ndarray:
    """``per_seed`` as a bool array of seeds x images; one clear error for anything that is not 0/1 per image."""
    if isinstance(per_seed, np.ndarray):
        if per_seed.ndim not in (1, 2):
            raise StatsError(
                f"{name}: expected one array per seed (1-D) or seeds x images (2-D), got {per_seed.ndim}-D"
            )
        rows = [per_seed] if per_seed.ndim == 1 else list(per_seed)
    elif isinstance(per_seed, Sequence) and not isinstance(per_seed, str | bytes):
        rows = list(per_seed)
        if rows and all(np.ndim(r) == 0 for r in rows):
            rows = [np.asarray(rows)]  # a flat list of 0/1 values: one seed
    else:
        raise StatsError(f"{name}: expected a 0/1 array per seed or a list of them, got {type(per_seed).__name__}")
    if not rows:
        raise StatsError(f"{name}: no seeds")
    out = []
    for i, row in enumerate(rows):
        row = np.asarray(row)
        if row.ndim != 1:
            raise StatsError(f"{name}: seed {i} must be a 1-D array over the test images, got shape {row.shape}")
        if row.size == 0:
            raise StatsError(f"{name}: seed {i} has no images")
        if row.size != np.asarray(rows[0]).size:
            raise StatsError(
                f"{name}: seed {i} has {row.size} images and seed 0 has {np.asarray(rows[0]).size}; "
                "every seed must be evaluated on the same test images"
            )
        if row.dtype != bool:
            if not (np.issubdtype(row.dtype, np.number) and np.isin(row, (0, 1)).all()):
                raise StatsError(f"{name}: seed {i} must hold only 0/1 (or True/False) per image")
            row = row.astype(bool)
        out.append(row)
    return np.stack(out)


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, float | int) and 0 < confidence < 1):
        raise StatsError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
