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

**Several seeds: a two-level bootstrap.** Training noise (seed, and even the CPU's rounding) can move accuracies by
more than the test-set sampling, so an interval over images alone is too narrow for a claim about a *method*. Each
bootstrap resample draws the seeds with replacement, then the test images with replacement, and takes the mean
accuracy; the interval is the percentile interval of those means. The image indices of one resample are the same
for every seed: the seeds were evaluated on the same images, so an image that is hard for one seed tends to be hard
for all. Drawing images independently per seed would treat n seeds x N images as n*N independent images and make
the interval up to sqrt(n) too narrow when the seeds agree image by image (resampling both levels this way, if
anything, errs wide). With few seeds the seed level rests on few values, and the bootstrap understates their
spread (its standard deviation by a factor sqrt((n-1)/n), 0.82 for 3 seeds): read such intervals as approximate.

**Comparisons are paired.** A - B is computed with the same resampled seeds and the same resampled image indices
for A and B, because both models saw the same images under the same seeds: the difference only carries what varies
between them, so a real difference of a point or two can be told from noise where two separate intervals overlap.
Per seed an exact McNemar test (a two-sided binomial test on the images where exactly one model is right) is also
given, the classic test for two classifiers on one test set.

**Verdicts.** "better" when the whole interval for A - B lies above 0, "worse" when it lies below 0, and
"not distinguishable" when it contains 0: at the stated confidence, the data cannot tell the sign of the
difference. It does not mean the models are equal; a larger test set or more seeds may separate them.

Everything is deterministic for a given ``seed`` of the bootstrap. The resampling is vectorised: images with the
same pattern of correctness across seeds are interchangeable, so each resample only needs how many of each pattern
it drew: those counts are multinomial, and are drawn as such when there are few patterns (the usual case: at most
2**n for n seeds, 3**n for a comparison), else by drawing the image indices and counting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from aelf.core.errors import AelfError

BETTER = "better"
WORSE = "worse"
NOT_DISTINGUISHABLE = "not distinguishable"

DEFAULT_N_BOOT = 2000
_CHUNK_DRAWS = 1_000_000  # image indices drawn at a time: bounds the memory (8 bytes each) for large test sets
# numpy draws a multinomial count in about 7 times the time of one image index: with fewer than 1/8 as many distinct
# patterns as images, drawing each pattern's count is the faster of two ways to draw the same thing
_MULTINOMIAL_RATIO = 8


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
    method: str  # "wilson" (one seed) or "bootstrap" (seeds, then images)

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
    method: str  # "paired bootstrap (images)" or "paired bootstrap (seeds, images)"

    def format(self, digits: int = 1) -> str:
        """``+2.1 [-0.4, +4.6] (n=3): not distinguishable at 95%``."""
        seeds = f" (n={self.n_seeds})" if self.n_seeds > 1 else ""
        return (
            f"{self.difference:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]{seeds}: "
            f"{self.verdict} at {100 * self.confidence:g}%"
        )

    def __str__(self) -> str:
        return self.format()


def accuracy_summary(
    per_seed, confidence: float = 0.95, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, *, name: str = "results"
) -> Summary:
    """Mean accuracy over seeds with a ``confidence`` interval: Wilson for one seed, else the two-level bootstrap.

    ``per_seed`` is one 0/1 array over the test images, a list of them (one per seed), or a seeds x images array.
    """
    _check_confidence(confidence)
    _check_n_boot(n_boot)
    correct = as_seeds(per_seed, name)
    n_seeds, n_images = correct.shape
    accuracies = correct.mean(axis=1) * 100
    std = float(accuracies.std(ddof=1)) if n_seeds > 1 else None
    if n_seeds == 1:
        lo, hi = wilson_interval(int(correct.sum()), n_images, confidence)
        lo, hi, method = 100 * lo, 100 * hi, "wilson"
    else:
        means = _bootstrap_means(correct.astype(np.int8), n_boot, seed)
        lo, hi = _percentile_interval(means * 100, confidence)
        method = "bootstrap"
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
    )


def paired_difference(
    a_per_seed, b_per_seed, confidence: float = 0.95, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> Comparison:
    """A - B in accuracy points, paired: the same resampled seeds and image indices for both, and its verdict.

    Seed i of A is paired with seed i of B, and image j with image j: both lists must hold the same number of seeds
    over the same test images in the same order.
    """
    _check_confidence(confidence)
    _check_n_boot(n_boot)
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
    per_seed = diff.mean(axis=1) * 100
    means = _bootstrap_means(diff, n_boot, seed)
    lo, hi = _percentile_interval(means * 100, confidence)
    if lo > 0:
        verdict = BETTER
    elif hi < 0:
        verdict = WORSE
    else:
        verdict = NOT_DISTINGUISHABLE
    only_a = (diff == 1).sum(axis=1)
    only_b = (diff == -1).sum(axis=1)
    return Comparison(
        difference=float(per_seed.mean()),
        lo=lo,
        hi=hi,
        verdict=verdict,
        n_seeds=n_seeds,
        n_images=n_images,
        per_seed=tuple(float(d) for d in per_seed),
        mcnemar_p=tuple(mcnemar_exact(int(x), int(y)) for x, y in zip(only_a, only_b, strict=True)),
        confidence=confidence,
        method="paired bootstrap (seeds, images)" if n_seeds > 1 else "paired bootstrap (images)",
    )


def paired_mean_difference(
    a_per_seed, b_per_seed, confidence: float = 0.95, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> Comparison:
    """Mean(A) - mean(B) of a per-image measurement (e.g. an attention-breadth metric), paired like
    :func:`paired_difference`: the same resampled seeds and images for both. ``difference``, ``lo`` and ``hi`` are in
    the measurement's own unit; ``mcnemar_p`` is empty (McNemar needs 0/1 outcomes)."""
    _check_confidence(confidence)
    _check_n_boot(n_boot)
    a, b = (_as_float_seeds(values, name) for values, name in ((a_per_seed, "A"), (b_per_seed, "B")))
    if a.shape != b.shape:
        raise StatsError(f"paired comparison: A is {a.shape} (seeds x images) and B is {b.shape}; they must match")
    diff = a - b
    per_seed = diff.mean(axis=1)
    lo, hi = _percentile_interval(_bootstrap_means(diff, n_boot, seed), confidence)
    verdict = BETTER if lo > 0 else WORSE if hi < 0 else NOT_DISTINGUISHABLE
    return Comparison(
        difference=float(per_seed.mean()),
        lo=lo,
        hi=hi,
        verdict=verdict,
        n_seeds=a.shape[0],
        n_images=a.shape[1],
        per_seed=tuple(float(d) for d in per_seed),
        mcnemar_p=(),
        confidence=confidence,
        method="paired bootstrap (seeds, images)" if a.shape[0] > 1 else "paired bootstrap (images)",
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


def _check_n_boot(n_boot: int) -> None:
    if not _is_int(n_boot) or n_boot < 1:
        raise StatsError(f"n_boot must be a positive integer, got {n_boot!r}")


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Two-level bootstrap of the mean of a seeds x images array: ``n_boot`` resample means.

    Each resample draws seeds with replacement, and image indices with replacement that are the same for every seed
    (see the module's text); its value is the mean over the drawn seeds of each seed's mean over the drawn images.
    """
    n_seeds, n_images = values.shape
    rng = np.random.default_rng(seed)
    # how often each seed is drawn in each resample
    seed_draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    seed_counts = _row_counts(seed_draws, n_seeds)
    # images with the same column (the same outcome under every seed) are interchangeable: count patterns, not images
    patterns, pattern_of = np.unique(values.T, axis=0, return_inverse=True)
    pattern_of = pattern_of.reshape(-1)
    n_patterns = len(patterns)
    if n_patterns * _MULTINOMIAL_RATIO <= n_images:
        # n_images draws with replacement hit each pattern a multinomial number of times: draw those counts directly
        frequencies = np.bincount(pattern_of, minlength=n_patterns) / n_images
        pattern_counts = rng.multinomial(n_images, frequencies, size=n_boot)
    else:
        pattern_counts = np.empty((n_boot, n_patterns), dtype=np.int64)
        rows_per_chunk = max(1, _CHUNK_DRAWS // n_images)
        for start in range(0, n_boot, rows_per_chunk):
            stop = min(n_boot, start + rows_per_chunk)
            image_draws = rng.integers(0, n_images, size=(stop - start, n_images))
            pattern_counts[start:stop] = _row_counts(pattern_of[image_draws], n_patterns)
    # each seed's sum over the drawn images, per resample; then weight each seed by how often it was drawn
    exact = np.issubdtype(patterns.dtype, np.integer) or patterns.dtype == bool
    sums = pattern_counts @ patterns.astype(np.int64 if exact else np.float64)
    return (seed_counts * sums).sum(axis=1) / (n_seeds * n_images)


def _row_counts(draws: np.ndarray, n_values: int) -> np.ndarray:
    """For a rows x draws array of values in [0, n_values): how often each value occurs in each row."""
    n_rows = draws.shape[0]
    offsets = (np.arange(n_rows, dtype=np.int64) * n_values)[:, None]
    flat = (draws + offsets).reshape(-1)
    return np.bincount(flat, minlength=n_rows * n_values).reshape(n_rows, n_values)
