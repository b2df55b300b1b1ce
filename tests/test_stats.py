"""aelf.workflows.evaluation.stats: Wilson intervals, the t-interval over seeds and images and paired comparisons, on
cases whose answer is known (tests/test_coverage.py measures their coverage)."""

import math

import numpy as np
import pytest

from aelf.core.errors import AelfError
from aelf.workflows.evaluation import stats
from aelf.workflows.evaluation.stats import (
    BETTER,
    NOT_DISTINGUISHABLE,
    WORSE,
    Summary,
    accuracy_summary,
    mcnemar_exact,
    paired_difference,
    wilson_interval,
)

Z = {0.95: 1.959963984540054, 0.90: 1.6448536269514722, 0.99: 2.5758293035489004}  # standard normal quantiles


def first_k_correct(k: int, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[:k] = True
    return out


def random_correct(rng: np.random.Generator, accuracy: float, n: int) -> np.ndarray:
    return rng.random(n) < accuracy


# --- Wilson -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.95, 0.90, 0.99])
@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (81, 263), (500, 1000), (999, 1000), (1, 1)])
def test_wilson_matches_its_closed_form(k, n, confidence):
    z = Z[confidence]
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert hi == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert 0.0 <= lo <= p <= hi <= 1.0


@pytest.mark.parametrize(
    "k,n,published",
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score interval without continuity correction)
    [
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
    ],
)
def test_wilson_matches_published_values(k, n, published):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == published


def test_wilson_bounds_are_exact_at_the_edges():
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0


@pytest.mark.parametrize("k,n", [(0, 0), (5, 4), (-1, 4), (1.5, 4), (True, 4)])
def test_wilson_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_confidence_must_be_a_probability(confidence):
    with pytest.raises(ValueError):
        wilson_interval(3, 10, confidence)
    with pytest.raises(ValueError):
        accuracy_summary([first_k_correct(3, 10)], confidence=confidence)


# --- McNemar ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "only_a,only_b,expected",
    [
        (0, 5, 2 / 32),  # 2 * C(5,0) / 2^5
        (1, 9, 2 * (1 + 10) / 1024),  # 2 * (C(10,0) + C(10,1)) / 2^10
        (2, 5, 2 * (1 + 7 + 21) / 128),  # 2 * (C(7,0) + C(7,1) + C(7,2)) / 2^7
        (5, 2, 2 * (1 + 7 + 21) / 128),  # two-sided: symmetric
        (3, 3, 1.0),  # 2 * P(X <= 3) > 1 for X ~ Bin(6, 1/2): capped
        (0, 1, 1.0),
        (0, 0, 1.0),  # no discordant images: no evidence either way
        (0, 20, 2 / 2**20),
    ],
)
def test_mcnemar_exact_against_hand_computed_binomials(only_a, only_b, expected):
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_handles_large_counts_without_overflow():
    assert mcnemar_exact(4000, 4000) == 1.0
    assert 0.0 <= mcnemar_exact(10, 5000) < 1e-300
    # Bin(2000, 1/2) is close to normal: p for 940 vs 1060 is about 2 * Phi(-120 / sqrt(2000 / 4)) = 0.0074
    assert mcnemar_exact(940, 1060) == pytest.approx(0.0074, abs=0.0005)


def test_comparison_reports_mcnemar_per_seed():
    n = 100
    a0, b0 = first_k_correct(50, n), first_k_correct(50, n)
    a0[60:65] = True  # seed 0: 5 images only A gets right, none only B
    a1, b1 = first_k_correct(50, n), first_k_correct(50, n)
    a1[60] = True  # seed 1: 1 only A, 9 only B
    b1[70:79] = True
    result = paired_difference([a0, a1], [b0, b1])
    assert result.mcnemar_p == pytest.approx((2 / 32, 22 / 1024), rel=1e-12)
    assert result.per_seed == pytest.approx((5.0, -8.0))
    assert result.difference == pytest.approx(-1.5)


# --- accuracy summaries -------------------------------------------------------------------------------------------


def test_one_seed_is_wilson_over_images():
    correct = first_k_correct(669, 1000)
    for given in (correct, [correct], correct.astype(int), correct.tolist()):
        summary = accuracy_summary(given)
        lo, hi = wilson_interval(669, 1000)
        assert summary.method == "wilson"
        assert (summary.mean, summary.lo, summary.hi) == pytest.approx((66.9, 100 * lo, 100 * hi))
        assert summary.std is None and summary.n_seeds == 1 and summary.n_images == 1000
        assert str(summary) == f"66.9 [{100 * lo:.1f}, {100 * hi:.1f}]"


def test_several_seeds_give_mean_std_and_a_t_interval():
    seeds = [first_k_correct(k, 1000) for k in (655, 669, 683)]
    summary = accuracy_summary(seeds)
    assert summary.method == "t (seeds + images)" and summary.df == 2
    assert summary.mean == pytest.approx(66.9)
    assert summary.std == pytest.approx(np.std([65.5, 66.9, 68.3], ddof=1))
    assert summary.per_seed == pytest.approx((65.5, 66.9, 68.3))
    assert summary.lo < 65.5 and 68.3 < summary.hi  # the seed spread plus the image sampling
    assert summary.hi - summary.lo < 16  # t(2) = 4.30 times a standard error of about 1.7 points
    assert str(summary) == f"66.9 ± 1.4 (n=3) [{summary.lo:.1f}, {summary.hi:.1f}]"
    assert accuracy_summary(np.stack(seeds)) == summary  # a seeds x images array is the same input


def test_format_of_a_summary():
    summary = Summary(
        mean=66.94,
        std=1.23,
        n_seeds=3,
        n_images=4000,
        lo=64.07,
        hi=69.5,
        per_seed=(1.0, 2.0, 3.0),
        confidence=0.95,
        method="t (seeds + images)",
    )
    assert summary.format() == "66.9 ± 1.2 (n=3) [64.1, 69.5]"
    assert summary.format(digits=2) == "66.94 ± 1.23 (n=3) [64.07, 69.50]"


def test_interval_widens_when_seeds_disagree_more():
    agree = accuracy_summary([first_k_correct(700, 1000)] * 3)
    disagree = accuracy_summary([first_k_correct(k, 1000) for k in (600, 700, 800)])
    assert agree.mean == pytest.approx(disagree.mean) == pytest.approx(70.0)
    assert disagree.hi - disagree.lo > 2 * (agree.hi - agree.lo)


def test_identical_seeds_are_not_counted_as_more_images():
    """Seeds that agree image by image carry no more information than one: the interval must not shrink by sqrt(3)."""
    one = accuracy_summary(first_k_correct(700, 1000))
    three = accuracy_summary([first_k_correct(700, 1000)] * 3)
    # not narrower than one seed's; wider, as 3 seeds leave the seed level 2 degrees of freedom (t(2) = 4.30)
    assert three.hi - three.lo >= one.hi - one.lo
    assert three.hi - three.lo == pytest.approx(4.302652729911275 / 1.959963984540054 * (one.hi - one.lo), rel=0.05)


def test_several_seed_interval_is_the_t_interval_by_hand():
    """Seeds 65.5, 66.9, 68.3 on nested sets of images: the shared-image term is what the seeds share, beyond what
    differs between them; df = 2."""
    seeds = np.stack([first_k_correct(k, 1000) for k in (655, 669, 683)]).astype(float)
    n, big_n = seeds.shape
    seed_part = seeds.mean(axis=1).var(ddof=1) / n
    shared = seeds.mean(axis=0).var(ddof=1) / big_n - seeds.var(axis=0, ddof=1).mean() / (n * big_n)
    half = 4.302652729911275 * math.sqrt(seed_part + shared)  # t(2) at 97.5%
    summary = accuracy_summary(seeds)
    assert (summary.lo, summary.hi) == pytest.approx((100 * (0.669 - half), 100 * (0.669 + half)))


# --- paired comparisons -------------------------------------------------------------------------------------------


def test_identical_models_differ_by_exactly_zero():
    rng = np.random.default_rng(0)
    a = [random_correct(rng, 0.67, 1000) for _ in range(3)]
    result = paired_difference(a, [x.copy() for x in a])
    assert (result.difference, result.lo, result.hi) == (0.0, 0.0, 0.0)
    assert result.verdict == NOT_DISTINGUISHABLE
    assert result.mcnemar_p == (1.0, 1.0, 1.0)
    assert str(result) == "+0.0 [+0.0, +0.0] (n=3): not distinguishable at 95%"


def test_a_clearly_better_model_is_better_and_the_reverse_worse():
    rng = np.random.default_rng(1)
    good = [random_correct(rng, 0.9, 1000) for _ in range(3)]
    poor = [random_correct(rng, 0.6, 1000) for _ in range(3)]
    better = paired_difference(good, poor)
    assert better.verdict == BETTER and 0 < better.lo < 30 < better.hi
    assert all(p < 1e-20 for p in better.mcnemar_p)
    worse = paired_difference(poor, good)
    assert worse.verdict == WORSE and worse.lo < -30 < worse.hi < 0
    assert worse.difference == pytest.approx(-better.difference)
    assert str(worse).endswith(": worse at 95%")


def test_pairing_separates_what_two_separate_intervals_cannot():
    """B is A with 25 of its right answers turned wrong: a real 2.5-point gap that separate Wilson intervals hide."""
    rng = np.random.default_rng(2)
    a = random_correct(rng, 0.7, 1000)
    b = a.copy()
    b[np.flatnonzero(a)[:25]] = False
    lo_a, _ = wilson_interval(int(a.sum()), 1000)
    _, hi_b = wilson_interval(int(b.sum()), 1000)
    assert lo_a < hi_b  # the two intervals overlap
    result = paired_difference(a, b)
    assert result.verdict == BETTER
    assert result.difference == pytest.approx(2.5)
    assert result.method == "paired t (images)"


@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_one_seed_interval_matches_the_normal_approximation(confidence):
    """On 2,000 images with 120 only-A and 60 only-B, the mean difference is near normal: d +- z * se."""
    n, only_a, only_b = 2000, 120, 60
    a, b = first_k_correct(1000, n), first_k_correct(1000, n)
    a[1000 : 1000 + only_a] = True
    b[1500 : 1500 + only_b] = True
    d = (only_a - only_b) / n
    se = math.sqrt(((only_a + only_b) / n - d**2) / n)
    result = paired_difference(a, b, confidence=confidence)
    assert result.difference == pytest.approx(100 * d)
    assert result.lo == pytest.approx(100 * (d - Z[confidence] * se), abs=100 * 0.15 * se)
    assert result.hi == pytest.approx(100 * (d + Z[confidence] * se), abs=100 * 0.15 * se)


def test_several_seeds_widen_the_difference_when_the_gap_varies_by_seed():
    base = first_k_correct(700, 1000)
    a_steady = [base.copy() for _ in range(3)]
    a_varied = [base.copy() for _ in range(3)]
    for seed, gap in enumerate((-15, 30, 75)):  # A - B per seed: -1.5, +3.0, +7.5 points
        if gap < 0:
            a_varied[seed][700 + gap : 700] = False
        else:
            a_varied[seed][700 : 700 + gap] = True
    for a in a_steady:
        a[700:730] = True
    steady = paired_difference(a_steady, [base] * 3)
    varied = paired_difference(a_varied, [base] * 3)
    assert steady.difference == pytest.approx(varied.difference) == pytest.approx(3.0)
    assert varied.hi - varied.lo > 2 * (steady.hi - steady.lo)
    assert steady.verdict == BETTER and varied.verdict == NOT_DISTINGUISHABLE


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,b,message",
    [
        ([np.ones(10, bool)] * 3, [np.ones(10, bool)] * 2, "same seeds"),
        ([np.ones(10, bool)] * 2, [np.ones(9, bool)] * 2, "same test images"),
        ([np.ones(10, bool), np.ones(9, bool)], [np.ones(10, bool)] * 2, "same test images"),
        ([np.ones((2, 5), bool)], [np.ones(10, bool)], "1-D"),
        (np.ones((2, 2, 5), bool), np.ones((2, 2, 5), bool), "2-D"),
        ([np.array([0, 1, 2])], [np.array([0, 1, 1])], "0/1"),
        ([np.array([0.0, np.nan])], [np.array([0, 1])], "0/1"),
        ([np.array(["a", "b"])], [np.array([0, 1])], "0/1"),
        ([], [], "no seeds"),
        ([np.zeros(0, bool)], [np.zeros(0, bool)], "no images"),
        ("0101", "0101", "expected"),
    ],
)
def test_bad_shapes_and_values_are_one_clear_error(a, b, message):
    with pytest.raises(ValueError, match=message) as caught:
        paired_difference(a, b)
    assert isinstance(caught.value, AelfError)  # the CLI prints it as one line


def test_paired_mean_difference_of_continuous_values():
    rng = np.random.default_rng(0)
    base = rng.random((3, 500))
    same = stats.paired_mean_difference(base, base)
    assert same.difference == 0 and same.lo == 0 and same.hi == 0 and same.verdict == stats.NOT_DISTINGUISHABLE
    wider = stats.paired_mean_difference(base + 0.05, base)
    assert wider.difference == pytest.approx(0.05) and wider.verdict == stats.BETTER and wider.mcnemar_p == ()
    noisy = stats.paired_mean_difference(base + rng.normal(0, 0.5, base.shape), base)
    assert noisy.verdict == stats.NOT_DISTINGUISHABLE and noisy.lo < 0 < noisy.hi
    assert stats.paired_mean_difference(base - 0.05, base).verdict == stats.WORSE
    with pytest.raises(stats.StatsError, match="must match"):
        stats.paired_mean_difference(base, base[:, :10])
    with pytest.raises(stats.StatsError, match="finite"):
        stats.paired_mean_difference(np.full(4, np.nan), np.zeros(4))
