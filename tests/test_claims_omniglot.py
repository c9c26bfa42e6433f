"""The Omniglot chapter's sentences on the omniglot-prototypes study: a direction only where the paired
interval excludes zero, and "pending", with what trains it, where a run is still to train."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from mamlbook.reports.claims.omniglot import (
    accuracy_cell,
    against_reference,
    nontransductive_note,
    pending_clause,
    runs_to_go,
    transductive_gap,
)
from mamlbook.studies import load_result
from mamlbook.studies.records import PairedInterval, PrototypesMissing, SeedMean

RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"
COMMAND = "mamlbook study omniglot-prototypes (trains only the jobs under missing)"


def interval(difference, low, high, seeds=(1, 1)):
    return PairedInterval(difference, low, high, low > 0 or high < 0, list(seeds), 600, "BCa bootstrap")


def method(t, nt, gap, seeds=(0,), against=None):
    return SimpleNamespace(
        seeds=list(seeds),
        test_steps=10,
        transductive=SeedMean(t, t - 0.01, t + 0.01, [t]),
        non_transductive=SeedMean(nt, nt - 0.01, nt + 0.01, [nt]),
        transductive_gap=gap,
        against_maml=against or {},
    )


def result(methods, missing=()):
    return SimpleNamespace(
        methods=methods,
        missing=list(missing),
        complete_with=COMMAND if missing else None,
        settings=SimpleNamespace(test_tasks=600),
    )


def test_runs_to_go_group_seeds_by_method_and_the_pending_clause_names_the_command():
    missing = [PrototypesMissing("ProtoNets", 1, "k"), PrototypesMissing("ProtoNets", 2, "k"),
               PrototypesMissing("ProtoMAML", 2, "k", error="RuntimeError: x")]  # fmt: skip
    assert runs_to_go(missing) == "ProtoNets seeds 1 and 2 and ProtoMAML seed 2"
    clause = pending_clause(missing, COMMAND)
    assert clause.startswith("ProtoNets seeds 1 and 2 and ProtoMAML seed 2 are still to train")
    assert "`mamlbook study omniglot-prototypes --reuse book/results/omniglot-prototypes.json --carry" in clause
    assert "1 failed on the last try" in clause
    assert pending_clause([], None) == ""
    assert pending_clause(missing[:1], COMMAND).startswith("ProtoNets seed 1 is still to train")


def test_the_cell_is_pending_until_a_run_has_finished():
    assert accuracy_cell(None) == "pending"
    assert accuracy_cell(method(0.891, 0.86, interval(0.031, 0.02, 0.04))) == "89.1% / 86.0% (1 seed)"
    assert accuracy_cell(method(0.9, 0.8, interval(0.1, 0.05, 0.15), seeds=(0, 1, 2))).endswith("(3 seeds)")


@pytest.mark.parametrize(
    ("gap", "words"),
    [
        (interval(0.021, 0.014, 0.028), "MAML's transductive accuracy is 2.1 points above its non-transductive one"),
        (interval(-0.021, -0.028, -0.014), "MAML's transductive accuracy is 2.1 points below its non-transductive"),
        (interval(0.004, -0.003, 0.011), "no difference is detected between MAML's transductive and non-trans"),
    ],
)
def test_the_transductive_gap_takes_a_side_only_when_its_interval_excludes_zero(gap, words):
    text = transductive_gap(gap, "MAML")
    assert text.startswith(words) and "95% paired interval" in text


def test_the_note_gives_the_number_when_present_and_says_pending_otherwise():
    present = result({"MAML": method(0.889, 0.861, interval(0.028, 0.021, 0.035))})
    note = nontransductive_note(present)
    assert "86.1% non-transductively against 88.9% transductively" in note and "2.8 points above" in note
    assert "600 test tasks after 10 steps" in note
    pending = nontransductive_note(result({}, [PrototypesMissing("MAML", 0, "k")]))
    assert "this number is pending: MAML seed 0 is still to train" in pending
    assert "not found" not in pending and "not stored" not in pending


def test_against_maml_describes_both_ways_of_scoring_and_marks_what_is_pending():
    against = {"transductive": interval(0.03, 0.01, 0.05, (3, 1)), "non_transductive": interval(0.01, -0.01, 0.03)}
    data = result(
        {"MAML": method(0.88, 0.86, interval(0.02, 0.01, 0.03)),
         "ProtoMAML": method(0.91, 0.87, interval(0.04, 0.03, 0.05), (0, 1, 2), against)},
        [PrototypesMissing("ProtoNets", 0, "k")],
    )  # fmt: skip
    text = against_reference(data)
    assert text.startswith("Transductively, ProtoMAML is better than MAML by 3.0 points")
    assert text.endswith("ProtoNets against MAML is pending: ProtoNets seed 0 is still to train "
                         "(`mamlbook study omniglot-prototypes --reuse book/results/omniglot-prototypes.json --carry "
                         "book/results/omniglot-prototypes.carry.tar.gz` continues the study: it takes the finished "
                         "jobs from the result file and resumes the unfinished ones from their carried "
                         "checkpoints).")  # fmt: skip
    assert "non-transductively, no difference detected between ProtoMAML and MAML" in text


def test_the_stored_result_reads_pending_from_its_missing_runs():
    stored = load_result(RESULTS / "omniglot-prototypes.json")
    if stored.methods:
        pytest.skip("the stored study has finished runs")
    assert "pending: MAML seed 0 is still to train" in nontransductive_note(stored)
    assert accuracy_cell(stored.methods.get("ProtoMAML")) == "pending"
    assert against_reference(stored).startswith("ProtoNets and ProtoMAML against MAML are pending: MAML seed 0")
