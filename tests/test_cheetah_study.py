"""`mamlbook study cheetah`: the running cheetah as a resumable study (MAML, pretrained, random init).

The plan against the paper's recorded settings and the budget, the small study end to end through its
typed record, the velocity curves, a time limit and its resumption, reuse of a result file, two
processes against one, and the command line with and without MuJoCo.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np
import pytest
import torch
from _studies import cost_free, interrupt_and_resume, run_small

from mamlbook.cli import main
from mamlbook.records import to_data
from mamlbook.reports.published import published
from mamlbook.rl.cheetah import velocity_reward
from mamlbook.rl.trainer import Nav2DConfig, Nav2DTrainer
from mamlbook.studies import cheetah, load_result
from mamlbook.studies.records import CheetahResult, PairedInterval

pytest.importorskip("gymnasium", reason="the cheetah needs Gymnasium: pip install 'mamlbook[mujoco]'")
pytest.importorskip("mujoco", reason="the cheetah needs MuJoCo: pip install 'mamlbook[mujoco]'")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small study, run once into its own cache and written to a result file."""
    return run_small("cheetah", tmp_path_factory)


def test_the_plan_takes_the_papers_recorded_settings_and_fits_the_budget():
    study = cheetah.CheetahStudy()
    plan = study.plan()
    assert [(j["method"], j["seed"]) for j in plan] == [("MAML", 0), ("pretrained", 0)]
    stated = set(cheetah.TRAINING) | {"estimator", "inner_steps", "inner_lr", "seed", "iterations"}
    assert {f.name for f in dataclasses.fields(Nav2DConfig)} == stated, "every setting of the run is stated"
    paper = {k: published(f"finn2017.cheetah.{k}").value for k in ("meta_batch", "trajectories", "horizon")}
    alpha = published("finn2017.nav2d.alpha").value
    for job, iterations in zip(plan, (cheetah.ITERATIONS_MAML, cheetah.ITERATIONS_PRETRAINED), strict=True):
        c = study.config(job)
        assert (c.env, c.meta_batch, c.trajectories, c.horizon) == ("cheetah-vel", *paper.values())
        assert (c.outer, c.estimator, c.inner_lr, c.curvature, c.seed) == (
            "trpo",
            "surrogate",
            alpha,
            "gauss-newton",
            0,
        )
        assert (c.max_kl, c.cg_iters, c.hidden, c.gamma, c.gae_lambda) == (0.01, 10, (100, 100), 0.99, 1.0)
        assert c.inner_steps == (1 if job["method"] == "MAML" else 0) and c.iterations == iterations
    described = study.described()
    assert described["paper"]["iterations"] == published("finn2017.cheetah.iterations").value
    assert cheetah.ITERATIONS_MAML < cheetah.ITERATIONS_PRETRAINED <= described["paper"]["iterations"]
    # the two jobs side by side after the floor, by the measured seconds: within the budget, and most of it used
    planned = cheetah.budget(study)["planned_seconds"]
    maml = cheetah.planned_seconds(cheetah.ITERATIONS_MAML, cheetah.SECONDS_PER_ITERATION["MAML"])
    assert planned == pytest.approx(cheetah.FLOOR_SECONDS + maml) and cheetah.BUDGET_SECONDS == 7200
    assert 0.8 * cheetah.BUDGET_SECONDS <= planned <= cheetah.BUDGET_SECONDS
    more = cheetah.planned_seconds(
        cheetah.ITERATIONS_MAML + 2 * cheetah.SNAPSHOT_EVERY, cheetah.SECONDS_PER_ITERATION["MAML"]
    )
    assert cheetah.FLOOR_SECONDS + more > cheetah.BUDGET_SECONDS, "two more snapshots of MAML would not fit"
    assert study.snapshot_every == 25 and study.seeds == (0,) and study.eval_lrs == [alpha]
    assert (study.test["goals"], study.test["trajectories"], study.test["steps"]) == (40, 20, 3)
    assert study.validation["goal_seed"] != study.test["goal_seed"]
    assert described["curves"] == {"goals": [0.5, 1.0, 1.5], "steps": [0, 1, 3], "trajectories": 10,
                                   "sampling_seed": cheetah.CURVES["sampling_seed"]}  # fmt: skip
    assert study.folder(plan[0]).parent.name == "cheetah" and study.folder(plan[0]) != study.folder(plan[1])
    tiny = cheetah.CheetahStudy(small=True)
    c = tiny.config(tiny.plan()[0])
    assert (c.meta_batch, c.trajectories, c.horizon, c.iterations, tiny.snapshot_every) == (2, 2, 20, 4, 2)
    assert (tiny.test["goals"], tiny.validation["goals"], tiny.test["steps"]) == (3, 3, 2)
    assert tiny.folder(tiny.plan()[0]).parent.name == "cheetah-small"
    assert {m["iterations"] for m in cheetah.CheetahStudy(iterations=7).methods.values()} == {7}
    with pytest.raises(ValueError, match="iterations must be at least 1"):
        cheetah.CheetahStudy(iterations=0)


def test_the_small_study_writes_a_result_a_chapter_reads(small):
    _, path = small
    result = load_result(path)
    assert isinstance(result, CheetahResult) and result.command == "mamlbook study cheetah --small"
    assert to_data(result) == json.loads(path.read_text()), "every field of the file is read back"
    assert not result.missing and result.complete_with is None and result.cost.jobs == 2
    steps, goals = result.settings.test.steps, result.settings.test.goals
    assert [(r.method, r.algorithm, r.seed) for r in result.runs] == [
        ("MAML", "maml", 0), ("pretrained", "pretrained", 0), ("random init", "random init", 0)
    ]  # fmt: skip
    paper = published("finn2017.cheetah.iterations").value
    for run in result.runs:
        assert len(run.last) == len(run.best) == steps + 1 and {len(row) for row in run.last + run.best} == {goals}
        trained = run.algorithm != "random init"
        assert (run.iterations, run.paper_iterations) == ((4, paper) if trained else (0, None))
        assert run.snapshots == ([2, 4] if trained else [0]) and run.best_iteration in run.snapshots
    assert result.settings.methods["MAML"].iterations == 4 and result.settings.paper.iterations == paper
    table = result.table("last")
    assert list(table) == ["MAML", "pretrained", "random init"] and len(table["MAML"].mean) == steps + 1
    assert table["MAML"].mean[1] == pytest.approx(float(np.mean(result.run("MAML", 0).last[1])))
    gain = result.comparison("last", "MAML", "pretrained", step=1)
    assert isinstance(gain, PairedInterval) and gain.seeds == [1, 1] and gain.tasks == goals
    assert gain.difference == pytest.approx(table["MAML"].mean[1] - table["pretrained"].mean[1])
    assert "task differences" in gain.method and "one seed" in result.reading, "one seed: an interval over goals"
    floor = result.comparison("best", "MAML", "random init", step=0)
    assert floor.low <= floor.difference <= floor.high
    with pytest.raises(KeyError, match="'MAML \\(surrogate, 0.1\\)'"):
        table["MAML (surrogate, 0.1)"]
    with pytest.raises(KeyError, match="no step 3"):
        result.comparison("last", "MAML", "pretrained", step=3)
    with pytest.raises(KeyError, match="no comparison of pretrained minus MAML"):
        result.comparison("last", "pretrained", "MAML", step=1)


def test_the_velocity_curves_have_a_value_per_time_step_for_each_goal_and_step(small):
    _, path = small
    result = load_result(path)
    curves = result.settings.curves
    assert set(result.curves) == {"MAML", "pretrained"}
    for method in ("MAML", "pretrained"):
        for goal in curves.goals:
            for steps in curves.steps:
                curve = result.curve(method, goal, steps)
                assert len(curve) == result.settings.training.horizon and all(map(math.isfinite, curve))
        assert result.curve(method, 1.0, 1) != result.curve(method, 1.0, 0), "the inner step changed the policy"
    assert result.curve("MAML", 1.5, 3) == result.run("MAML", 0).curves["1.5"]["3"] == result.curves["MAML"]["1.5"]["3"]
    with pytest.raises(KeyError, match="'random init'"):
        result.curve("random init", 1.0, 0)
    with pytest.raises(KeyError, match="no velocity curve toward goal 0.7 for MAML; goals 0.5, 1, 1.5"):
        result.curve("MAML", 0.7, 0)
    with pytest.raises(KeyError, match="no velocity curve after 2 inner steps for MAML; steps 0, 1, 3"):
        result.curve("MAML", 1.0, 2)


def test_the_curves_velocity_is_the_one_the_reward_is_computed_from():
    goals = torch.tensor([[0.5], [1.5]], dtype=torch.float64)
    env = cheetah._Velocities(goals, 3, 10, torch.Generator().manual_seed(0))
    env.reset()
    actions = 1.5 * torch.randn(10, 2, 3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for action in actions:
        _, reward, *_ = env.step(action)
        velocity = env.velocities[-1].reshape(2, 3)
        assert np.array_equal(velocity_reward(velocity, goals.numpy(), action.numpy()), reward.numpy())
    mean = env.mean_velocity()
    assert mean.shape == (2, 10)
    assert torch.allclose(mean[:, -1], torch.from_numpy(env.velocities[-1].reshape(2, 3).mean(1)))


def test_a_time_limit_stops_a_job_at_a_snapshot_and_the_next_call_resumes_it_exactly(tmp_path, monkeypatch):
    cut, steps = interrupt_and_resume(cheetah.cheetah, cheetah.CheetahStudy, tmp_path, monkeypatch)
    assert [(m["method"], m["seed"], m["iteration"]) for m in cut["missing"]] == [("MAML", 0, 2), ("pretrained", 0, 0)]
    assert [r["method"] for r in cut["runs"]] == ["random init"] and "mamlbook study cheetah" in cut["complete_with"]
    assert steps == [2, 3, 0, 1, 2, 3], "the stopped job goes on from its checkpoint, the other starts"


def test_reuse_adopts_finished_jobs_and_refuses_other_settings(small, tmp_path, monkeypatch):
    _, path = small
    first = load_result(path)
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "empty"))  # a machine with an empty cache
    monkeypatch.setattr(Nav2DTrainer, "fit", lambda *a, **k: pytest.fail("a reused job was trained again"))
    monkeypatch.setattr(cheetah.CheetahStudy, "returns", lambda *a, **k: pytest.fail("a reused run was scored again"))
    again = cheetah.cheetah(small=True, progress=False, trained_only=True, reuse=path)
    assert not again["missing"] and cost_free(again["runs"]) == cost_free(first.runs)
    data = json.loads(path.read_text())
    data["settings"]["training"]["meta_batch"] += 1
    data["settings"]["curves"]["trajectories"] += 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"other settings \(curves\.trajectories, training\.meta_batch\)"):
        cheetah.cheetah(small=True, progress=False, trained_only=True, reuse=other)
    data = json.loads(path.read_text())
    data["study"] = "rl-paper"
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a cheetah study result"):
        cheetah.cheetah(small=True, progress=False, reuse=other)


def test_two_processes_give_the_result_of_one(small, tmp_path, monkeypatch):
    _, path = small
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    two = cheetah.cheetah(small=True, progress=False, jobs=2)
    assert not two["missing"] and cost_free(two["runs"]) == cost_free(load_result(path).runs)


def test_the_command_line_runs_the_small_study_and_without_mujoco_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    assert main(["study", "cheetah", "--small", "--no-progress", "--out", str(out)]) == 0
    result = load_result(out)
    assert isinstance(result, CheetahResult) and not result.missing and len(result.runs) == 3
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "mujoco", None)  # `import mujoco` raises ImportError
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "without"))
    assert main(["study", "cheetah", "--small", "--no-progress", "--out", str(tmp_path / "none.json")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mamlbook study: error:") and 'pip install "mamlbook[mujoco]"' in last, last
    assert not (tmp_path / "none.json").exists() and not (tmp_path / "without").exists()
