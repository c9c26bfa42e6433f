"""`mamlbook study`: the small sweep runs, its result file says what produced it, and it reloads."""

from __future__ import annotations

import json
import math

import pytest

from mamlbook import studies as study
from mamlbook.cli import main


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
    loaded = study.load_result(out)
    assert all(v > 0 for row in loaded["grids"]["inner"]["loss"] for v in row)


def test_diverged_runs_round_trip_as_infinity(tmp_path):
    result = {"grids": {"g": {"loss": [[1.0, float("inf")]], "ci95": [[0.1, float("nan")]]}}}
    path = study.save_result(result, tmp_path / "r.json")
    assert "Infinity" not in path.read_text() and "NaN" not in path.read_text()
    assert math.isinf(study.load_result(path)["grids"]["g"]["loss"][0][1])


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
    saved = json.loads(out.read_text())
    settings = saved["settings"]
    assert (settings["device"], settings["full"], settings["jobs"]) == ("cuda", True, 3)
    assert saved["runs"] == [] and {m["piece"] for m in saved["missing"] if "piece" in m} >= {"MSL", "LSLR"}
    monkeypatch.chdir(tmp_path)
    assert main(["study", "better-omniglot", "--small", "--confirm", "--time-limit", "0", "--no-progress"]) == 0
    confirm = json.loads((tmp_path / "book" / "results" / "better-omniglot-confirm.json").read_text())
    assert confirm["settings"]["confirm"] and {m["label"] for m in confirm["missing"]} == {"MAML", "MAML++ without CA"}
    assert not (tmp_path / "book" / "results" / "better-omniglot.json").exists(), "the main study's file is untouched"
    assert main(["study", "better-omniglot", "--small", "--full", "--confirm", "--out", str(out)]) == 2
    assert "pick one" in capsys.readouterr().err
    assert main(["study", "sweep", "--small", "--jobs", "2", "--out", str(tmp_path / "s.json")]) == 2
    assert "does not take jobs" in capsys.readouterr().err
    assert main(["study", "better-omniglot", "--small", "--jobs", "0", "--out", str(out)]) == 2
    assert "jobs must be at least 1" in capsys.readouterr().err
