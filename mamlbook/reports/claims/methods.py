"""Methods against a reference, cell by cell (medical) and piece by piece (better, its appendix)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..paired import PairedComparison
from .comparisons import _interval_text, _number, by_verdict, describe_comparison, lead_status, verdict
from .words import and_list


def standing(
    reference: str,
    comparisons: Mapping[str, PairedComparison],
    *,
    higher_is_better: bool = True,
    diverged: Sequence[str] = (),
) -> str:
    """Where `reference` stands among methods, each comparison being method − reference.

    "no method is better than MAML; MAML is better than FOMAML and ANIL; no difference is detected
    between MAML and Meta-SGD": only intervals that exclude zero count. Methods in `diverged` (a seed
    without a finite score) have no interval and are named as such.
    """
    groups = by_verdict(comparisons, higher_is_better=higher_is_better)
    better = groups["better"]
    parts = [
        f"{and_list(better)} {'is' if len(better) == 1 else 'are'} better than {reference}"
        if better
        else f"no method is better than {reference}"
    ]
    if groups["worse"]:
        parts.append(f"{reference} is better than {and_list(groups['worse'])}")
    if groups["no difference detected"]:
        parts.append(f"no difference is detected between {reference} and {and_list(groups['no difference detected'])}")
    if diverged:
        parts.append(f"{and_list(diverged)} diverged on some seed, which leaves no interval to compare")
    return "; ".join(parts)


def top_sentence(best: str, comparisons: Mapping[str, PairedComparison], *, higher_is_better: bool = True) -> str:
    """The method with the highest mean against the others (each comparison best − other): which it
    cannot be ranked above, because no difference from them is detected."""
    ties = by_verdict(comparisons, higher_is_better=higher_is_better)["no difference detected"]
    if ties:
        return f"The highest mean, {best}'s, cannot be ranked above {and_list(ties)}: no difference is detected"
    return f"The highest mean, {best}'s, is above every other method's, each interval excluding zero"


def pieces_sentence(
    effects: Mapping[str, PairedComparison],
    whole: str,
    *,
    higher_is_better: bool = True,
    unit: str = " points",
    scale: float = 100.0,
    digits: int = 1,
    intervals: bool = True,
    diverged: Sequence[str] = (),
) -> str:
    """An ablation in words: each comparison is `whole` with piece p switched off minus `whole` itself.

    "switching LSLR off made MAML++ worse by 0.5 (95% interval over seeds 0.1 to 0.9); for MSL and CA
    no difference is detected"; a piece counts only where its interval excludes zero. Without
    `intervals`, the short form: "switching LSLR off made MAML++ worse; for MSL and CA ...". Pieces
    in `diverged` (a seed without a finite score) have no interval and are named as such.
    """
    if not effects and not diverged:
        raise ValueError("no pieces")
    groups = by_verdict(effects, higher_is_better=higher_is_better)
    parts = [
        f"switching {p} off made {whole} {verdict(c, higher_is_better=higher_is_better)}"
        + (
            f" by {_number(abs(c.difference), scale, digits)}{unit} ({_interval_text(c, unit, scale, digits)})"
            if intervals
            else ""
        )
        for p, c in effects.items()
        if p not in groups["no difference detected"]
    ]
    undecided = groups["no difference detected"]
    if undecided and parts:
        parts.append(f"for {and_list(undecided)} no difference is detected")
    elif undecided:
        parts.append(f"no difference is detected for any piece ({and_list(undecided)})")
    if diverged:
        parts.append(f"without {and_list(diverged)} {whole} diverged on some seed, which leaves no interval")
    return "; ".join(parts)


def fresh_seeds_reading(
    c: PairedComparison, deltas: Sequence[float], *, unit: str = " points", scale: float = 100.0, digits: int = 1
) -> str:
    """Whether a variant picked on some seeds keeps its lead on fresh ones (c: variant − reference, higher
    is better; `deltas` the fresh seeds' differences, seed by seed, for the sign on each)."""
    interval = _interval_text(c, unit, scale, digits)
    word = verdict(c)
    if word == "better":
        return f"a lead that holds on seeds it was not chosen on ({interval})"
    if word == "worse":
        return f"reversed on fresh seeds: the reference is ahead ({interval})"
    if deltas and all(d > 0 for d in deltas):
        return f"positive on each fresh seed, but no difference is detected over seeds ({interval})"
    return f"not positive on every fresh seed: part of the ablation's margin was the luck of its seeds ({interval})"


def ablation_reading(
    effects: Mapping[str, PairedComparison],
    deltas: Mapping[str, Sequence[float]],
    versus_reference: Mapping[str, PairedComparison],
    *,
    whole: str = "MAML++",
    reference: str = "MAML",
    target: float = 0.01,
) -> str:
    """What an accuracy ablation means, from its decided pieces only.

    `effects[p]`: `whole` with p switched off minus `whole` (accuracies in [0, 1], higher is better);
    `deltas[p]`: the same seed by seed, in points, for the sign on each seed; `versus_reference[p]`:
    `whole` without p minus `reference`. The piece whose removal helped most becomes a variant held
    against `reference` (a lead of `target` with an interval above zero meets the target), flagged
    as picked after the fact; each piece whose removal hurt "earns its place".
    """
    groups = by_verdict(effects)
    parts = []
    if groups["better"]:
        p = max(groups["better"], key=lambda q: effects[q].difference)
        v = versus_reference[p]
        signs = "on every seed" if all(d > 0 for d in deltas[p]) else "on average"
        parts.append(
            f"Switching {p} off raised {whole}'s accuracy {signs} (seed by seed "
            f"{', '.join(f'{d:+.1f}' for d in deltas[p])} points). Against {reference}, "
            f"{describe_comparison(v, name_a=f'{whole} without {p}', name_b=reference, unit=' points')}, which "
            f"{lead_status(v, target)} the one-point target. Read that with care: this row was singled out after "
            "looking at the whole ablation, so its margin is an optimistic estimate until fresh seeds confirm it."
        )
    for p in groups["worse"]:
        c = effects[p]
        parts.append(
            f"Switching {p} off cost {_number(-c.difference, 100.0, 1)} points "
            f"({_interval_text(c, ' points', 100.0, 1)}): it earns its place."
        )
    return " ".join(parts) or "At this budget no piece's effect is detected."
