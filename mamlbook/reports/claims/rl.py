"""The reinforcement-learning chapter's sentences: returns (higher is better) against the paper's."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..paired import PairedComparison
from ..published import published
from .comparisons import SeedScore, _number, describe_comparison, verdict
from .words import and_list, intervals_overlap


def rl_one_step(result: Any) -> tuple[float, float, int, float]:
    """MAML's mean return after one policy-gradient step in a 2D navigation result, and the paper's.

    `result` is the rl study's `RLResult` (`mamlbook.studies.records`, not imported: studies sit above reports).

    (return, its 95% half-width over the test goals, number of goals, the paper's return): the
    stored result's main estimator (`MAML (surrogate)` for the book's run), read by name and step,
    and Finn et al.'s MAML return after one step from `published` (not its oracle).
    """
    evaluation = result.evaluation
    returns = evaluation.methods[f"MAML ({result.main})"]
    step = evaluation.steps.index(1)
    paper = published("finn2017.nav2d.maml.step1").value
    return returns.mean[step], returns.ci95[step], len(evaluation.goals), paper


def rl_one_step_sentence(result: Any) -> str:
    """The outlook's sentence on the 2D navigation run after one step, against the paper."""
    ours, half, goals, paper = rl_one_step(result)
    where = "inside" if abs(paper - ours) <= half else "outside"
    return (
        f"the stored run's mean return after one policy-gradient step was {ours:.1f} (95% interval over its "
        f"{goals} test goals ± {half:.1f}), against {paper:.1f} in the paper, {where} that interval"
    )


def against_published(mean: float, half_width: float, value: float, *, digits: int = 1) -> str:
    """How our mean return with its 95% half-width stands against a paper's single value (higher is better).

    "lies above the paper's value (our whole 95% interval is above it)", "is consistent with the paper's
    value (our 95% interval covers it)" or "falls short of the paper's value (our 95% interval ends 4.9
    below it)". The paper's value comes without an interval, so covering it is all "consistent" claims.
    """
    return against_published_interval(mean - half_width, mean + half_width, value, digits=digits)


def against_published_interval(low: float, high: float, value: float, *, digits: int = 1) -> str:
    """`against_published` for a 95% interval given by its ends (a bootstrap's need not be symmetric)."""
    if low > value:
        return "lies above the paper's value (our whole 95% interval is above it)"
    if high >= value:
        return "is consistent with the paper's value (our 95% interval covers it)"
    return f"falls short of the paper's value (our 95% interval ends {_number(value - high, 1.0, digits)} below it)"


def step_score(returns: Any, position: int) -> SeedScore:  # a StepReturns: studies sit above reports
    """One trained policy's meta-test returns after the inner steps at `position`, as a `SeedScore`.

    Files written since the study kept them hold per-goal returns (`per_goal`, `[steps + 1][goals]`):
    with those `compare` pairs per goal, without them it combines the two intervals over goals as
    independent.
    """
    per_goal = None if returns.per_goal is None else returns.per_goal[position]
    return SeedScore(returns.mean[position], returns.ci95[position], per_goal)


def rl_later_steps(first: PairedComparison, last: PairedComparison, last_step: int) -> str:
    """MAML minus the pretrained policy after `last_step` steps, read against the same after one step.

    Says "the order turns" only when MAML was ahead after one step and is behind after the last, each
    by an interval that excludes zero; explains a MAML that ends behind by what its training optimized.
    """
    text = describe_comparison(last, name_a="MAML", name_b="the pretrained policy", unit="", scale=1.0)
    if verdict(last) != "worse":
        return f"After {last_step} steps, {text}"
    lead = "With more steps the order turns: after" if verdict(first) == "better" else "After"
    return (
        f"{lead} {last_step} steps, {text}. MAML's initialization is trained for what one step does, and "
        "further steps of the same size add little to it; the paper, which halved the step size after the "
        "first, saw MAML keep its lead"
    )


def rl_estimators_reading(late: dict[str, tuple[float, float]], *, se_ratio: float, horizon: int) -> tuple[str, str]:
    """The rl chapter's reading of the estimators' late training returns, and its takeaway.

    `late` maps estimator -> (mean post-step training return over the last iterations, its 95%
    half-width with iterations as samples). Overlapping intervals say the three cannot be told apart;
    DiCE last is explained by its variance (`se_ratio`: its bandit standard error over the
    surrogate's; `horizon`: steps per trajectory); otherwise the order is a hint, one seed each.
    """
    if intervals_overlap(list(late.values())):
        return (
            "At this size, with one seed per estimator, the three cannot be told apart: the surrogate's bias, "
            "plain in the bandit, does not visibly slow learning here",
            "at this budget the three estimators learn about equally fast",
        )
    best = max(late, key=lambda e: late[e][0])
    worst = min(late, key=lambda e: late[e][0])
    if worst == "dice":
        rest = [e for e in late if e != "dice"]
        level = len(rest) == 2 and intervals_overlap([late[e] for e in rest])
        leader = f"{rest[0]} and {rest[1]} level" if level else f"{best} fastest"
        return (
            f"DiCE (unbiased on the bandit) learns slowest and least steadily, with {leader}: here removing the bias "
            "costs more in variance than the bias costs. The bandit showed the price already (DiCE's standard "
            f"error {se_ratio:.1f} times the surrogate's, with one action per trajectory); in navigation the "
            "score term adds up the log-probabilities of every action of a trajectory of up to "
            f"{horizon} steps and weighs them by a single return, so its variance grows with the horizon",
            f"DiCE, unbiased on the bandit, learns slowest here, with {leader}: at this sample size its variance "
            "costs more than the surrogate's bias (one seed each)",
        )
    return (
        f"Late in training {best} is ahead and {worst} behind, with intervals apart; with one seed per "
        "estimator and correlated iterations as samples, treat that as a hint, not a result",
        f"at this budget {best} ends ahead of {worst} on training returns, on one seed each",
    )


def rl_pre_reading(pre_late: dict[str, float], untrained: float) -> str:
    """The rl chapter's sentence on the training returns *before* the inner step, against the untrained policy's."""
    lowest = min(pre_late, key=lambda e: pre_late[e])
    if pre_late[lowest] < untrained:
        return (
            f"Before the step, {lowest}'s training return ({pre_late[lowest]:.1f} over the same iterations) ends "
            f"up below the untrained policy's ({untrained:.1f}). MAML's objective scores only the return after "
            "the step, so nothing in it holds the return before the step up, and an estimator that credits the "
            "pre-adaptation sampling may trade that return for trajectories the step learns more from"
        )
    averages = "; ".join(f"{e} {v:.1f}" for e, v in pre_late.items())
    return (
        f"Before the step, the training returns average {averages} (the untrained policy: {untrained:.1f}). "
        f"That {lowest}'s is the lowest is no failure by MAML's measure, which scores only the return after the step"
    )


# ----- resumable studies (rl-paper, cheetah): readings by inner step, and what is still to run -----


def _steps(n: int) -> str:
    return "before adaptation" if n == 0 else f"after {n} step{'s' * (n != 1)}"


def _after(steps: Sequence[int]) -> str:
    """ "after 1 step", "after 2 and 3 steps"."""
    return f"after {and_list([str(s) for s in steps])} step{'s' * (list(steps) != [1])}"


def _side(c: Any) -> int:
    """+1 when a's interval lies above zero, -1 below, 0 when it holds zero (`decided` is the stored flag)."""
    if not c.decided:
        return 0
    return 1 if c.low > 0 else -1


def steps_reading(
    by_step: Sequence[Any] | Mapping[int, Any], *, name_a: str, name_b: str, confidence: float = 0.95, digits: int = 1
) -> str:
    """`name_a` minus `name_b` (returns: higher is better) before adaptation and after each inner step, one
    clause per step: "ahead by", "behind by" or "no difference detected", each with its interval.

    `by_step[s]` is a stored `PairedInterval` or a `PairedComparison` (difference, low, high, decided), for
    every step from 0 (a sequence) or for the steps named (a mapping, e.g. `{1: interval}`):
    "before adaptation, MAML is behind the pretrained policy by 8.0 (95% interval -9.1 to -6.9); after 1
    step, it is ahead by 2.0 (95% interval 0.5 to 3.5); after 2 steps, no difference is detected (...)".
    """
    if not by_step:
        raise ValueError("no steps to read")
    clauses, named = [], False
    for n, c in by_step.items() if isinstance(by_step, Mapping) else enumerate(by_step):
        interval = f"{confidence * 100:.10g}% interval {_number(c.low, 1.0, digits)} to {_number(c.high, 1.0, digits)}"
        side = _side(c)
        if side == 0:
            clause = (
                "no difference is detected" if clauses else f"no difference is detected between {name_a} and {name_b}"
            )
        else:
            word = "ahead of" if side > 0 else "behind"
            clause = f"{name_a} is {word} {name_b}" if not named else f"it is {word.removesuffix(' of')}"
            clause += f" by {_number(abs(c.difference), 1.0, digits)}"
            named = True
        clauses.append(f"{_steps(n)}, {clause} ({interval})")
    return "; ".join(clauses)


def baseline_later(
    by_step: Sequence[Any] | Mapping[int, Any],
    steps: Sequence[int],
    *,
    name_a: str = "MAML",
    name_b: str = "the pretrained policy",
) -> str:
    """Whether `name_b` is ahead of `name_a` after each of `steps` inner steps (a minus b in `by_step`,
    decided below zero), as a sentence; a direction only where the interval excludes zero."""
    if not steps:
        raise ValueError("no steps to read")
    b_ahead = [s for s in steps if _side(by_step[s]) < 0]
    a_ahead = [s for s in steps if _side(by_step[s]) > 0]
    level = [s for s in steps if _side(by_step[s]) == 0]
    if len(b_ahead) == len(steps):
        text = f"{_after(steps)} {name_b} is ahead of {name_a}"
    elif not b_ahead:
        details = [f"{name_a} is ahead {_after(a_ahead)}"] if a_ahead else []
        details += [f"no difference is detected {_after(level)}"] if level else []
        text = f"{_after(steps)} {name_b} is not ahead of {name_a}: {'; '.join(details)}"
    else:
        others = [s for s in steps if s not in b_ahead]
        text = f"{name_b} is ahead of {name_a} {_after(b_ahead)}, not {_after(others)}"
    return text[0].upper() + text[1:]


def _step_size(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _rows_of(method: str, rows: Sequence[str]) -> bool:
    """Whether a job of `method` scores one of the table `rows`: its own, or its row at a step size
    ("pretrained" scores "pretrained (0.1)" and "pretrained (0.5)")."""
    return any(
        row == method or (row.startswith(f"{method} (") and row.endswith(")") and _step_size(row[len(method) + 2 : -1]))
        for row in rows
    )


def study_progress(missing: Sequence[Any], jobs: int, complete_with: str | None) -> str:
    """What a resumable study (rl-paper, cheetah) has still to run, from its `missing` jobs (method, seed,
    the iteration its checkpoint reached, error) and `complete_with`, the command that continues it."""
    if not missing:
        return f"All {jobs} training jobs of the study have finished."
    by_method: dict[str, int] = {}
    for job in missing:
        by_method[job.method] = by_method.get(job.method, 0) + 1
    by_count: dict[int, list[str]] = {}
    for method, count in by_method.items():
        by_count.setdefault(count, []).append(method)
    parts = [
        f"{count} seed{'s' * (count > 1)}{' each' * (len(methods) > 1)} of {and_list(methods)}"
        for count, methods in by_count.items()
    ]
    started = [job for job in missing if job.iteration]
    if started:
        furthest = max(started, key=lambda job: job.iteration)
        parts.append(
            f"{len(started)} of these under way, the furthest ({furthest.method}, seed {furthest.seed}) at "
            f"iteration {furthest.iteration}"
        )
    done = jobs - len(missing)
    text = f"{done} of {jobs} training jobs have finished; pending: {'; '.join(parts)}."
    failed = sum(job.error is not None for job in missing)
    if failed:
        text += f" {failed} of the pending jobs failed on their last try and will be retried."
    if complete_with:
        text += f" Running {complete_with.partition(' (')[0]} trains them, resuming each from its checkpoint."
    return text


def pending_for(rows: Sequence[str], missing: Sequence[Any]) -> str:
    """What stands in a sentence about table `rows` while one of them has no finished run: "pending (the
    runs of MAML (surrogate, 0.1) and pretrained are still to finish)"."""
    methods = list(dict.fromkeys(job.method for job in missing if _rows_of(job.method, rows)))
    if not methods:
        return "pending"
    return f"pending (the runs of {and_list(methods)} are still to finish)"


def if_finished(
    rows: Sequence[str], table: Mapping[str, Any], missing: Sequence[Any], sentence: Callable[[], str]
) -> str:
    """`sentence()` once every one of `rows` has a finished run in `table`, else `pending_for(rows, missing)`."""
    if all(row in table for row in rows):
        return sentence()
    return pending_for(rows, missing)


def table_text(
    table: Mapping[str, Any],
    rows: Sequence[str],
    steps: Sequence[int],
    seeds: int,
    paper: Mapping[str, Sequence[float]] | None = None,
    width: int = 26,
) -> str:
    """A study's table as text: per row its finished seeds of `seeds` and, after each of `steps` inner steps,
    "mean [low, high]" (`table[row]`: an `RLPaperCell`), "pending" for a row without a finished run; then a
    paper's values, one row per name of `paper`. `width`: the first column's."""
    cells = {
        row: [f"{c.mean[s]:.1f} [{c.low[s]:.1f}, {c.high[s]:.1f}]" if c else "pending" for s in steps]
        for row, c in ((row, table.get(row)) for row in rows)
    }
    column = 2 + max([20, *(len(v) for values in cells.values() for v in values)])
    heads = [f"{s} step" + ("" if s == 1 else "s") for s in steps]
    lines = [f"{'method':<{width}}{'seeds':>6}" + "".join(f"{h:>{column}}" for h in heads)]
    for row, values in cells.items():
        done = f"{len(table[row].seeds)}/{seeds}" if row in table else ""
        lines.append(f"{row:<{width}}{done:>6}" + "".join(f"{v:>{column}}" for v in values))
    for name, values in (paper or {}).items():
        lines.append(f"{name + ', paper':<{width}}{'':>6}" + "".join(f"{values[s]:>{column}.1f}" for s in steps))
    return "\n".join(lines)
