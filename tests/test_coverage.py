"""The intervals of aelf.workflows.evaluation.stats hold their 95% on simulated studies with a known answer, at 3 and 5
seeds with the seed-to-seed SD of the difference at 0, 1, 3 and 6 points (the range the studies show), for a true
difference of 0 and of 3 points; and the two-level bootstrap they replaced does not."""

import math

import pytest

from aelf.workflows.evaluation.coverage import (
    SETTINGS,
    Setting,
    coverage,
    t_accuracy,
    t_difference,
    two_level_bootstrap_difference,
)

REPEATS = 600
TARGET = 0.94  # what a nominal 95% interval must at least cover


def lowest_passing(repeats: int) -> float:
    """A measured coverage below this is evidence (one-sided, z = 2.33, about 1%) that the true one is below TARGET:
    the tolerance the repeat count justifies."""
    return TARGET - 2.33 * math.sqrt(TARGET * (1 - TARGET) / repeats)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s.n_seeds}seeds-sd{s.seed_sd:g}-d{s.true_difference:g}")
def test_paired_difference_holds_its_coverage(setting):
    assert coverage(t_difference, setting, REPEATS, seed=11) >= lowest_passing(REPEATS)


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.true_difference == 0], ids=lambda s: f"{s.n_seeds}-{s.seed_sd:g}"
)
def test_accuracy_interval_holds_its_coverage(setting):
    assert coverage(t_accuracy, setting, REPEATS, seed=12, truth="accuracy") >= lowest_passing(REPEATS)


def test_the_two_level_bootstrap_it_replaced_fails_the_same_check():
    """The check can fail: the old seed level puts its percentiles at about the lowest and highest of 3 seeds."""
    repeats = 200
    measured = coverage(lambda a, b: two_level_bootstrap_difference(a, b, n_boot=400), Setting(3, 6.0, 0.0), repeats)
    assert measured < lowest_passing(repeats)
