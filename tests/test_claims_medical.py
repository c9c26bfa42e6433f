"""The medical chapter's sentences and tables (`mamlbook.reports.claims.medical`), on data whose answer is known."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from mamlbook.config import data_root
from mamlbook.reports.claims import medical as claims
from mamlbook.reports.paired import PairedComparison

FLOORS = ("Raw pixels: nearest class mean", "Raw pixels: logistic regression")


def _c(difference: float, low: float, high: float) -> PairedComparison:
    """A paired comparison (a − b, accuracies in [0, 1]) with a given interval."""
    return PairedComparison(difference, low, high, 0.95, 3, 3, 600, "hierarchical bootstrap over seeds, then tasks")


AHEAD, BEHIND, LEVEL = _c(0.05, 0.01, 0.09), _c(-0.05, -0.09, -0.01), _c(0.01, -0.02, 0.04)


def leader(where: str, best: str, accuracy: float, **against: PairedComparison) -> claims.CellLeader:
    return claims.CellLeader(where, best, accuracy, {k.replace("_", " "): v for k, v in against.items()})


def test_a_stored_interval_reads_as_a_paired_comparison():
    stored = SimpleNamespace(difference=0.02, low=0.01, high=0.03, decided=True, seeds=[3, 1], tasks=600, method="m")
    c = claims.as_comparison(stored)
    assert (c.difference, c.low, c.high, c.n_seeds_a, c.n_seeds_b, c.n_tasks, c.method) == (
        0.02, 0.01, 0.03, 3, 1, 600, "m"
    )  # fmt: skip
    assert c.decided and c.confidence == 0.95


def test_the_cell_leader_is_the_highest_mean_and_ties_only_where_the_interval_holds_zero():
    rng = np.random.default_rng(0)
    tasks = rng.uniform(0.3, 0.9, 300)  # how hard each task is, shared by every method
    scores = {
        "low": [tasks - 0.2 + rng.normal(0, 0.01, 300) for _ in range(3)],
        "best": [tasks + rng.normal(0, 0.01, 300) for _ in range(3)],
        "twin": [tasks - 0.0005 + rng.normal(0, 0.01, 300) for _ in range(3)],
    }
    x = claims.cell_leader("split 1", scores, n_resamples=2_000)
    assert x.best == "best" and x.where == "split 1"
    assert x.accuracy == pytest.approx(float(np.mean(scores["best"])))
    assert set(x.against) == {"low", "twin"} and x.against["low"].decided
    assert x.ties == ["twin"] and not x.decided
    assert claims.cell_leader("split 1", {"best": scores["best"], "low": scores["low"]}, n_resamples=500).decided
    with pytest.raises(ValueError):
        claims.cell_leader("split 1", {})


def test_advice_names_a_method_only_where_it_leads_everywhere_with_intervals_that_exclude_zero():
    decided = [leader("split 1", "ProtoNets", 0.62, MAML=AHEAD), leader("split 2", "ProtoNets", 0.81, MAML=AHEAD)]
    assert claims.advice(5, decided) == (
        "With 5 labelled cells per type, use ProtoNets: it has the highest mean (62.0% on split 1, 81.0% on "
        "split 2) and every paired interval against another method excludes zero."
    )
    tied = [decided[0], leader("split 2", "ProtoNets", 0.81, MAML=LEVEL, Meta_SGD=_c(0.0, -0.05, 0.05))]
    assert claims.advice(1, tied) == (
        "With 1 labelled cell per type, ProtoNets has the highest mean (62.0% on split 1, 81.0% on split 2), but "
        "the data do not single it out: on split 1 it is ahead of every other method; on split 2 no difference "
        "is detected from MAML and Meta SGD (widest interval 10.0 points)."
    )
    split = [leader("split 1", "MAML", 0.6, ProtoNets=LEVEL), leader("split 2", "ProtoNets", 0.8, MAML=AHEAD)]
    assert claims.advice(1, split) == (
        "With 1 labelled cell per type, no one method leads everywhere: MAML on split 1 (60.0%; no difference is "
        "detected from ProtoNets (interval width 6.0 points)); ProtoNets on split 2 (80.0%; it is ahead of every "
        "other method)."
    )
    assert claims.advice(5, decided, planned=3).startswith("Among the methods scored so far, with 5 labelled")
    assert claims.advice(5, decided, planned=2).startswith("With 5")
    with pytest.raises(ValueError):
        claims.advice(1, [])


def test_against_reference_says_where_maml_leads_trails_ties_or_is_still_to_run():
    cells = [
        leader("split 1", "MAML", 0.6, ProtoNets=AHEAD),
        leader("split 2", "ProtoNets", 0.8, MAML=AHEAD),
        leader("split 3", "ProtoNets", 0.8, MAML=LEVEL),
        leader("split 4", "Raw pixels", 0.7),
        leader("split 5", "Raw pixels", 0.7),
    ]
    assert claims.against_reference(cells) == (
        "On split 2 MAML is 5.0 points behind ProtoNets (95% paired interval 1.0 points "
        "to 9.0 points); on split 3 no difference is detected between MAML and ProtoNets (95% paired interval "
        "-2.0 points to 4.0 points, width 6.0 points); MAML is still to be scored on split 4 and split 5."
    )
    assert claims.against_reference(cells[:1]) == "", "where MAML leads, advice has said so"
    with pytest.raises(ValueError):
        claims.against_reference([])


def test_floor_reading_groups_methods_by_their_intervals_and_names_the_largest_gain():
    gains = {
        "ProtoNets": {"split 1, 1-shot": AHEAD, "split 2, 1-shot": _c(0.12, 0.08, 0.16)},
        "MAML": {"split 1, 1-shot": BEHIND, "split 2, 1-shot": LEVEL},
        "From scratch": {"split 1, 1-shot": LEVEL},
    }
    assert claims.floor_reading(gains) == (
        "ProtoNets is above the floor in every cell scored; MAML (1 of 2 cells) falls below it; From scratch "
        "cannot be told apart from it in some cell. The largest gain is ProtoNets's on split 2, 1-shot: 12.0 "
        "points (95% paired interval 8.0 points to 16.0 points)."
    )
    below = {"MAML": {"split 1, 1-shot": BEHIND}, "Meta-SGD": {"a": BEHIND, "b": BEHIND}}
    assert claims.floor_reading(below) == (
        "No method is above the floor in every cell scored; MAML (its one cell) and Meta-SGD (all 2 cells) fall "
        "below it. No method's mean is above the floor's in any cell."
    )
    with pytest.raises(ValueError):
        claims.floor_reading({"MAML": {}})


def test_resolution_status_says_whether_the_larger_size_is_planned_run_or_compared():
    assert claims.resolution_status({}, 28, 28, [28]) == (
        "This run of the study covers 28 px only: it has no second size to compare."
    )
    assert claims.resolution_status({}, 28, 64, [28, 64]) == (
        "The 64 px comparison is still to run; `mamlbook study medical --reuse book/results/medical.json --carry "
        "book/results/medical.carry.tar.gz` continues the study: it takes the finished jobs from the result file "
        "and resumes the unfinished ones from their carried checkpoints."
    )
    changes = {"ProtoNets": {"a": AHEAD, "b": AHEAD}, "MAML": {"a": BEHIND, "b": LEVEL}, "Transfer": {"a": LEVEL}}
    text = claims.resolution_status(changes, 28, 64, [28, 64])
    assert (
        text
        == claims.resolution_reading(changes, 28, 64)
        == (
            "64 px raises ProtoNets in every cell; it lowers MAML (1 of 2 cells); for Transfer no difference is "
            "detected in some cell (mean changes from -5.0 to 5.0 points, 64 px minus 28 px)."
        )
    )
    assert claims.resolution_reading({"MAML": {"a": LEVEL}}, 28, 64).startswith("64 px raises no method in every cell")


def test_convergence_reading_counts_the_models_that_stopped_at_the_cap():
    assert claims.convergence_reading({"MAML": [True, True], "Transfer (new head)": [True]}) == (
        "Every trained model (3 in all) met the convergence rule before its cap."
    )
    assert claims.convergence_reading({"MAML": [True, False], "Meta-SGD": [False, False]}) == (
        "3 of 4 trained models stopped at the cap without meeting the rule (1 of MAML and 2 of Meta-SGD); their "
        "scores are those at the cap."
    )
    assert claims.convergence_reading({"MAML": [False, False]}).startswith("All 2 trained models stopped at the cap")
    assert claims.convergence_reading({"MAML": [False]}).startswith("The one trained model stopped")
    with pytest.raises(ValueError):
        claims.convergence_reading({})


def _jobs():
    """One job of each kind, as `mamlbook.studies.medical.Study.plan` writes them."""
    return [
        {"kind": "floor", "method": "Raw pixels", "size": 28, "split": 1, "k_shot": 1},
        {"kind": "meta", "method": "MAML", "algorithm": "maml", "size": 28, "seed": 1, "split": 2, "k_shot": 5},
        {"kind": "pretrain", "method": "Transfer", "head": "linear", "size": 28, "seed": 0, "split": 1},
        {"kind": "pretrain", "method": "Transfer", "head": "cosine", "size": 28, "seed": 0, "split": 1},
        {"kind": "scratch", "method": "From scratch", "size": 28, "seed": 2, "split": 2, "k_shot": 1},
        {"kind": "omniglot", "method": "MAML from Omniglot", "size": 28, "seed": 0, "k_shot": 5},
    ]


def test_each_job_scores_the_runs_the_study_writes_for_it():
    runs = [claims.job_runs(job, (1, 5), (1, 2), FLOORS) for job in _jobs()]
    assert runs[0] == [(FLOORS[0], 28, 1, 1), (FLOORS[1], 28, 1, 1)]
    assert runs[1] == [("MAML", 28, 2, 5)]
    assert runs[2] == [("Transfer (new head)", 28, 1, 1), ("Transfer (new head)", 28, 1, 5),
                       ("Nearest class mean", 28, 1, 1), ("Nearest class mean", 28, 1, 5)]  # fmt: skip
    assert runs[3] == [("Baseline++", 28, 1, 1), ("Baseline++", 28, 1, 5)]
    assert runs[4] == [("From scratch", 28, 2, 1)]
    assert runs[5] == [("MAML from Omniglot", 28, 1, 5), ("MAML from Omniglot", 28, 2, 5)]
    with pytest.raises(ValueError):
        claims.job_runs({"kind": "other", "size": 28}, (1, 5), (1, 2), FLOORS)


def test_pending_sentence_names_a_size_still_to_run_and_the_runs_to_go_per_method():
    args = ((28, 64), (1, 5), (1, 2), FLOORS)
    assert claims.pending_sentence([], 134, (28, 64), [28], *args[1:]) == "All 134 jobs of the study have run."
    missing = [*_jobs()[1:3], {"kind": "meta", "method": "MAML", "size": 64, "seed": 0, "split": 1, "k_shot": 1,
                                "error": "RuntimeError: boom"}]  # fmt: skip
    assert claims.pending_sentence(missing, 134, (28, 64), [28], *args[1:]) == (
        "The study is still running: 131 of 134 jobs have finished; at 28 px, runs (one method on one cell with "
        "one seed) still to go: MAML 1, Transfer (new head) 2, Nearest class mean 2; the 64 px comparison is "
        "still to run. 1 of the jobs to go failed on their last try and will be retried. `mamlbook study "
        "medical --reuse book/results/medical.json --carry book/results/medical.carry.tar.gz` continues it: it "
        "takes the finished jobs from the result file and resumes the unfinished ones from their carried "
        "checkpoints."
    )


@pytest.mark.skipif(not (data_root() / "pbc" / "SHA256SUMS").exists(), reason="PBC subset not on disk")
def test_the_full_plan_scores_every_method_on_every_cell_with_every_seed():
    from mamlbook.studies import medical

    study = medical.Study(False, None, False)
    runs = Counter(r for job in study.plan() for r in claims.job_runs(job, medical.SHOTS, medical.SPLIT_IDS, FLOORS))
    assert set(FLOORS) == set(medical.FLOORS)
    for method in medical.METHODS:
        sizes = (28,) if method == "MAML from Omniglot" else medical.SIZES
        seeds = 1 if method in FLOORS else len(medical.SEEDS)
        for size in sizes:
            for split in medical.SPLIT_IDS:
                for k in medical.SHOTS:
                    assert runs.pop((method, size, split, k)) == seeds, (method, size, split, k)
    assert not runs, f"runs of no planned method or cell: {runs}"


def test_the_tables_show_accuracy_gain_floor_and_pending_and_each_model_once():
    gain = SimpleNamespace(difference=0.021, low=0.005, high=0.0349)
    cell = SimpleNamespace(accuracy=0.6123, seeds=[0, 1, 2], gain=gain, floor=FLOORS[0])
    floor = SimpleNamespace(accuracy=0.59, seeds=[0], gain=None, floor=FLOORS[0])
    table = {"MAML": {"a": cell}, FLOORS[0]: {"a": floor, "b": floor}}
    assert claims.result_rows(table, ["MAML", FLOORS[0]], ["a", "b"]) == [
        ["MAML", "61.2 (3)<br>+2.1 [+0.5, +3.5]", "pending"],
        [FLOORS[0], "59.0 (1)<br>floor", "59.0 (1)<br>floor"],
    ]

    def run(method, key, **kw):
        fields = {"iterations": None, "epochs": None, "converged": None, "train_cpu_seconds": 0.0, "steps": [0]}
        return SimpleNamespace(method=method, key=key, size=28, **{**fields, **kw})

    runs = [
        run("MAML", "m0", iterations=800, converged=True, train_cpu_seconds=60.0),
        run("MAML", "m1", iterations=1200, converged=False, train_cpu_seconds=180.0),
        run("Transfer (new head)", "t0", epochs=20, converged=True, train_cpu_seconds=30.0),
        run("Nearest class mean", "t0", epochs=20, converged=True, train_cpu_seconds=30.0),
        run("Transfer (new head)", "t0", epochs=20, converged=True, train_cpu_seconds=30.0),  # the same model, 5-shot
        run("From scratch", "s0", steps=[0, 2, 5, 10]),
        run(FLOORS[0], "f0"),
        run("MAML", "x", iterations=5),
    ]
    runs[-1].size = 64
    rows, converged = claims.budget_rows(runs, ["MAML", "Transfer (new head)", "Nearest class mean",
                                                "From scratch", FLOORS[0], "ProtoNets"], 28)  # fmt: skip
    assert rows == [
        ["MAML", "meta-iterations", "800 to 1,200", "2.0", "1 of 2"],
        ["Transfer (new head)", "epochs", "20", "0.5", "1 of 1"],
        ["Nearest class mean", "epochs", "20", "0.5", "1 of 1"],
        ["From scratch", "10 steps on the shots", "", "", ""],
        [FLOORS[0], "no training", "", "", ""],
        ["ProtoNets", "pending", "", "", ""],
    ]
    assert converged == {"MAML": [True, False], "Transfer (new head)": [True]}
