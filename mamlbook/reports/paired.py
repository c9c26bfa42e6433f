"""Paired comparisons of methods scored on the same test tasks, with a confidence interval.

Every method in a chapter is scored on one fixed set of meta-test tasks, so column t of two score
arrays is the same task. Differencing per task removes the task-to-task spread (some tasks are hard
for every method), which is most of the variance; an unpaired interval would hide real differences
in it. Independently trained seeds are the outer unit: method A's seed 0 has nothing to do with
method B's seed 0, so seeds are resampled per method, never paired.

Uses NumPy only, except the one-seed interval, which SciPy's BCa bootstrap computes when SciPy is
installed (it is not a core dependency; without it that interval is a NumPy percentile bootstrap).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Resamples drawn per block in the hierarchical bootstrap: bounds memory at ~10 MB for 600 tasks
# whatever n_resamples is. Part of what a seed means: changing it changes the draws.
_BLOCK = 2048


@dataclass(frozen=True)
class PairedComparison:
    """Mean difference of method a minus method b over shared test tasks, with its confidence interval."""

    difference: float
    low: float
    high: float
    confidence: float
    n_seeds_a: int
    n_seeds_b: int
    n_tasks: int
    method: str

    @property
    def decided(self) -> bool:
        """Whether the interval excludes zero, i.e. the data tell the two methods apart."""
        return self.sign != 0

    @property
    def sign(self) -> int:
        """+1 if the whole interval is above zero, -1 if below, 0 if it contains zero."""
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0


def _as_scores(x: ArrayLike, name: str) -> np.ndarray:
    """`x` as a float64 `[seeds, tasks]` array; a 1-D input is one seed. Raises ValueError on bad input."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [seeds, tasks] or [tasks], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}): need at least one seed and one task")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN scores ({int(np.isnan(arr).sum())} of {arr.size})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains infinite scores")
    return arr


def _resampled_differences(
    a: np.ndarray, b: np.ndarray, seeds_a: np.ndarray, seeds_b: np.ndarray, tasks: np.ndarray
) -> np.ndarray:
    """The statistic on explicit resamples: `seeds_a: [m, Sa]`, `seeds_b: [m, Sb]`, `tasks: [m, T]` indices.

    Returns `[m]`: mean over the resampled tasks of (mean over a's resampled seeds minus b's). The
    statistic is linear, so it is computed from how often each index was drawn (a matrix product)
    instead of gathering `[m, S, T]` copies of the scores.
    """
    m, n_tasks = tasks.shape
    task_weights = _counts(tasks, n_tasks) / n_tasks  # [m, T]
    per_seed = task_weights @ np.concatenate([a, b]).T  # [m, Sa + Sb]: each seed's mean over the resampled tasks
    seed_weights = np.concatenate(
        [_counts(seeds_a, len(a)) / seeds_a.shape[1], -_counts(seeds_b, len(b)) / seeds_b.shape[1]], axis=1
    )
    return np.einsum("ms,ms->m", per_seed, seed_weights)


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of `0..n-1` occurs in each row of `indices: [m, k]`, as `[m, n]` floats."""
    m = indices.shape[0]
    offsets = (indices + n * np.arange(m)[:, None]).ravel()
    return np.bincount(offsets, minlength=m * n).reshape(m, n).astype(np.float64)


def _hierarchical_interval(
    a: np.ndarray, b: np.ndarray, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of the bootstrap over seeds (per method, independently), then tasks (shared)."""
    (n_a, n_tasks), n_b = a.shape, len(b)
    stats = np.empty(n_resamples)
    for start in range(0, n_resamples, _BLOCK):
        m = min(_BLOCK, n_resamples - start)
        seeds_a = rng.integers(0, n_a, size=(m, n_a))
        seeds_b = rng.integers(0, n_b, size=(m, n_b))
        # One task resample shared by a and b keeps column t of both the same task.
        tasks = rng.integers(0, n_tasks, size=(m, n_tasks))
        stats[start : start + m] = _resampled_differences(a, b, seeds_a, seeds_b, tasks)
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _scipy_interval(
    differences: np.ndarray, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[float, float, str] | None:
    """BCa interval of the mean paired difference from scipy.stats.bootstrap, percentile if BCa degenerates.

    Returns None when SciPy is not installed.
    """
    try:
        from scipy import stats
    except ImportError:
        return None
    # The generator is copied so that the BCa draw and a percentile retry both see the same resamples.
    state = rng.bit_generator.state
    for method in ("BCa", "percentile"):
        rng.bit_generator.state = state
        with warnings.catch_warnings():
            # Few distinct differences make BCa's acceleration undefined: SciPy warns and returns NaN.
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.bootstrap(
                (differences,),
                np.mean,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                **{_rng_keyword(stats.bootstrap): rng},
            )
        low, high = result.confidence_interval
        if method == "BCa" and np.isfinite(low) and np.isfinite(high):
            name = f"BCa bootstrap over paired task differences (scipy.stats.bootstrap, {n_resamples:,} resamples)"
            return float(low), float(high), name
    name = (
        f"percentile bootstrap over paired task differences (scipy.stats.bootstrap, "
        f"{n_resamples:,} resamples; BCa was degenerate)"
    )
    return float(low), float(high), name


def _rng_keyword(bootstrap: Any) -> str:
    """SciPy 1.15 renamed bootstrap's `random_state` to `rng`; pass the generator under whichever exists."""
    return "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Mean score difference a − b over the same test tasks, with a bootstrap confidence interval.

    `a: [seeds_a, tasks]` and `b: [seeds_b, tasks]` (1-D = one seed) hold per-task scores; column t of
    both is the same task. The point estimate is the mean over tasks of (a's seed mean − b's seed mean).
    With one seed each, the interval is SciPy's BCa bootstrap of the per-task differences; with more,
    a hierarchical bootstrap resamples each method's seeds independently and the tasks jointly, so
    seed-to-seed spread widens the interval as it should. The same `seed` gives the same interval.

    With one seed per method the interval is over tasks only: it is about these trained models on the
    task distribution, and cannot see how much retraining with another seed would move the difference.
    """
    a_arr, b_arr = _as_scores(a, "a"), _as_scores(b, "b")
    if a_arr.shape[1] != b_arr.shape[1]:
        raise ValueError(
            f"a and b must be scored on the same tasks: a has {a_arr.shape[1]} tasks, b has {b_arr.shape[1]}"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    (n_a, n_tasks), n_b = a_arr.shape, len(b_arr)
    per_task = a_arr.mean(axis=0) - b_arr.mean(axis=0)  # [T]
    difference = float(per_task.mean())
    rng = np.random.default_rng(seed)

    def result(low: float, high: float, method: str) -> PairedComparison:
        return PairedComparison(difference, low, high, confidence, n_a, n_b, n_tasks, method)

    if n_a == 1 and n_b == 1:
        if np.ptp(per_task) == 0.0:  # nothing to resample: every task says the same
            return result(difference, difference, "none: every paired task difference is the same")
        interval = _scipy_interval(per_task, confidence, n_resamples, rng)
        if interval is not None:
            return result(*interval)
        low, high = _hierarchical_interval(a_arr, b_arr, confidence, n_resamples, rng)
        return result(
            low,
            high,
            f"percentile bootstrap over paired task differences ({n_resamples:,} resamples; SciPy not installed)",
        )
    low, high = _hierarchical_interval(a_arr, b_arr, confidence, n_resamples, rng)
    return result(
        low, high, f"hierarchical bootstrap over seeds, then tasks ({n_resamples:,} resamples, percentile interval)"
    )


def compare_methods(
    scores: Mapping[str, ArrayLike], reference: str, *, higher_is_better: bool = True, **kw: Any
) -> dict[str, PairedComparison]:
    """Every method in `scores` against `reference` (difference = method − reference), best first.

    `higher_is_better` only orders the result (accuracies: largest difference first; losses:
    smallest first), so a chapter's table reads from the best method down. `kw` goes to
    `paired_difference`; every comparison uses the same `seed`, hence the same task resamples.
    """
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not among the methods {sorted(scores)}")
    comparisons = {
        name: paired_difference(values, scores[reference], **kw) for name, values in scores.items() if name != reference
    }
    order = sorted(comparisons, key=lambda n: comparisons[n].difference, reverse=higher_is_better)
    return {name: comparisons[name] for name in order}
