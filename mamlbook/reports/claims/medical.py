"""The medical chapter's sentences: which method to use per number of shots, gains over the floor,
28 against 64 px, convergence, and what the study has still to run.

Every comparison is paired over the cell's shared test tasks (`reports.paired.paired_difference`);
a method "leads" or "is ahead" only where the interval excludes zero, and where it holds zero the
sentence says "no difference detected" with the interval's width, so a reader sees how small a
difference the study could have missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..paired import PairedComparison, paired_difference
from .comparisons import _interval_text, _number, verdict
from .words import RESUMES, and_list, count_of, resume_command

POINTS = " points"


RESUME = resume_command("mamlbook study medical", "medical")


def as_comparison(interval: Any, confidence: float = 0.95) -> PairedComparison:
    """A stored interval (`studies.records.PairedInterval`: difference, low, high, seeds, tasks, method)
    as the `PairedComparison` the sentence rules read."""
    seeds_a, seeds_b = interval.seeds
    return PairedComparison(
        interval.difference, interval.low, interval.high, confidence, seeds_a, seeds_b, interval.tasks, interval.method
    )


def _pts(x: float) -> str:
    return _number(x, 100.0, 1)


def _width(c: PairedComparison) -> str:
    return _pts(c.high - c.low)


def _of_cells(n: int, total: int) -> str:
    """ "its one cell", "all 4 cells", "1 of 4 cells"."""
    if total == 1:
        return "its one cell"
    return f"all {total} cells" if n == total else f"{n} of {total} cells"


def _mean(scores: Sequence[Sequence[float]]) -> float:
    """Mean over seeds of each seed's mean over tasks."""
    return sum(sum(seed) / len(seed) for seed in scores) / len(scores)


@dataclass(frozen=True)
class CellLeader:
    """The method with the highest mean in one cell, and its paired comparisons with every other
    method scored there (`against[m]`: leader − m, accuracies in [0, 1])."""

    where: str
    best: str
    accuracy: float
    against: dict[str, PairedComparison]

    @property
    def ties(self) -> list[str]:
        """The methods the leader cannot be told apart from: their intervals hold zero."""
        return [m for m, c in self.against.items() if verdict(c) == "no difference detected"]

    @property
    def decided(self) -> bool:
        """Whether the leader is ahead of every other method with an interval that excludes zero."""
        return all(verdict(c) == "better" for c in self.against.values())


def cell_leader(
    where: str, scores: Mapping[str, Sequence[Sequence[float]]], seed: int = 0, n_resamples: int = 10_000
) -> CellLeader:
    """The highest mean among `scores[method]` (`[seeds][tasks]` per-task accuracies on the cell's
    shared tasks; ties go to the earlier method) and its paired differences from the others."""
    if not scores:
        raise ValueError(f"no method is scored in {where}")
    best = max(scores, key=lambda m: _mean(scores[m]))
    others = {m: s for m, s in scores.items() if m != best}
    against = {m: paired_difference(scores[best], s, seed=seed, n_resamples=n_resamples) for m, s in others.items()}
    return CellLeader(where, best, _mean(scores[best]), against)


def _shots(k: int) -> str:
    return f"With {k} labelled {'cell' if k == 1 else 'cells'} per type"


def _tie_clause(leader: CellLeader, where: bool = True) -> str:
    """ "on split 1 it is ahead of every other method", or the methods it ties with and the width."""
    on = f"on {leader.where} " if where else ""
    ties = leader.ties
    if not ties:
        return f"{on}it is ahead of every other method"
    widest = max((leader.against[m] for m in ties), key=lambda c: c.high - c.low)
    width = "interval width" if len(ties) == 1 else "widest interval"
    return f"{on}no difference is detected from {and_list(ties)} ({width} {_width(widest)}{POINTS})"


def advice(k_shot: int, leaders: Sequence[CellLeader], planned: int | None = None) -> str:
    """Which method to use with `k_shot` labelled examples per type, from the leaders of that K's cells.

    One method leading in every cell, each interval excluding zero, is named as the one to use; one
    method with the highest mean everywhere but ties somewhere is named with its ties and their width;
    different leaders are listed cell by cell. `planned`: how many methods the study compares; cells
    with fewer scored make the sentence say "among the methods scored so far".
    """
    if not leaders:
        raise ValueError(f"no {k_shot}-shot cell has any method scored")
    so_far = planned is not None and any(len(x.against) + 1 < planned for x in leaders)
    start = _shots(k_shot)
    if so_far:
        start = "Among the methods scored so far, " + start[0].lower() + start[1:]
    means = ", ".join(f"{100 * x.accuracy:.1f}% on {x.where}" for x in leaders)
    bests = list(dict.fromkeys(x.best for x in leaders))
    if len(bests) == 1:
        best = bests[0]
        if all(x.decided for x in leaders):
            return (
                f"{start}, use {best}: it has the highest mean ({means}) and every paired interval against "
                "another method excludes zero."
            )
        return (
            f"{start}, {best} has the highest mean ({means}), but the data do not single it out: "
            + "; ".join(_tie_clause(x) for x in leaders)
            + "."
        )
    parts = [f"{x.best} on {x.where} ({100 * x.accuracy:.1f}%; {_tie_clause(x, where=False)})" for x in leaders]
    return f"{start}, no one method leads everywhere: " + "; ".join(parts) + "."


def against_reference(leaders: Sequence[CellLeader], reference: str = "MAML") -> str:
    """Where `reference` stands against the leader of each cell it does not lead: "On split 2 MAML is
    3.1 points behind ProtoNets (95% paired interval 1.2 to 5.0 points)", or no difference with its
    width. Cells it leads are `advice`'s to describe; where it leads every cell the answer is ""."""
    if not leaders:
        raise ValueError("no cells")
    parts, pending = [], []
    for x in leaders:
        if x.best == reference:
            continue
        c = x.against.get(reference)
        if c is None:
            pending.append(x.where)
        elif verdict(c) == "better":
            parts.append(
                f"on {x.where} {reference} is {_pts(c.difference)}{POINTS} behind {x.best} "
                f"({_interval_text(c, POINTS, 100.0, 1)})"
            )
        else:
            parts.append(
                f"on {x.where} no difference is detected between {reference} and {x.best} "
                f"({_interval_text(c, POINTS, 100.0, 1)}, width {_width(c)}{POINTS})"
            )
    if pending:
        parts.append(f"{reference} is still to be scored on {and_list(pending)}")
    if not parts:
        return ""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _groups(effects: Mapping[str, Mapping[str, PairedComparison]]) -> tuple[list[str], dict[str, int], list[str]]:
    """Methods whose effect is above zero in every cell; methods below zero in some cells (how many);
    the rest (undecided somewhere, never below)."""
    above, below, rest = [], {}, []
    for method, cells in effects.items():
        words = [verdict(c) for c in cells.values()]
        if not words:
            continue
        if "worse" in words:
            below[method] = words.count("worse")
        elif all(w == "better" for w in words):
            above.append(method)
        else:
            rest.append(method)
    return above, below, rest


def _largest(effects: Mapping[str, Mapping[str, PairedComparison]]) -> tuple[str, str, PairedComparison]:
    return max(((m, cell, c) for m, cells in effects.items() for cell, c in cells.items()),
               key=lambda t: t[2].difference)  # fmt: skip


def floor_reading(gains: Mapping[str, Mapping[str, PairedComparison]]) -> str:
    """How the methods stand against the floor, `gains[method][cell]` being method − floor (paired):
    which clear it in every cell where they ran, which fall below it somewhere, and the largest gain."""
    if not any(gains.values()):
        raise ValueError("no gains to read")
    above, below, rest = _groups(gains)
    parts = []
    if above:
        parts.append(f"{and_list(above)} {'is' if len(above) == 1 else 'are'} above the floor in every cell scored")
    if below:
        said = [f"{m} ({_of_cells(n, len(gains[m]))})" for m, n in below.items()]
        parts.append(f"{and_list(said)} {'falls' if len(below) == 1 else 'fall'} below it")
    if rest:
        parts.append(f"{and_list(rest)} cannot be told apart from it in some cell")
    if not above:
        parts.insert(0, "no method is above the floor in every cell scored")
    method, cell, c = _largest(gains)
    text = "; ".join(parts)
    interval = _interval_text(c, POINTS, 100.0, 1)
    largest = (
        f"The largest gain is {method}'s on {cell}: {_pts(c.difference)}{POINTS} ({interval})."
        if c.difference > 0
        else "No method's mean is above the floor's in any cell."
    )
    return text[0].upper() + text[1:] + ". " + largest


def resolution_reading(changes: Mapping[str, Mapping[str, PairedComparison]], small: int, large: int) -> str:
    """What `large` px images change, `changes[method][cell]` being the method at `large` minus at
    `small` px on the same test tasks (the same images, paired)."""
    if not any(changes.values()):
        raise ValueError("no method is scored at both sizes")
    up, down, rest = _groups(changes)
    parts = []
    if up:
        parts.append(f"{large} px raises {and_list(up)} in every cell")
    if down:
        said = [f"{m} ({_of_cells(n, len(changes[m]))})" for m, n in down.items()]
        parts.append(f"it lowers {and_list(said)}")
    if rest:
        parts.append(f"for {and_list(rest)} no difference is detected in some cell")
    if not up:
        parts.insert(0, f"{large} px raises no method in every cell")
    diffs = [c.difference for cells in changes.values() for c in cells.values()]
    text = "; ".join(parts)
    return (
        text[0].upper() + text[1:] + f" (mean changes from {_pts(min(diffs))} to {_pts(max(diffs))}{POINTS}, "
        f"{large} px minus {small} px)."
    )


def resolution_status(
    changes: Mapping[str, Mapping[str, PairedComparison]],
    small: int,
    large: int,
    planned: Sequence[int],
    command: str = RESUME,
) -> str:
    """`resolution_reading` where both sizes are scored; else whether the larger size is planned and to run."""
    if large not in planned or small == large:
        return f"This run of the study covers {small} px only: it has no second size to compare."
    if not any(changes.values()):
        return f"The {large} px comparison is still to run; `{command}` continues the study: {RESUMES}."
    return resolution_reading(changes, small, large)


def convergence_reading(converged: Mapping[str, Sequence[bool]]) -> str:
    """Whether every trained model met the convergence rule (`converged[method]`, one flag per model)."""
    flags = [f for fs in converged.values() for f in fs]
    if not flags:
        raise ValueError("no trained models")
    short = {m: fs.count(False) for m, fs in converged.items() if False in fs}
    if not short:
        return f"Every trained model ({len(flags)} in all) met the convergence rule before its cap."
    said = and_list([f"{n} of {m}" for m, n in short.items()])
    if len(flags) == 1:
        return "The one trained model stopped at the cap without meeting the rule; its scores are those at the cap."
    text = count_of(sum(short.values()), len(flags))
    return (
        f"{text[0].upper() + text[1:]} trained models stopped at the cap without meeting the rule ({said}); "
        "their scores are those at the cap."
    )


# ----- what the study has still to run -----


def job_runs(
    job: Mapping[str, Any], shots: Sequence[int], splits: Sequence[int], floors: Sequence[str]
) -> list[tuple[str, int, int, int]]:
    """The (method, size, split, shots) runs one job of the medical study's plan scores.

    A pre-training job scores both K with its head (linear: Transfer and Nearest class mean; cosine:
    Baseline++); an Omniglot job both splits; a floor job both raw-pixel methods.
    """
    size, kind = job["size"], job["kind"]
    if kind in ("meta", "scratch"):
        return [(job["method"], size, job["split"], job["k_shot"])]
    if kind == "floor":
        return [(f, size, job["split"], job["k_shot"]) for f in floors]
    if kind == "omniglot":
        return [(job["method"], size, s, job["k_shot"]) for s in splits]
    if kind == "pretrain":
        methods = ("Transfer (new head)", "Nearest class mean") if job["head"] == "linear" else ("Baseline++",)
        return [(m, size, job["split"], k) for m in methods for k in shots]
    raise ValueError(f"unknown job kind {kind!r}")


def pending_sentence(
    missing: Sequence[Mapping[str, Any]],
    jobs: int,
    sizes: Sequence[int],
    scored_sizes: Iterable[int],
    shots: Sequence[int],
    splits: Sequence[int],
    floors: Sequence[str],
    command: str = RESUME,
) -> str:
    """What the study has still to run, from its `missing` jobs: a whole size still to run, or per
    method the runs (one cell, one seed) to go. `jobs`: the plan's size; `sizes` those planned."""
    if not missing:
        return f"All {jobs} jobs of the study have run."
    scored = set(scored_sizes)
    parts = []
    for size in sizes:
        if size not in scored:
            parts.append(f"the {size} px comparison is still to run")
            continue
        to_go: dict[str, int] = {}
        for job in missing:
            if job["size"] == size:
                for method, *_ in job_runs(job, shots, splits, floors):
                    to_go[method] = to_go.get(method, 0) + 1
        if to_go:
            counts = ", ".join(f"{m} {n}" for m, n in to_go.items())
            parts.append(f"at {size} px, runs (one method on one cell with one seed) still to go: {counts}")
    failed = sum("error" in job for job in missing)
    done = jobs - len(missing)
    text = f"The study is still running: {done} of {jobs} jobs have finished; " + "; ".join(parts) + "."
    if failed:
        text += f" {failed} of the jobs to go failed on their last try and will be retried."
    return text + f" `{command}` continues it: {RESUMES}."


# ----- the chapter's tables -----


def result_rows(
    table: Mapping[str, Mapping[str, Any]], methods: Sequence[str], cells: Sequence[str]
) -> list[list[str]]:
    """One row per method of the results table: per cell "accuracy (seeds)" in %, then the gain over the
    floor "+d [low, high]" in points where there is one, "floor" for the cell's floor, "pending" where
    the method is still to be scored. `table[method][cell]` as `MedicalResult.table` holds it."""
    rows = []
    for method in methods:
        row = [method]
        for cell in cells:
            c = table.get(method, {}).get(cell)
            if c is None:
                row.append("pending")
                continue
            text = f"{100 * c.accuracy:.1f} ({len(c.seeds)})"
            if c.gain is not None:
                text += f"<br>{100 * c.gain.difference:+.1f} [{100 * c.gain.low:+.1f}, {100 * c.gain.high:+.1f}]"
            row.append(text + ("<br>floor" if c.floor == method else ""))
        rows.append(row)
    return rows


def budget_rows(
    runs: Sequence[Any], methods: Sequence[str], size: int, shared: Sequence[str] = ("Nearest class mean",)
) -> tuple[list[list[str]], dict[str, list[bool]]]:
    """The budget table at `size` px: per method what it trained for (meta-iterations or epochs), the range
    it stopped at, CPU minutes per model and how many models converged, each model once (a run's `key`);
    methods without training say how many steps they take on the shots. Also the convergence flags per
    method for `convergence_reading`, leaving out `shared` methods (whose model is another method's)."""
    rows, converged = [], {}
    for method in methods:
        models = list({r.key: r for r in runs if (r.method, r.size) == (method, size)}.values())
        if not models:
            rows.append([method, "pending", "", "", ""])
            continue
        first = models[0]
        if first.iterations is None and first.epochs is None:
            steps = max(first.steps)
            rows.append([method, f"{steps} steps on the shots" if steps else "no training", "", "", ""])
            continue
        unit, attr = ("meta-iterations", "iterations") if first.iterations is not None else ("epochs", "epochs")
        spent = [getattr(r, attr) for r in models]
        flags = [bool(r.converged) for r in models]
        if method not in shared:
            converged[method] = flags
        minutes = sum(r.train_cpu_seconds for r in models) / len(models) / 60
        stopped = f"{min(spent):,}" if min(spent) == max(spent) else f"{min(spent):,} to {max(spent):,}"
        rows.append([method, unit, stopped, f"{minutes:.1f}", f"{sum(flags)} of {len(flags)}"])
    return rows, converged
