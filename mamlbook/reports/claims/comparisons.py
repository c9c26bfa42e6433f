"""Comparisons of two methods and the words for them: paired per task where the scores allow, else
over seeds, else the weakest interval the stored data supports, each naming its method.

A chapter that says "MAML is better" must say it only when the interval excludes zero, and must say
which way "better" points for a loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from ..paired import PairedComparison, paired_difference

Verdict = Literal["better", "worse", "no difference detected"]


T = TypeVar("T")


def verdict(c: PairedComparison, *, higher_is_better: bool = True) -> Verdict:
    """Whether method a is "better" or "worse" than b, claimed only when the interval excludes zero.

    Otherwise "no difference detected". For losses (`higher_is_better=False`) a negative difference
    a − b is the better one.
    """
    if not c.decided:
        return "no difference detected"
    a_is_higher = c.sign > 0
    return "better" if a_is_higher == higher_is_better else "worse"


def _number(x: float, scale: float, digits: int) -> str:
    """`x * scale` with `digits` decimals, never printed as "-0.0"."""
    value = round(x * scale, digits)
    return f"{value + 0.0:.{digits}f}"  # + 0.0 turns -0.0 into 0.0


def _confidence(confidence: float) -> str:
    """0.95 -> "95%", 0.995 -> "99.5%"."""
    return f"{confidence * 100:.10g}%"


def describe(
    c: PairedComparison,
    *,
    name_a: str,
    name_b: str,
    unit: str = "%",
    scale: float = 100.0,
    higher_is_better: bool = True,
    digits: int = 1,
) -> str:
    """One sentence on a − b that claims a direction only when its interval supports it, naming the interval.

    "MAML is better than transfer by 3.1% (95% paired interval 1.2% to 5.0%)", "... is worse than ...",
    or "no difference detected between MAML and transfer at this budget (95% paired interval -1.0% to
    2.4%)". The interval is of a − b, signed, in `unit` after multiplying by `scale` (accuracies in
    [0, 1] print as percentage points by default; for losses pass `unit=""`, `scale=1.0`).
    """
    interval = (
        f"{_confidence(c.confidence)} {_interval_name(c)} "
        f"{_number(c.low, scale, digits)}{unit} to {_number(c.high, scale, digits)}{unit}"
    )
    word = verdict(c, higher_is_better=higher_is_better)
    if word == "no difference detected":
        return f"no difference detected between {name_a} and {name_b} at this budget ({interval})"
    return f"{name_a} is {word} than {name_b} by {_number(abs(c.difference), scale, digits)}{unit} ({interval})"


def best_setting(values: Sequence[T], scores: Sequence[float], *, lower_is_better: bool = True) -> tuple[T, bool]:
    """The grid value with the best score, and whether it is the grid's first or last value.

    A best value on the edge means the optimum may lie outside the grid, which a chapter should say
    ("the best α is at the edge of the grid") instead of reporting it as the optimum. `values` is the
    grid in its order; NaN scores (diverged runs) are never best; ties go to the earlier value.
    """
    if len(values) != len(scores):
        raise ValueError(f"values and scores differ in length: {len(values)} values, {len(scores)} scores")
    if len(values) == 0:
        raise ValueError("the grid is empty")
    finite = [i for i, s in enumerate(scores) if not math.isnan(s)]
    if not finite:
        raise ValueError("every score is NaN: no setting can be called best")
    sign = 1.0 if lower_is_better else -1.0
    best = min(finite, key=lambda i: sign * scores[i])
    return values[best], best in (0, len(values) - 1)


def at_least_as_fast(ours: Sequence[float], theirs: Sequence[float]) -> bool:
    """Whether our time is at most the peer's at every measured setting (paired by position).

    A speed claim holds only where it holds everywhere it was measured: one setting slower is "not
    met", whatever the others say.
    """
    if len(ours) != len(theirs) or not ours:
        raise ValueError(f"need one time per setting on each side, got {len(ours)} and {len(theirs)}")
    return all(a <= b for a, b in zip(ours, theirs, strict=True))


def target_status(mean: float, half_width: float, target: float) -> str:
    """How an estimate with a 95% half-width stands against a target it should reach (higher is better).

    "meets" when the whole interval is at or above the target, "reaches" when only the mean is, and
    "falls short of" otherwise: a mean above the line with an interval across it is not a clear pass.
    """
    if mean - half_width >= target:
        return "meets"
    return "reaches" if mean >= target else "falls short of"


_OVER_SEEDS = "Welch's t over seeds"


_UNPAIRED = "unpaired over tasks"


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom (df >= 1), from SciPy."""
    if df < 1:
        raise ValueError(f"need at least one degree of freedom, got {df}")
    from scipy import stats  # the `compare` extra; imported here so the library loads without it

    return float(stats.t.ppf(0.975, df))


@dataclass(frozen=True)
class SeedScore:
    """One trained seed of a method: its mean score over the test tasks, that mean's 95% half-width over
    the tasks, and its per-task scores where the study kept them (None in files that predate them)."""

    mean: float
    ci95: float
    per_task: Sequence[float] | None = None


def seed_difference(a: Sequence[float], b: Sequence[float]) -> PairedComparison:
    """Mean of a's seeds minus mean of b's, with Welch's 95% t interval (independent seeds, unequal spread).

    The degrees of freedom are min(n_a, n_b) - 1, the conservative end of Welch's approximation, so
    two seeds against three use t = 12.7. Tasks play no part (`n_tasks` is 0): this is what a study
    without per-task scores supports, and it is not paired per task.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"an interval over seeds needs two seeds per method, got {len(a)} and {len(b)}")
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    var_a = sum((x - mean_a) ** 2 for x in a) / (len(a) - 1)
    var_b = sum((x - mean_b) ** 2 for x in b) / (len(b) - 1)
    half = t95(min(len(a), len(b)) - 1) * math.sqrt(var_a / len(a) + var_b / len(b))
    difference = mean_a - mean_b
    method = f"{_OVER_SEEDS} (95%, min(n_a, n_b) - 1 degrees of freedom)"
    return PairedComparison(difference, difference - half, difference + half, 0.95, len(a), len(b), 0, method)


def compare(a: Sequence[SeedScore], b: Sequence[SeedScore], *, seed: int = 0) -> PairedComparison:
    """Method a minus method b with the strongest 95% interval their stored scores support.

    Paired per task (`paired_difference`) when every seed of both has per-task scores; otherwise over
    seeds (`seed_difference`) when both have two or more; otherwise, one seed each, the two intervals
    over the tasks combined as if independent (the tasks are shared, so usually conservative). A
    method with one seed against one with several, and no per-task scores, supports no interval.
    """
    if not a or not b:
        raise ValueError("each method needs at least one seed")
    if all(s.per_task is not None for s in (*a, *b)):
        return paired_difference([list(s.per_task) for s in a], [list(s.per_task) for s in b], seed=seed)
    if len(a) >= 2 and len(b) >= 2:
        return seed_difference([s.mean for s in a], [s.mean for s in b])
    if len(a) == 1 and len(b) == 1:
        difference, half = a[0].mean - b[0].mean, math.hypot(a[0].ci95, b[0].ci95)
        method = f"{_UNPAIRED} (one seed each: the two 95% intervals over the test tasks, combined as independent)"
        return PairedComparison(difference, difference - half, difference + half, 0.95, 1, 1, 0, method)
    raise ValueError(
        f"{len(a)} seed(s) against {len(b)} without per-task scores: no interval; re-run the study to store them"
    )


def _interval_name(c: PairedComparison) -> str:
    if c.method.startswith(_ENVELOPE):
        return "envelope of the seeds' intervals"
    if c.method.startswith(_OVER_SEEDS):
        return "interval over seeds"
    if c.method.startswith(_UNPAIRED):
        return "unpaired interval over tasks"
    return "paired interval"


# `describe` names the interval of whatever `compare` chose (paired, over seeds, unpaired over tasks,
# envelope), so the chapters' comparisons and the plain paired ones share one sentence.
describe_comparison = describe


def comparison_basis(comparisons: Sequence[PairedComparison], study: str) -> str:
    """One sentence saying how a chapter's comparisons of a stored study were made, and what would pair them.

    Paired comparisons name their method; otherwise the sentence says plainly that the stored study
    predates per-task scores and that `mamlbook study STUDY` writes them.
    """
    if not comparisons:
        raise ValueError("no comparisons to describe")
    methods = list(dict.fromkeys(c.method for c in comparisons))
    if all(_interval_name(c) == "paired interval" for c in comparisons):
        return f"The comparisons of the {study} study are paired per test task ({'; '.join(methods)})."
    return (
        f"The stored {study} study predates per-task scores, so its comparisons here are not paired per "
        f"task: {'; '.join(methods)}. Re-running `mamlbook study {study}` writes the per-task scores."
    )


_ENVELOPE = "envelope of the seeds' 95% intervals over the tasks"


def envelope_difference(a: Sequence[SeedScore], b: Sequence[SeedScore]) -> PairedComparison:
    """Method a minus method b, bounded by the envelopes of their seeds' 95% intervals over the tasks.

    low = a's lowest lower bound minus b's highest upper bound, high the other way round: it excludes
    zero only when every seed of a, with its interval over the tasks, lies on one side of every seed
    of b. That is what a study without per-task scores supports for one seed against several, where
    no interval over seeds exists. It speaks of the seeds trained, not of seeds not trained, and has
    no stated coverage (`confidence` records the seeds' intervals' 95%).
    """
    if not a or not b:
        raise ValueError("each method needs at least one seed")
    difference = sum(s.mean for s in a) / len(a) - sum(s.mean for s in b) / len(b)
    low = min(s.mean - s.ci95 for s in a) - max(s.mean + s.ci95 for s in b)
    high = max(s.mean + s.ci95 for s in a) - min(s.mean - s.ci95 for s in b)
    method = f"{_ENVELOPE} (every seed of each method; not paired per task)"
    return PairedComparison(difference, low, high, 0.95, len(a), len(b), 0, method)


def compare_or_envelope(a: Sequence[SeedScore], b: Sequence[SeedScore], *, seed: int = 0) -> PairedComparison:
    """`compare`, except one seed against several without per-task scores: there `envelope_difference`."""
    per_task = all(s.per_task is not None for s in (*a, *b))
    if not per_task and a and b and min(len(a), len(b)) == 1 < max(len(a), len(b)):
        return envelope_difference(a, b)
    return compare(a, b, seed=seed)


def by_verdict(comparisons: Mapping[str, PairedComparison], *, higher_is_better: bool = True) -> dict[str, list[str]]:
    """The names of `comparisons` grouped by `verdict`, in order: "better", "worse", "no difference detected"."""
    out: dict[str, list[str]] = {"better": [], "worse": [], "no difference detected": []}
    for name, c in comparisons.items():
        out[verdict(c, higher_is_better=higher_is_better)].append(name)
    return out


def _interval_text(c: PairedComparison, unit: str, scale: float, digits: int) -> str:
    return (
        f"{_confidence(c.confidence)} {_interval_name(c)} "
        f"{_number(c.low, scale, digits)}{unit} to {_number(c.high, scale, digits)}{unit}"
    )


def lead_status(c: PairedComparison, target: float, *, higher_is_better: bool = True) -> str:
    """Whether a − b is better by at least `target` (in c's units) with an interval that excludes zero:
    "meets" or "does not meet"."""
    ahead = verdict(c, higher_is_better=higher_is_better) == "better"
    return "meets" if ahead and abs(c.difference) >= target else "does not meet"


def below_reference(c: PairedComparison, reference: str) -> str:
    """An error (lower is better) against `reference`'s, c being this − reference, paired."""
    if c.high < 0:
        return f"below {reference}'s, and the paired interval excludes zero"
    if c.difference < 0:
        return f"below {reference}'s, but the paired interval includes zero"
    if c.low > 0:
        return f"above {reference}'s, and the paired interval excludes zero"
    return f"not below {reference}'s"


def claim_status(c: PairedComparison, expected_sign: int) -> str:
    """Whether a claim "a − b has sign `expected_sign`" holds: "holds" when the interval lies on that
    side of zero, "does not hold" when it lies on the other, "is not decided" when it contains zero."""
    if expected_sign not in (-1, 1):
        raise ValueError(f"expected_sign is -1 or +1, got {expected_sign}")
    if c.sign == 0:
        return "is not decided"
    return "holds" if c.sign == expected_sign else "does not hold"
