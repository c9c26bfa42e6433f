"""When has training converged? A rule a reader can check: no gain beyond noise over the last 20%.

A fixed budget answers "how good is the method after N iterations", which is not the question a
comparison of methods asks: one method may still be climbing where another has stopped. The rule
here stops training when the validation accuracy of the last `fraction` of the evaluations is not
higher than the mean of the same number of evaluations just before them, by a one-sided one-sample
t-test of the last window's values against that mean (`scipy.stats.ttest_1samp`) at level `alpha`.

The noise is measured in the last window alone: the window before may still hold the steep early
rise, whose spread would otherwise pass for noise (a two-sample test stopped a curve still climbing
from 82% to 89% that way). Ignoring the earlier mean's own noise makes the rule cautious: on a flat
curve it says "still improving", and trains on, about twice as often as `alpha`. The evaluations are
not independent draws (they share the validation tasks and follow one trajectory), so this is a rule
of thumb for "still improving beyond the evaluations' scatter", not an exact test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RULE = "plateau-v2: last 20% of evaluations vs the mean of the 20% before, one-sided one-sample t-test, alpha 0.05"


@dataclass(frozen=True)
class Plateau:
    """The rule's verdict on a validation curve.

    `gain`: mean of the last window minus mean of the window before (None when too short);
    `p_value`: the one-sided test's p for "the last window is higher" (None when too short or constant).
    """

    converged: bool
    gain: float | None
    p_value: float | None
    window: int
    points: int


def plateau(values: Sequence[float], fraction: float = 0.2, min_points: int = 4, alpha: float = 0.05) -> Plateau:
    """Whether the last `fraction` of `values` (validation accuracies in order) gained nothing beyond noise.

    `RULE` names this rule in result files and cache keys, so results of another rule are never mixed in.

    The last window holds `max(min_points, ceil(fraction * len(values)))` values and is compared with
    as many values just before it. Too short a curve (fewer than two windows) has not converged.
    """
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    if min_points < 2:
        raise ValueError(f"min_points must be at least 2, got {min_points}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = [float(v) for v in values]
    if any(math.isnan(v) for v in values):
        raise ValueError("the validation curve holds NaN")
    window = max(min_points, math.ceil(fraction * len(values)))
    if len(values) < 2 * window:
        return Plateau(False, None, None, window, len(values))
    last, before = values[-window:], values[-2 * window : -window]
    gain = sum(last) / window - sum(before) / window
    if max(last) == min(last):  # no scatter to test against: a gain is a gain
        return Plateau(gain <= 0, gain, None, window, len(values))
    from scipy import stats  # the book's extras install SciPy; the core package does not need it

    p_value = float(stats.ttest_1samp(last, sum(before) / window, alternative="greater").pvalue)
    return Plateau(p_value >= alpha, gain, p_value, window, len(values))


def validation_curve(history: Sequence[dict[str, Any]]) -> list[float]:
    """A Trainer history's validation score after adapting, higher is better: the accuracy where the
    task has one, else minus the query loss."""
    return [row["val_accuracy_post"] if "val_accuracy_post" in row else -row["val_loss_post"] for row in history]


def fit_until_converged(trainer: Any, min_iterations: int, chunk: int) -> dict[str, Any]:
    """Train `trainer` (a `train.Trainer`) in chunks until `plateau` says its validation curve stopped
    improving, checked at multiples of `chunk` from `min_iterations` on, or its configured iterations
    are spent. A resumed run stops where an uninterrupted one would: the checks fall on the same
    iterations and the curve is the saved history. Returns the verdict at the stop."""
    if chunk < 1 or min_iterations < 0:
        raise ValueError(f"chunk must be at least 1 and min_iterations at least 0, got {chunk} and {min_iterations}")
    cap = trainer.config.iterations
    while True:
        verdict = plateau(validation_curve(trainer.history))
        checked = trainer.iteration >= min_iterations and trainer.iteration % chunk == 0
        if trainer.iteration >= cap or (checked and verdict.converged):
            return {
                "converged": verdict.converged,
                "stopped_at": trainer.iteration,
                "gain": verdict.gain,
                "p_value": verdict.p_value,
            }
        target = min(cap, max(min_iterations, (trainer.iteration // chunk + 1) * chunk))
        trainer.fit(iterations=target, progress=False, plot=False)
