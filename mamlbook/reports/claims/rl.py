"""The reinforcement-learning chapter's sentences: returns (higher is better) against the paper's."""

from __future__ import annotations

from typing import Any

from ..paired import PairedComparison
from ..published import published
from .comparisons import SeedScore, _number, describe_comparison, verdict
from .words import intervals_overlap


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
    low, high = mean - half_width, mean + half_width
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
