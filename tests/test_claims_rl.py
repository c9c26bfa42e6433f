"""The reinforcement-learning chapter's sentences on the resumable studies (rl-paper, cheetah), on
constructed data: readings by inner step, the paper's values against an interval, and what the
chapter says while runs are pending."""

from types import SimpleNamespace

from mamlbook.reports import PairedComparison
from mamlbook.reports.claims.rl import (
    against_published,
    against_published_interval,
    baseline_later,
    if_finished,
    pending_for,
    steps_reading,
    study_progress,
    table_text,
)
from mamlbook.studies.records import PairedInterval, RLPaperMissing


def _stored(difference: float, low: float, high: float) -> PairedInterval:
    return PairedInterval(difference, low, high, low > 0 or high < 0, [3, 3], 40, "hierarchical bootstrap")


def test_steps_reading_claims_a_side_only_where_the_interval_excludes_zero():
    by_step = [_stored(-8.0, -9.1, -6.9), _stored(2.0, 0.5, 3.5), _stored(0.1, -1.0, 1.2)]
    assert steps_reading(by_step, name_a="MAML", name_b="the pretrained policy") == (
        "before adaptation, MAML is behind the pretrained policy by 8.0 (95% interval -9.1 to -6.9); "
        "after 1 step, it is ahead by 2.0 (95% interval 0.5 to 3.5); "
        "after 2 steps, no difference is detected (95% interval -1.0 to 1.2)"
    )
    undecided_first = steps_reading([_stored(0.5, -1.0, 2.0), _stored(3.0, 1.0, 5.0)], name_a="A", name_b="B")
    assert undecided_first.startswith("before adaptation, no difference is detected between A and B")
    assert "after 1 step, A is ahead of B by 3.0" in undecided_first
    assert steps_reading({1: by_step[1]}, name_a="MAML", name_b="the pretrained policy") == (
        "after 1 step, MAML is ahead of the pretrained policy by 2.0 (95% interval 0.5 to 3.5)"
    )
    # A computed PairedComparison reads the same as a stored interval.
    computed = PairedComparison(-2.0, -3.0, -1.0, 0.9, 3, 3, 40, "hierarchical bootstrap")
    assert steps_reading([computed], name_a="A", name_b="B", confidence=0.9) == (
        "before adaptation, A is behind B by 2.0 (90% interval -3.0 to -1.0)"
    )


def test_baseline_later_says_whether_the_baseline_is_still_ahead():
    by_step = [_stored(-8.0, -9.0, -7.0), _stored(2.0, 0.5, 3.5), _stored(-3.0, -4.0, -2.0), _stored(-1.0, -2.0, -0.5)]
    assert baseline_later(by_step, [2, 3]) == "After 2 and 3 steps the pretrained policy is ahead of MAML"
    mixed = by_step[:2] + [_stored(0.2, -1.0, 1.4), _stored(-1.0, -2.0, -0.5)]
    assert baseline_later(mixed, [2, 3]) == "The pretrained policy is ahead of MAML after 3 steps, not after 2 steps"
    assert (
        baseline_later(by_step, [1])
        == "After 1 step the pretrained policy is not ahead of MAML: MAML is ahead after 1 step"
    )
    behind = by_step[:2] + [_stored(2.0, 1.0, 3.0), _stored(0.2, -1.0, 1.4)]
    assert baseline_later(behind, [2, 3]) == (
        "After 2 and 3 steps the pretrained policy is not ahead of MAML: MAML is ahead after 2 steps; "
        "no difference is detected after 3 steps"
    )


def test_against_published_interval_reads_an_asymmetric_interval():
    assert against_published_interval(-14.0, -11.0, -11.7).startswith("is consistent")
    assert against_published_interval(-16.0, -12.0, -11.7) == (
        "falls short of the paper's value (our 95% interval ends 0.3 below it)"
    )
    assert against_published_interval(-11.0, -9.0, -11.7).startswith("lies above")
    assert against_published(-13.6, 2.3, -11.7) == against_published_interval(-15.9, -11.3, -11.7)


def _missing(method: str, seed: int, iteration: int = 0, error: str | None = None) -> RLPaperMissing:
    return RLPaperMissing(method, seed, f"{method}-{seed}", iteration, error)


def test_study_progress_counts_the_pending_jobs_and_names_the_command():
    complete_with = "mamlbook study rl-paper (trains only the jobs under missing, resuming each from its checkpoint)"
    missing = [_missing("MAML (surrogate, 0.1)", 2, 250), _missing("pretrained", 1), _missing("pretrained", 2)]
    missing += [_missing("MAML (dice, 0.1)", s, error="killed" if s == 0 else None) for s in range(3)]
    assert study_progress(missing, 21, complete_with) == (
        "15 of 21 training jobs have finished; pending: 1 seed of MAML (surrogate, 0.1); 2 seeds of pretrained; "
        "3 seeds of MAML (dice, 0.1); 1 of these under way, the furthest (MAML (surrogate, 0.1), seed 2) at "
        "iteration 250. 1 of the pending jobs failed on their last try and will be retried. "
        "Running mamlbook study rl-paper trains them, resuming each from its checkpoint."
    )
    assert study_progress([], 21, None) == "All 21 training jobs of the study have finished."
    two = [_missing("MAML", 0), _missing("pretrained", 0)]
    assert study_progress(two, 2, "mamlbook study cheetah (resumes)").startswith(
        "0 of 2 training jobs have finished; pending: 1 seed each of MAML and pretrained."
    )


def test_a_reading_waits_for_the_runs_of_its_rows():
    missing = [_missing("MAML (surrogate, 0.1)", 0), _missing("pretrained", 0), _missing("MAML (lvc, 0.5)", 1)]
    rows = ["MAML (surrogate, 0.1)", "pretrained (0.1)"]
    assert (
        pending_for(rows, missing) == "pending (the runs of MAML (surrogate, 0.1) and pretrained are still to finish)"
    )
    # The cheetah's rows are the methods' own names; a method named "MAML" is not the row "MAML (lvc, 0.5)".
    assert pending_for(["MAML"], [_missing("MAML", 0)]) == "pending (the runs of MAML are still to finish)"
    assert pending_for(["MAML (lvc, 0.5)"], [_missing("MAML", 0)]) == "pending"
    table = {"random init (0.1)": SimpleNamespace(mean=[-90.0])}
    assert if_finished(["random init (0.1)"], table, missing, lambda: "read") == "read"
    assert if_finished(rows, table, missing, lambda: "read").startswith("pending (the runs of MAML (surrogate, 0.1)")
    # Once a seed of each row has finished, the reading is made (the rest of the seeds still pending).
    table.update({row: SimpleNamespace(mean=[0.0]) for row in rows})
    assert if_finished(rows, table, missing, lambda: "read") == "read"


def test_table_text_shows_pending_rows_and_the_papers_values():
    cell = SimpleNamespace(mean=[-40.0, -12.5], low=[-42.0, -14.0], high=[-38.0, -11.25], seeds=[0, 1])
    text = table_text({"MAML": cell}, ["MAML", "pretrained"], [0, 1], 3, paper={"MAML": [-35.0, -11.7]}, width=12)
    assert text.splitlines() == [
        "method       seeds               0 steps                1 step",
        "MAML           2/3  -40.0 [-42.0, -38.0]  -12.5 [-14.0, -11.2]",
        "pretrained                       pending               pending",
        "MAML, paper                        -35.0                 -11.7",
    ]
    # Columns widen to the widest cell, so a return in the hundreds stays aligned.
    wide = SimpleNamespace(mean=[-335.3], low=[-364.6], high=[-309.1], seeds=[0])
    lines = table_text({"random init": wide}, ["MAML", "random init"], [0], 1).splitlines()
    assert len({len(line) for line in lines}) == 1 and lines[2].endswith("  -335.3 [-364.6, -309.1]")


def test_a_partial_rl_paper_result_shows_its_finished_rows_and_keeps_the_rest_pending(tmp_path):
    """The chapter's reading of a result file while the study runs: the stored settings and random-init
    floors, one seed of MAML and of the pretrained baseline finished, every other job pending."""
    import json
    from pathlib import Path

    import mamlbook
    from mamlbook.studies import load_result
    from mamlbook.studies.rl_paper_report import assemble

    stored = json.loads((Path(mamlbook.__file__).parents[1] / "book" / "results" / "rl-paper.json").read_text())
    settings = stored["settings"]
    floors = [r for r in stored["runs"] if r["method"].startswith("random init")]
    template = floors[0]

    def trained(method, lr, shift):
        scores = [[r + shift for r in row] for row in template["last"]]
        return {
            **template,
            "method": method,
            "algorithm": "maml",
            "inner_lr": lr,
            "key": f"{method}-0",
            "last": scores,
            "best": scores,
        }

    runs = floors + [trained("MAML (surrogate, 0.1)", 0.1, 30.0)]
    runs += [trained(f"pretrained ({lr:g})", lr, 20.0) for lr in settings["eval_inner_lrs"]]
    finished = {("MAML (surrogate, 0.1)", 0), ("pretrained", 0)}
    missing = [
        {"method": m, "seed": s, "key": f"{m}-{s}", "iteration": 0, "error": None}
        for m in settings["methods"]
        for s in settings["seeds"]
        if (m, s) not in finished
    ]
    jobs = len(settings["methods"]) * len(settings["seeds"])
    header = {
        k: stored[k]
        for k in ("format", "study", "small", "command", "mamlbook_version", "machine", "created", "seconds")
    }
    path = tmp_path / "rl-paper.json"
    path.write_text(json.dumps({**header, **assemble(settings, runs, missing, jobs, False)}))
    result = load_result(path)

    last = result.table("last")
    rows = ["MAML (surrogate, 0.1)", "MAML (lvc, 0.1)", "pretrained (0.1)"]
    lines = table_text(last, rows, range(4), len(settings["seeds"])).splitlines()
    assert lines[1].startswith("MAML (surrogate, 0.1)") and f"1/{len(settings['seeds'])}" in lines[1]
    assert lines[2].split()[-4:] == ["pending"] * 4
    pair = ["MAML (surrogate, 0.1)", "pretrained (0.1)"]
    by_step = [result.comparison("last", *pair, step=s) for s in range(4)]
    read = if_finished(pair, last, result.missing, lambda: steps_reading(by_step, name_a="MAML", name_b="B"))
    assert read.startswith("before adaptation, MAML is ahead of B by 10.0")
    waiting = if_finished(["MAML (lvc, 0.1)"], last, result.missing, lambda: "read")
    assert waiting == "pending (the runs of MAML (lvc, 0.1) are still to finish)"
    assert study_progress(result.missing, result.cost.jobs, result.complete_with).startswith(
        f"2 of {jobs} training jobs have finished; pending: "
    )
