"""Small phrases chapters build sentences from: counts, lists, overlaps, crossings, trends."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .comparisons import T


def count_of(k: int, n: int) -> str:
    """How many of n settings a statement holds in: "all 4", "none of the 4" or "3 of 4"."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == n:
        return f"all {n}" if n > 1 else "the one"
    if k == 0:
        return f"none of the {n}"
    return f"{k} of {n}"


def best_cell(
    x_values: Sequence[T], y_values: Sequence[T], loss: Sequence[Sequence[float | None]]
) -> tuple[T, T, float, bool]:
    """The lowest loss of a grid (rows `y_values`, columns `x_values`; None = diverged): (x, y, loss, on_edge).

    `on_edge` is True when the best cell is in the grid's first or last row or column, where the optimum
    may lie outside the grid. Ties go to the earlier row, then the earlier column.
    """
    if len(loss) != len(y_values) or any(len(row) != len(x_values) for row in loss):
        raise ValueError(f"loss must be {len(y_values)} rows of {len(x_values)}")
    cells = [(v, i, j) for i, row in enumerate(loss) for j, v in enumerate(row) if v is not None and math.isfinite(v)]
    if not cells:
        raise ValueError("every cell diverged: no setting can be called best")
    value, i, j = min(cells)
    on_edge = i in (0, len(y_values) - 1) or j in (0, len(x_values) - 1)
    return x_values[j], y_values[i], value, on_edge


def edges_sentence(on_edge: Sequence[bool]) -> str:
    """Where two grids' best cells lie: "both lie on the edge of their grid", "one lies ...", "both are inside"."""
    if len(on_edge) != 2:
        raise ValueError(f"written for two grids, got {len(on_edge)}")
    if all(on_edge):
        return "both lie on the edge of their grid"
    return "one lies on the edge of its grid" if any(on_edge) else "both are inside their grids"


def change_over_steps(values: Sequence[float | None], digits: int = 2) -> str:
    """A loss from the fewest to the most inner steps (None = diverged), as a phrase.

    "0.90 to 0.41"; "1.49 to diverged" when the last diverged and none before it rose; "1.49 up to 3.24,
    then diverged" when the loss rose before diverging, which a bare "to diverged" would hide.
    """
    if len(values) < 2 or values[0] is None:
        raise ValueError(f"need a finite first loss and at least two, got {list(values)}")
    first, last = f"{values[0]:.{digits}f}", values[-1]
    if last is not None and math.isfinite(last):
        return f"{first} to {last:.{digits}f}"
    finite = [v for v in values if v is not None and math.isfinite(v)]
    worst = max(finite)
    if worst > values[0]:
        return f"{first} up to {worst:.{digits}f}, then diverged"
    return f"{first} to diverged"


def loss_or_diverged(value: float | None, spec: str = ".3g") -> str:
    """A stored loss formatted with `spec`, or "diverged" where the study stored None."""
    return "diverged" if value is None or not math.isfinite(value) else format(value, spec)


def intervals_overlap(intervals: Sequence[tuple[float, float]]) -> bool:
    """Whether (mean, half-width) intervals share a common point: the highest low end is at most the lowest high end."""
    if not intervals:
        raise ValueError("no intervals")
    return max(m - h for m, h in intervals) <= min(m + h for m, h in intervals)


def overlap_phrase(intervals: Sequence[tuple[float, float]]) -> str:
    """ "all three intervals overlap" (spelled up to ten, else a digit), or "the intervals do not all overlap"."""
    if not intervals_overlap(intervals):
        return "the intervals do not all overlap"
    n = len(intervals)
    if n <= 2:
        return "the two intervals overlap" if n == 2 else "the one interval overlaps itself"
    names = ("three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return f"all {names[n - 3] if n - 3 < len(names) else n} intervals overlap"


def first_crossing(values: Sequence[float], threshold: float) -> int | None:
    """The first 1-based position where `values` reach `threshold` (higher is better), or None if none does."""
    return next((i + 1 for i, v in enumerate(values) if v >= threshold), None)


def crossing_phrase(name: str, iteration: int | None, within: int) -> str:
    """A threshold crossing: "surrogate at iteration 31", or "dice not within 55 iterations" if none."""
    return f"{name} at iteration {iteration}" if iteration is not None else f"{name} not within {within} iterations"


def and_list(names: Sequence[str], empty: str = "none") -> str:
    """Names joined as "A", "A and B" or "A, B and C"; `empty` when there are none."""
    names = list(names)
    if not names:
        return empty
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 8: "eight"}






def spread_word(ratio: float, factor: float = 1.5) -> str:
    """A ratio of two spreads from a few seeds in words: only a factor of `factor` either way counts."""
    return "less than" if ratio < 1 / factor else "more than" if ratio > factor else "about as much as"


def times_less_or_more(ratio: float) -> str:
    """reference / other as "2.0 times less" (the other moved less) or "1.5 times more"."""
    return f"{ratio:.1f} times less" if ratio >= 1 else f"{1 / ratio:.1f} times more"


def position_against(low: float, high: float, value: float) -> str:
    """Where an interval [low, high] lies against a reference value: "below", "above", or, when it
    contains the value, "not distinguishable from" (a mean on one side is not enough to say a side)."""
    if low > high:
        raise ValueError(f"the interval's low end {low} is above its high end {high}")
    if high < value:
        return "below"
    if low > value:
        return "above"
    return "not distinguishable from"


# What `resume_command` does, said once for every study that stores its unfinished jobs' checkpoints.
RESUMES = (
    "it takes the finished jobs from the result file and resumes the unfinished ones from their carried checkpoints"
)


def resume_command(command: str, study: str) -> str:
    """`command` with the options that continue a stored study on any machine: the book's result file
    (`--reuse`) and the archive of its unfinished jobs (`--carry`); an empty cache alone restarts them."""
    return f"{command} --reuse book/results/{study}.json --carry book/results/{study}.carry.tar.gz"
