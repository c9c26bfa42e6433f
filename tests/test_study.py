"""`mamlbook study`: the small sweep runs, its result file says what produced it, and it reloads typed."""

from __future__ import annotations

import json
import math

import pytest

from mamlbook import studies as study
from mamlbook.cli import main
from mamlbook.records import Machine
from mamlbook.studies.records import BetterOmniglotResult, BetterResult, SweepGrid, SweepResult, SweepSettings


def test_small_sweep_writes_a_self_describing_result(tmp_path):
    out = tmp_path / "sweep.json"
    assert main(["study", "sweep", "--small", "--iterations", "1", "--no-progress", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["study"] == "sweep" and saved["small"] is True
    assert saved["command"].startswith("mamlbook study sweep")
    assert saved["mamlbook_version"]
    assert {"platform", "cpu_count", "torch"} <= set(saved["machine"])
    for name, (x, y) in {"inner": ("inner_lr", "inner_steps"), "outer": ("meta_lr", "meta_batch")}.items():
        grid = saved["grids"][name]
        assert (grid["x"], grid["y"]) == (x, y)
        assert len(grid["loss"]) == len(grid["y_values"])
        assert all(len(row) == len(grid["x_values"]) for row in grid["loss"])
    assert saved["format"] == SweepResult.FORMAT
    loaded = study.load_result(out)
    assert isinstance(loaded, SweepResult) and loaded.grids["inner"].x == "inner_lr"
    assert all(v > 0 for row in loaded.grids["inner"].loss_or_inf() for v in row)


def test_diverged_runs_round_trip_as_infinity(tmp_path):
    grid = SweepGrid(
        x="inner_lr",
        x_values=[0.01, 0.1],
        y="inner_steps",
        y_values=[1],
        loss=[[1.0, math.inf]],
        ci95=[[0.1, math.nan]],
        seconds=[[1.0, 2.0]],
    )
    machine = Machine(platform="test", processor="x86_64", cpu_count=1, torch="2", torch_threads=1)
    settings = SweepSettings(task="sinusoid", k_shot=10, iterations=1, test_tasks=2, seed=0, fixed={})
    result = SweepResult(
        study="sweep",
        small=True,
        command="test",
        mamlbook_version="0",
        machine=machine,
        created="2026-01-01T00:00:00+00:00",
        seconds=0.0,
        settings=settings,
        grids={"inner": grid},
    )
    path = study.save_result(result, tmp_path / "r.json")
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    loaded = study.load_result(path)
    assert loaded.grids["inner"].loss == [[1.0, None]] and loaded.grids["inner"].ci95 == [[0.1, None]]
    assert math.isinf(loaded.grids["inner"].loss_or_inf()[0][1]) and loaded.grids["inner"].loss_or_inf()[0][0] == 1.0
    # a plain dict from a study goes through the same record on its way to the file
    again = study.save_result(json.loads(text), tmp_path / "again.json")
    assert study.load_result(again) == loaded


def test_the_small_better_study_keeps_each_test_tasks_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    result = study.run_study("better", small=True, progress=False)
    assert isinstance(result, BetterResult) and result.trained > 0
    for run in result.runs:
        assert run.test_loss is not None and run.per_task is not None, run.label
        assert len(run.per_task) == result.settings.test_tasks
        # six significant digits move each loss by at most a relative 5e-6
        assert sum(run.per_task) / len(run.per_task) == pytest.approx(run.test_loss, rel=5e-6, abs=0)
    maml = [r for r in result.runs if r.group == "methods" and r.label == "MAML"]
    assert maml[0].per_task != maml[1].per_task, "each seed keeps its own scores"
    # a cache entry from before per-task scores is trained again rather than read without them
    cache = tmp_path / "cache" / "studies" / "better"
    entry = cache / f"{maml[0].key}.json"
    old = json.loads(entry.read_text())
    del old["per_task"]
    entry.write_text(json.dumps(old))
    again = study.run_study("better", small=True, progress=False)
    assert again.trained == 1 and json.loads(entry.read_text())["per_task"] == maml[0].per_task


def test_unknown_study_and_missing_file_fail_clearly(tmp_path, capsys):
    assert main(["study", "nope", "--small", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="mamlbook study missing"):
        study.load_result(tmp_path / "missing.json")


def test_study_options_reach_the_study_and_other_studies_refuse_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "gpu.json"
    args = ["study", "better-omniglot", "--small", "--device", "cuda", "--full", "--time-limit", "0"]
    assert main([*args, "--jobs", "3", "--no-progress", "--out", str(out)]) == 0
    saved = study.load_result(out)
    assert isinstance(saved, BetterOmniglotResult)
    settings = saved.settings
    assert (settings.device, settings.full, settings.jobs) == ("cuda", True, 3)
    assert saved.runs == [] and {m.piece for m in saved.missing} >= {"MSL", "LSLR"}
    monkeypatch.chdir(tmp_path)
    assert main(["study", "better-omniglot", "--small", "--confirm", "--time-limit", "0", "--no-progress"]) == 0
    confirm = study.load_result(tmp_path / "book" / "results" / "better-omniglot-confirm.json")
    assert confirm.settings.confirm and {m.label for m in confirm.missing} == {"MAML", "MAML++ without CA"}
    assert not (tmp_path / "book" / "results" / "better-omniglot.json").exists(), "the main study's file is untouched"
    assert main(["study", "better-omniglot", "--small", "--full", "--confirm", "--out", str(out)]) == 2
    assert "pick one" in capsys.readouterr().err
    assert main(["study", "sweep", "--small", "--jobs", "2", "--out", str(tmp_path / "s.json")]) == 2
    assert "does not take jobs" in capsys.readouterr().err
    assert main(["study", "better-omniglot", "--small", "--jobs", "0", "--out", str(out)]) == 2
    assert "jobs must be at least 1" in capsys.readouterr().err
