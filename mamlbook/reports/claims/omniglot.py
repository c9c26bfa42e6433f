"""The Omniglot chapter's sentences on `mamlbook study omniglot-prototypes`: ProtoNets and ProtoMAML
against MAML, and a task's queries scored together (transductive) or one at a time.

A direction ("above", "better") only where the 95% interval excludes zero, as everywhere in `claims`.
What is still to train is read from the result's `missing` and `complete_with`, and reads "pending".
The result is passed as it is loaded (`OmniglotPrototypesResult`): studies sit above reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .comparisons import _interval_text, _number, describe
from .medical import as_comparison
from .words import RESUMES, and_list, resume_command

STUDY = "mamlbook study omniglot-prototypes"

POINTS = " points"
PENDING = "pending"


def runs_to_go(missing: Sequence[Any]) -> str:
    """The runs of `missing` by method, in their order: "MAML seed 0", "ProtoNets seeds 1 and 2 and
    ProtoMAML seed 2"."""
    seeds: dict[str, list[int]] = {}
    for run in missing:
        seeds.setdefault(run.label, []).append(run.seed)
    return and_list(
        [f"{label} seed{'s' if len(s) > 1 else ''} {and_list([str(x) for x in s])}" for label, s in seeds.items()]
    )


def pending_clause(missing: Sequence[Any], complete_with: str | None) -> str:
    """What is still to train and the command that trains it: "MAML seed 0 is still to train (`mamlbook
    study omniglot-prototypes --reuse ... --carry ...` continues the study: ...)"; "" when nothing is missing."""
    if not missing:
        return ""
    command = resume_command((complete_with or STUDY).partition(" (")[0], "omniglot-prototypes")
    verb = "is" if len(missing) == 1 else "are"
    failed = sum(getattr(run, "error", None) is not None for run in missing)
    retried = f"; {failed} failed on the last try and will be retried" if failed else ""
    return f"{runs_to_go(missing)} {verb} still to train (`{command}` continues the study: {RESUMES}{retried})"


def accuracy_cell(method: Any | None) -> str:
    """A method's cell of the published-numbers table: transductive / non-transductive mean accuracy over
    its seeds, "89.1% / 86.0% (3 seeds)", or "pending" when no run of it has finished."""
    if method is None:
        return PENDING
    seeds = len(method.seeds)
    return (
        f"{_number(method.transductive.mean, 100.0, 1)}% / {_number(method.non_transductive.mean, 100.0, 1)}% "
        f"({seeds} seed{'s' if seeds > 1 else ''})"
    )


def transductive_gap(interval: Any, name: str) -> str:
    """The transductive minus the non-transductive accuracy of method `name` (a stored `PairedInterval`,
    paired by task): "MAML's transductive accuracy is 2.1 points above its non-transductive one (95% paired
    interval 1.4 points to 2.8 points)", "... below ...", or no difference detected, with the interval."""
    c = as_comparison(interval)
    text = _interval_text(c, POINTS, 100.0, 1)
    if c.sign == 0:
        return f"no difference is detected between {name}'s transductive and non-transductive accuracy ({text})"
    side = "above" if c.sign > 0 else "below"
    size = _number(abs(c.difference), 100.0, 1)
    return f"{name}'s transductive accuracy is {size}{POINTS} {side} its non-transductive one ({text})"


def _missing_of(result: Any, labels: Sequence[str]) -> list[Any]:
    return [run for run in result.missing if run.label in labels]


def nontransductive_note(result: Any, label: str = "MAML") -> str:
    """The sentence that gives the non-transductive accuracy of `label`'s runs, with the paired gap to the
    transductive one, or says it is pending and what trains it."""
    method = result.methods.get(label)
    if method is None:
        return (
            f"For the chapter's {label} configuration this number is {PENDING}: "
            f"{pending_clause(_missing_of(result, [label]), result.complete_with)}."
        )
    steps, tasks = method.test_steps, result.settings.test_tasks
    return (
        f"Retrained with the chapter's configuration and scored both ways on the same {tasks} test tasks after "
        f"{steps} steps, {label} reaches {_number(method.non_transductive.mean, 100.0, 1)}% non-transductively "
        f"against {_number(method.transductive.mean, 100.0, 1)}% transductively: "
        f"{transductive_gap(method.transductive_gap, label)}."
    )


def against_reference(result: Any, labels: Sequence[str] = ("ProtoNets", "ProtoMAML"), reference: str = "MAML") -> str:
    """Per method of `labels`, its accuracy minus `reference`'s, paired by task, both ways of scoring
    (`describe`: a direction only where the interval excludes zero); then one "pending" sentence for the
    methods without a comparison yet, with what is still to train."""
    sentences, pending = [], []
    for label in labels:
        method = result.methods.get(label)
        if method is None or not method.against_maml:
            pending.append(label)
            continue
        said = {
            mode: describe(
                as_comparison(method.against_maml[mode]), name_a=label, name_b=reference, unit=POINTS, digits=1
            )
            for mode in ("transductive", "non_transductive")
        }
        text = f"Transductively, {said['transductive']}; non-transductively, {said['non_transductive']}"
        to_go = _missing_of(result, [label])
        if to_go:
            text += f" (so far: {pending_clause(to_go, result.complete_with)})"
        sentences.append(text + ".")
    if pending:
        verb = "is" if len(pending) == 1 else "are"
        to_go = _missing_of(result, [*pending, reference])
        sentences.append(
            f"{and_list(pending)} against {reference} {verb} {PENDING}: {pending_clause(to_go, result.complete_with)}."
        )
    return " ".join(sentences)
