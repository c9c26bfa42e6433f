"""`mamlbook study rl-paper`: 2D navigation at the paper's scale, over three seeds, in resumable jobs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from _studies import cost_free, interrupt_and_resume, run_small

from mamlbook.cli import main
from mamlbook.records import to_data
from mamlbook.rl.evaluate import test_goals as draw_goals
from mamlbook.rl.trainer import Nav2DConfig, Nav2DTrainer, load_policy
from mamlbook.studies import load_result, rl_paper
from mamlbook.studies.records import PairedInterval, RLPaperResult

SMALL_JOBS = [("MAML (surrogate, 0.1)", 0), ("pretrained", 0), ("MAML (surrogate, 0.1)", 1), ("pretrained", 1)]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small study, run once into its own cache and written to a result file."""
    return run_small("rl-paper", tmp_path_factory)


def test_the_full_plan_is_the_papers_settings_in_priority_order():
    study = rl_paper.Study()
    plan = study.plan()
    assert len(plan) == 21 and len({(j["method"], j["seed"]) for j in plan}) == 21
    first = [(j["method"], j["seed"]) for j in plan[:6]]
    assert first == [(m, s) for s in (0, 1, 2) for m in ("MAML (surrogate, 0.1)", "pretrained")]
    groups = [j["method"].split(",")[0] for j in plan[6:]]
    assert groups == ["MAML (surrogate"] * 3 + ["MAML (lvc"] * 6 + ["MAML (dice"] * 6
    assert {j["inner_lr"] for j in plan if j["inner_steps"]} == {0.1, 0.5} and study.eval_lrs == [0.1, 0.5]
    stated = set(rl_paper.TRAINING) | {"estimator", "inner_steps", "inner_lr", "seed"}
    assert {f.name for f in dataclasses.fields(Nav2DConfig)} == stated, "every setting of the run is stated"
    for job in plan:
        c = study.config(job)
        assert (c.meta_batch, c.trajectories, c.horizon, c.iterations, c.hidden) == (20, 20, 100, 500, (100, 100))
        assert (c.outer, c.max_kl, c.cg_iters, c.cg_damping, c.backtrack, c.max_backtracks) == (
            "trpo", 0.01, 10, 1e-5, 0.8, 15)  # fmt: skip
        assert (c.gamma, c.gae_lambda, c.curvature, c.seed, c.env) == (0.99, 1.0, "gauss-newton", job["seed"], "nav2d")
        assert c.inner_steps == (0 if job["method"] == "pretrained" else 1)
        if c.inner_steps:
            assert job["method"] == f"MAML ({c.estimator}, {c.inner_lr:g})"
    assert study.snapshot_every == 25 and (study.validation["goals"], study.validation["trajectories"]) == (40, 20)
    assert (study.test["goals"], study.test["trajectories"], study.test["steps"]) == (40, 40, 3)
    assert len({study.folder(j) for j in plan}) == 21, "every job has its own cache folder"


def test_the_small_study_writes_a_result_a_chapter_reads(small):
    cache, path = small
    result = load_result(path)
    assert isinstance(result, RLPaperResult) and result.command == "mamlbook study rl-paper --small"
    assert to_data(result) == json.loads(path.read_text()), "every field of the file is read back"
    assert not result.missing and result.complete_with is None
    assert (result.cost.jobs, result.cost.jobs_finished) == (4, 4) and result.cost.cpu_seconds > 0
    steps, goals = result.settings.test.steps, result.settings.test.goals
    assert sorted((r.method, r.seed) for r in result.runs) == sorted(
        [(m if m != "pretrained" else "pretrained (0.1)", s) for m, s in SMALL_JOBS]
        + [("random init (0.1)", 0), ("random init (0.1)", 1)]
    )
    for run in result.runs:
        assert len(run.last) == len(run.best) == steps + 1 and {len(row) for row in run.last + run.best} == {goals}
        assert len(run.snapshots) == len(run.validation) and run.best_iteration in run.snapshots
        if run.algorithm == "random init":
            assert run.curve is None and run.iterations == 0 and run.last == run.best
        else:
            assert run.iterations == 4 and run.snapshots == [2, 4] and run.curve.iteration == [1, 2, 3, 4]
            assert (None in run.curve.post_return) == (run.algorithm == "pretrained")
    assert set(result.tables) == {"last", "best"}
    cell = result.table("best")["MAML (surrogate, 0.1)"]
    assert cell.seeds == [0, 1] and len(cell.mean) == steps + 1
    for step in range(steps + 1):
        assert cell.low[step] <= cell.mean[step] <= cell.high[step]
        assert cell.mean[step] == pytest.approx(sum(s[step] for s in cell.by_seed) / 2)
    assert cell.snapshot_iterations == [result.run("MAML (surrogate, 0.1)", s).best_iteration for s in (0, 1)]
    gain = result.comparison("best", "MAML (surrogate, 0.1)", "pretrained (0.1)", step=1)
    assert isinstance(gain, PairedInterval) and gain.seeds == [2, 2] and gain.tasks == goals
    table = result.table("best")
    assert gain.difference == pytest.approx(table["MAML (surrogate, 0.1)"].mean[1] - table["pretrained (0.1)"].mean[1])
    floor = result.comparison("last", "MAML (surrogate, 0.1)", "random init (0.1)", step=0)
    assert floor.low <= floor.difference <= floor.high
    with pytest.raises(KeyError, match="'MAML \\(dice, 0.1\\)'"):
        result.table("best")["MAML (dice, 0.1)"]
    with pytest.raises(KeyError, match="snapshot 'first'"):
        result.table("first")
    with pytest.raises(KeyError, match="no comparison of MAML \\(surrogate, 0.1\\) minus pretrained \\(0.5\\)"):
        result.comparison("best", "MAML (surrogate, 0.1)", "pretrained (0.5)", step=1)
    with pytest.raises(KeyError, match="no step 3"):
        result.comparison("best", "MAML (surrogate, 0.1)", "pretrained (0.1)", step=3)


def test_the_best_snapshot_is_chosen_on_validation_goals_not_test_goals(small, monkeypatch):
    cache, path = small
    result = load_result(path)
    validation, test = result.settings.validation, result.settings.test
    assert validation.goal_seed != test.goal_seed and validation.sampling_seed != test.sampling_seed
    a, b = draw_goals(validation.goals, validation.goal_seed), draw_goals(test.goals, test.goal_seed)
    assert not (a[:, None] == b[None]).all(-1).any(), "no validation goal is a test goal"
    for run in result.runs:
        assert run.best_iteration == run.snapshots[max(range(len(run.validation)), key=run.validation.__getitem__)]
    assert rl_paper.best_snapshot([2, 4, 6], [-3.0, -1.0, -1.0]) == 4, "the earliest of equal snapshots"
    with pytest.raises(ValueError, match="one validation return per snapshot"):
        rl_paper.best_snapshot([2, 4], [-1.0])
    # The best snapshot's test returns are its own; other test goals change them, not the choice.
    monkeypatch.setenv("MAMLBOOK_CACHE", str(cache))
    study = rl_paper.Study(small=True, progress=False)
    job = rl_paper.Study(small=True).plan()[0]
    run = result.run(job["method"], job["seed"])
    _, policy, _ = load_policy(study.folder(job))
    best = torch.load(study.folder(job) / "snapshots" / f"{run.best_iteration:05d}.pt", weights_only=True)
    assert study.test_returns(policy, best, run.inner_lr) == run.best
    monkeypatch.setitem(rl_paper.TEST, "goal_seed", rl_paper.TEST["goal_seed"] + 100)
    monkeypatch.setattr(Nav2DTrainer, "fit", lambda *a, **k: pytest.fail("a finished job was trained again"))
    other = rl_paper.rl_paper(small=True, progress=False)
    assert [r["best_iteration"] for r in other["runs"]] == [r.best_iteration for r in result.runs]
    assert [r["validation"] for r in other["runs"]] == [r.validation for r in result.runs]
    assert [r["last"] for r in other["runs"]] != [r.last for r in result.runs]


def test_a_time_limit_stops_a_job_at_a_snapshot_and_the_next_call_resumes_it_exactly(tmp_path, monkeypatch):
    cut, steps = interrupt_and_resume(rl_paper.rl_paper, rl_paper.Study, tmp_path, monkeypatch)
    assert [(m["method"], m["seed"], m["iteration"]) for m in cut["missing"]] == [
        ("MAML (surrogate, 0.1)", 0, 2), ("pretrained", 0, 0), ("MAML (surrogate, 0.1)", 1, 0), ("pretrained", 1, 0)
    ]  # fmt: skip
    assert {r["algorithm"] for r in cut["runs"]} == {"random init"} and cut["complete_with"]
    assert steps == [2, 3] + [0, 1, 2, 3] * 3, "the stopped job goes on from its checkpoint, the others start"


def test_reuse_adopts_finished_jobs_and_refuses_other_settings(small, tmp_path, monkeypatch):
    _, path = small
    first = load_result(path)
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "empty"))  # a machine with an empty cache
    monkeypatch.setattr(Nav2DTrainer, "fit", lambda *a, **k: pytest.fail("a reused job was trained again"))
    monkeypatch.setattr(rl_paper.Study, "returns", lambda *a, **k: pytest.fail("a reused run was scored again"))
    again = rl_paper.rl_paper(small=True, progress=False, trained_only=True, reuse=path)
    assert not again["missing"] and cost_free(again["runs"]) == cost_free(first.runs)
    assert [r["cpu_seconds"] for r in again["runs"]] == [r.cpu_seconds for r in first.runs]
    data = json.loads(path.read_text())
    data["settings"]["training"]["iterations"] += 1
    data["settings"]["test"]["goals"] += 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"other settings \(test\.goals, training\.iterations\)"):
        rl_paper.rl_paper(small=True, progress=False, trained_only=True, reuse=other)
    data = json.loads(path.read_text())
    data["study"] = "rl"
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not an rl-paper study result"):
        rl_paper.rl_paper(small=True, progress=False, reuse=other)


def test_two_processes_give_the_result_of_one(small, tmp_path, monkeypatch):
    _, path = small
    one = load_result(path)
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    two = rl_paper.rl_paper(small=True, progress=False, jobs=2)
    assert not two["missing"] and cost_free(two["runs"]) == cost_free(one.runs)
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        rl_paper.rl_paper(small=True, progress=False, jobs=0)


def test_the_command_line_runs_the_small_study_and_explains_bad_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    assert main(["study", "rl-paper", "--small", "--no-progress", "--out", str(out)]) == 0
    result = load_result(out)
    assert isinstance(result, RLPaperResult) and not result.missing and len(result.runs) == 6
    assert result.command == "mamlbook study rl-paper --small"
    capsys.readouterr()
    for args, message in (
        (["--jobs", "0"], "jobs must be at least 1"),
        (["--device", "cuda"], "study 'rl-paper' does not take device"),
        (["--iterations", "0"], "--iterations must be at least 1"),
    ):
        assert main(["study", "rl-paper", "--small", "--no-progress", "--out", str(out), *args]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("mamlbook study: error:") and message in last, last
