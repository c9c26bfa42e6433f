"""Paired comparisons of methods on shared test tasks, and the sentences chapters print about them.

The intervals are checked where the answer is known: a clear shift is found, identical methods are
not told apart, pairing removes the shared task effect that an unpaired test drowns in, seed-to-seed
spread widens the interval, and over many simulated data sets the 95% interval covers the truth
about 95% of the time.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mamlbook.reports import (
    PairedComparison,
    best_setting,
    compare_methods,
    describe,
    paired_difference,
    verdict,
)
from mamlbook.reports.paired import _resampled_differences

ROOT = Path(__file__).resolve().parents[1]


def shifted(shift: float, tasks: int = 600, seeds: int = 1, noise: float = 0.02, seed: int = 0):
    """Scores of two methods on the same tasks: b is a task effect plus noise, a is b's tasks plus `shift`."""
    g = np.random.default_rng(seed)
    task_effect = g.normal(0.6, 0.15, tasks)
    a = task_effect + shift + g.normal(0, noise, (seeds, tasks))
    b = task_effect + g.normal(0, noise, (seeds, tasks))
    return a, b


def comparison(difference: float, low: float, high: float, confidence: float = 0.95) -> PairedComparison:
    return PairedComparison(difference, low, high, confidence, 1, 1, 600, "test")


# ---- paired_difference: known answers -------------------------------------------------------------


def test_a_clear_shift_is_decided_positive_and_covered():
    a, b = shifted(0.05)
    c = paired_difference(a, b)
    assert c.decided and c.sign == 1
    assert c.low <= 0.05 <= c.high
    assert c.low < c.difference < c.high
    assert c.difference == pytest.approx(0.05, abs=0.005)
    assert (c.n_seeds_a, c.n_seeds_b, c.n_tasks, c.confidence) == (1, 1, 600, 0.95)
    reverse = paired_difference(b, a)
    assert reverse.sign == -1 and reverse.difference == pytest.approx(-c.difference)


def test_identical_methods_are_not_told_apart():
    a, _ = shifted(0.0)
    c = paired_difference(a, a)
    assert (c.difference, c.low, c.high) == (0.0, 0.0, 0.0)
    assert not c.decided and c.sign == 0
    assert verdict(c) == "no difference detected"
    assert "every paired task difference is the same" in c.method


def test_two_draws_of_the_same_method_are_not_told_apart():
    a, b = shifted(0.0, seed=3)
    c = paired_difference(a, b)
    assert c.low < 0 < c.high
    assert verdict(c) == "no difference detected"


def test_pairing_finds_a_difference_an_unpaired_test_misses():
    stats = pytest.importorskip("scipy.stats")
    # A large task effect (sd 0.15) shared by both methods, a small constant gap of 0.01.
    a, b = shifted(0.01, noise=0.005, seed=1)
    assert stats.ttest_ind(a[0], b[0]).pvalue > 0.05  # unpaired: the gap drowns in the task spread
    c = paired_difference(a, b)
    assert c.decided and c.sign == 1 and c.low <= 0.01 <= c.high
    # Breaking the pairing (b's tasks shuffled) loses the difference too: the pairing is what finds it.
    shuffled = np.random.default_rng(0).permutation(b[0])
    broken = paired_difference(a, shuffled)
    assert not broken.decided
    assert broken.high - broken.low > 10 * (c.high - c.low)


def test_seed_to_seed_spread_widens_the_hierarchical_interval():
    a, b = shifted(0.05, seeds=3, seed=2)
    # Each trained seed lands at its own level: a seed effect of sd 0.03 on top of the task scores.
    g = np.random.default_rng(7)
    a = a + g.normal(0, 0.03, (3, 1))
    b = b + g.normal(0, 0.03, (3, 1))
    hierarchical = paired_difference(a, b)
    one_seed = paired_difference(a.mean(axis=0), b.mean(axis=0))
    assert hierarchical.difference == pytest.approx(one_seed.difference)
    assert (hierarchical.n_seeds_a, hierarchical.n_seeds_b) == (3, 3)
    assert hierarchical.method.startswith("hierarchical bootstrap over seeds, then tasks")
    assert hierarchical.high - hierarchical.low > 4 * (one_seed.high - one_seed.low)


def test_without_seed_spread_the_hierarchical_interval_matches_the_one_seed_interval():
    a, b = shifted(0.05)
    # Three identical seeds of a against b's one: seed resampling changes nothing, tasks alone remain.
    hierarchical = paired_difference(np.repeat(a, 3, axis=0), b)
    one_seed = paired_difference(a, b)
    assert hierarchical.method.startswith("hierarchical")
    assert hierarchical.difference == pytest.approx(one_seed.difference)
    assert hierarchical.low == pytest.approx(one_seed.low, abs=0.001)
    assert hierarchical.high == pytest.approx(one_seed.high, abs=0.001)


def test_resampled_statistic_matches_a_direct_loop():
    g = np.random.default_rng(5)
    a, b = g.normal(size=(3, 7)), g.normal(size=(2, 7))
    seeds_a, seeds_b = g.integers(0, 3, (50, 3)), g.integers(0, 2, (50, 2))
    tasks = g.integers(0, 7, (50, 7))
    fast = _resampled_differences(a, b, seeds_a, seeds_b, tasks)
    for r in range(50):
        a_r = a[seeds_a[r]][:, tasks[r]].mean(axis=0)  # a's resampled seeds on the shared resampled tasks
        b_r = b[seeds_b[r]][:, tasks[r]].mean(axis=0)
        assert fast[r] == pytest.approx((a_r - b_r).mean(), abs=1e-12)


@pytest.mark.parametrize(("seeds", "seed_spread"), [(1, 0.0), (3, 0.01), (8, 0.01)])
def test_the_95_percent_interval_covers_the_truth_about_95_percent_of_the_time(seeds, seed_spread):
    # One seed: tasks are the only source of variation an interval can see, so none other is simulated
    # (with a seed effect, a one-seed interval covers the mean over retrainings far less often).
    # Several seeds: each seed of each method lands at its own level, which the hierarchical interval sees.
    truth, covered, runs = 0.02, 0, 100
    for k in range(runs):
        g = np.random.default_rng(1000 + k)
        task_effect = g.normal(0.6, 0.15, 100)
        a = task_effect + truth + g.normal(0, seed_spread, (seeds, 1)) + g.normal(0, 0.05, (seeds, 100))
        b = task_effect + g.normal(0, seed_spread, (seeds, 1)) + g.normal(0, 0.05, (seeds, 100))
        c = paired_difference(a, b, n_resamples=1000, seed=k)
        covered += c.low <= truth <= c.high
    assert 0.88 * runs <= covered <= runs


def test_one_seed_interval_is_scipys_bca_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    if "rng" not in inspect.signature(stats.bootstrap).parameters:
        pytest.skip("scipy.stats.bootstrap takes rng= from SciPy 1.15")
    a, b = shifted(0.03, tasks=200)
    c = paired_difference(a, b, n_resamples=2000, seed=11, confidence=0.9)
    direct = stats.bootstrap(
        (a[0] - b[0],), np.mean, n_resamples=2000, confidence_level=0.9, method="BCa", rng=np.random.default_rng(11)
    )
    assert (c.low, c.high) == pytest.approx(tuple(direct.confidence_interval), rel=1e-12)
    assert c.method == "BCa bootstrap over paired task differences (scipy.stats.bootstrap, 2,000 resamples)"


def test_a_degenerate_bca_falls_back_to_the_percentile_interval():
    pytest.importorskip("scipy.stats")
    # Two tasks and one resample: BCa's bias correction is undefined and SciPy returns NaN.
    c = paired_difference([0.0, 1.0], [0.0, 0.0], n_resamples=1)
    assert "percentile" in c.method and "BCa was degenerate" in c.method
    assert np.isfinite(c.low) and np.isfinite(c.high)


def test_without_scipy_the_one_seed_interval_is_a_numpy_percentile_bootstrap(monkeypatch):
    a, b = shifted(0.05)
    with_scipy = paired_difference(a, b)
    for name in ("scipy", "scipy.stats"):
        monkeypatch.setitem(sys.modules, name, None)  # `from scipy import stats` now raises ImportError
    without = paired_difference(a, b)
    assert without.method.endswith("(10,000 resamples; SciPy not installed)")
    assert without.difference == with_scipy.difference
    assert (without.low, without.high) == pytest.approx((with_scipy.low, with_scipy.high), abs=0.001)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    for seeds in (1, 3):
        a, b = shifted(0.01, seeds=seeds, noise=0.05)
        first = paired_difference(a, b, seed=4, n_resamples=2000)
        assert paired_difference(a, b, seed=4, n_resamples=2000) == first
        other = paired_difference(a, b, seed=5, n_resamples=2000)
        assert other.difference == first.difference and (other.low, other.high) != (first.low, first.high)


def test_ten_thousand_hierarchical_resamples_of_600_tasks_take_well_under_a_second():
    a, b = shifted(0.05, seeds=3)
    paired_difference(a, b, n_resamples=100)  # warm up
    start = time.perf_counter()
    paired_difference(a, b)
    assert time.perf_counter() - start < 1.0  # ~0.1 s on a shared 2-core CPU


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([0.5, np.nan, 0.7], [0.5, 0.6, 0.7], "a contains NaN"),
        ([0.5, 0.6, 0.7], [[0.5, 0.6, np.nan]], "b contains NaN"),
        ([0.5, np.inf], [0.5, 0.6], "a contains infinite"),
        ([0.5, 0.6, 0.7], [0.5, 0.6], "same tasks: a has 3 tasks, b has 2"),
        (np.ones((2, 3)), np.ones((2, 4)), "a has 3 tasks, b has 4"),
        ([], [], "a is empty"),
        ([0.5], np.empty((0, 1)), "b is empty"),
        (np.empty((3, 0)), np.empty((3, 0)), "a is empty"),
        (np.ones((2, 2, 2)), np.ones((2, 2)), r"a must be \[seeds, tasks\]"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_problem(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)


@pytest.mark.parametrize(("kw", "message"), [({"confidence": 1.0}, "confidence"), ({"n_resamples": 0}, "n_resamples")])
def test_bad_settings_raise_a_value_error(kw, message):
    with pytest.raises(ValueError, match=message):
        paired_difference([0.1, 0.2], [0.2, 0.1], **kw)


def test_compare_methods_against_a_reference_best_first():
    a, ref = shifted(0.05, seed=8)
    worse = ref - 0.03
    scores = {"transfer": ref[0], "MAML": a[0], "scratch": worse[0]}
    result = compare_methods(scores, "transfer", n_resamples=2000)
    assert list(result) == ["MAML", "scratch"]
    assert result["MAML"] == paired_difference(a[0], ref[0], n_resamples=2000)
    assert result["scratch"].sign == -1
    losses = compare_methods(scores, "transfer", higher_is_better=False, n_resamples=2000)
    assert list(losses) == ["scratch", "MAML"]
    with pytest.raises(ValueError, match="reference 'pretrained' is not among"):
        compare_methods(scores, "pretrained")


def test_the_reports_layer_imports_nothing_above_it():
    files = [ROOT / "mamlbook" / "reports" / "paired.py", *(ROOT / "mamlbook" / "reports" / "claims").glob("*.py")]
    assert len(files) > 2, "claims is a package of modules"
    for path in files:
        tree = ast.parse(path.read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        modules += [alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names]
        assert not [m for m in modules if any(part in m.split(".") for part in ("studies", "bench", "cli"))]


# ---- claims: the words -----------------------------------------------------------------------------


def test_verdict_for_accuracies_and_losses():
    up, down, unclear = comparison(0.03, 0.01, 0.05), comparison(-0.03, -0.05, -0.01), comparison(0.01, -0.01, 0.03)
    assert verdict(up) == "better" and verdict(down) == "worse"
    assert verdict(up, higher_is_better=False) == "worse"
    assert verdict(down, higher_is_better=False) == "better"
    assert verdict(unclear) == verdict(unclear, higher_is_better=False) == "no difference detected"
    # An interval that touches zero does not decide.
    assert verdict(comparison(0.02, 0.0, 0.04)) == "no difference detected"


def test_describe_says_better_worse_or_no_difference():
    assert (
        describe(comparison(0.031, 0.012, 0.050), name_a="MAML", name_b="transfer")
        == "MAML is better than transfer by 3.1% (95% paired interval 1.2% to 5.0%)"
    )
    assert (
        describe(comparison(-0.031, -0.050, -0.012), name_a="MAML", name_b="transfer")
        == "MAML is worse than transfer by 3.1% (95% paired interval -5.0% to -1.2%)"
    )
    assert (
        describe(comparison(0.007, -0.010, 0.024), name_a="MAML", name_b="transfer")
        == "no difference detected between MAML and transfer at this budget (95% paired interval -1.0% to 2.4%)"
    )


def test_describe_losses_a_lower_loss_is_better():
    lower = comparison(-0.052, -0.081, -0.023, confidence=0.9)
    assert (
        describe(lower, name_a="MAML", name_b="pretrained", unit="", scale=1.0, higher_is_better=False, digits=3)
        == "MAML is better than pretrained by 0.052 (90% paired interval -0.081 to -0.023)"
    )
    higher = comparison(0.052, 0.023, 0.081)
    assert describe(higher, name_a="MAML", name_b="pretrained", unit="", scale=1.0, higher_is_better=False).startswith(
        "MAML is worse than pretrained by 0.1 "
    )


def test_describe_never_prints_minus_zero():
    text = describe(comparison(0.01, -0.0004, 0.02), name_a="A", name_b="B")
    assert text.endswith("(95% paired interval 0.0% to 2.0%)")


def test_describe_of_a_real_comparison():
    a, b = shifted(0.05)
    text = describe(paired_difference(a, b), name_a="MAML", name_b="transfer")
    assert re.fullmatch(
        r"MAML is better than transfer by [45]\.\d% \(95% paired interval [45]\.\d% to [45]\.\d%\)", text
    )


def test_best_setting_in_the_interior_and_on_the_edge():
    alphas = [0.001, 0.01, 0.1, 1.0]
    assert best_setting(alphas, [0.9, 0.4, 0.6, 0.8]) == (0.01, False)
    assert best_setting(alphas, [0.9, 0.7, 0.6, 0.5]) == (1.0, True)
    assert best_setting(alphas, [0.3, 0.7, 0.6, 0.5]) == (0.001, True)
    # Accuracies: the highest is best.
    assert best_setting(alphas, [0.9, 0.4, 0.6, 0.8], lower_is_better=False) == (0.001, True)
    assert best_setting(alphas, [0.5, 0.4, 0.95, 0.8], lower_is_better=False) == (0.1, False)
    # A diverged run (NaN loss) is never best; ties go to the earlier value.
    assert best_setting(alphas, [float("nan"), 0.4, 0.4, float("nan")]) == (0.01, False)
    assert best_setting(["only"], [1.0]) == ("only", True)


def test_best_setting_rejects_bad_grids():
    with pytest.raises(ValueError, match="differ in length"):
        best_setting([1, 2], [0.1])
    with pytest.raises(ValueError, match="empty"):
        best_setting([], [])
    with pytest.raises(ValueError, match="every score is NaN"):
        best_setting([1, 2], [float("nan"), float("nan")])
