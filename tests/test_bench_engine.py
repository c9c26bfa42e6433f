"""`mamlbook bench`: problems, impl names, rows, isolation, results files and plots (no timing claims)."""

from __future__ import annotations

import json

import pytest
import torch

from mamlbook import bench
from mamlbook.bench.plots import plot_bench
from mamlbook.bench.records import BenchResults, BenchRow
from mamlbook.bench.runner import PROBLEMS, _impl_names, add_ratios, read_rows, run_bench, write_json
from mamlbook.records import RecordError

KEYS = {"problem", "impl", "strategy", "order", "steps", "meta_batch", "ms_median", "ms_min", "peak_mib"}


@pytest.mark.parametrize("name,way,tasks", [("omniglot-5w1s", 5, 32), ("omniglot-20w1s", 20, 16)])
def test_omniglot_problems_have_the_papers_shapes(name: str, way: int, tasks: int) -> None:
    problem = PROBLEMS[name]
    batch = problem.make_batch(torch.Generator().manual_seed(0), 2)
    assert problem.meta_batch == tasks
    assert batch.support_x.shape == (2, way, 1, 28, 28)
    assert batch.query_x.shape == (2, 15 * way, 1, 28, 28)
    assert problem.make_model()(batch.support_x[0]).shape == (way, way)


def test_impl_names_expand_and_refuse() -> None:
    conv = PROBLEMS["omniglot-5w1s"].make_model()
    assert "mamlbook:vmap" not in _impl_names(["mamlbook"], conv)  # wrong with batch norm
    assert _impl_names(["mamlbook"], PROBLEMS["sinusoid"].make_model())[:2] == ["mamlbook:loop", "mamlbook:vmap"]
    assert _impl_names(["anil", "imaml", "learn2learn"], conv) == ["anil:folded", "imaml:folded", "learn2learn"]
    assert _impl_names(["mamlbook:folded@4"], conv) == ["mamlbook:folded@4"]
    for bad in ("mamlbook:warp", "mamlbook:folded@0", "anil:loop@x"):
        with pytest.raises(ValueError, match="unknown strategy"):
            _impl_names([bad], conv)
    with pytest.raises(ValueError, match="unknown impl"):
        _impl_names(["tinygrad"], conv)
    with pytest.raises(ValueError, match="sinusoid problem only"):
        _impl_names(["jax"], conv)


def test_rows_in_process_have_the_promised_keys() -> None:
    rows = run_bench(
        ["sinusoid"], [1, 2], ["mamlbook:folded", "anil:folded"], repeat=1, warmup=0, progress=False, isolate=False
    )
    assert len(rows) == 4
    assert all(KEYS <= set(r) for r in rows)
    assert {r["steps"] for r in rows} == {1, 2}
    assert all(r["ms_min"] <= r["ms_median"] for r in rows)
    assert all(r["ratio_vs_learn2learn"] is None for r in rows)  # learn2learn was not run


def test_ratio_is_learn2learn_time_over_own_time() -> None:
    base = {"problem": "p", "steps": 1, "meta_batch": 4, "order": 2, "device": "cpu"}
    rows = [{**base, "impl": "learn2learn", "ms_median": 30.0}, {**base, "impl": "mamlbook", "ms_median": 10.0}]
    add_ratios(rows)
    assert rows[1]["ratio_vs_learn2learn"] == pytest.approx(3.0)
    assert rows[0]["ratio_vs_learn2learn"] == pytest.approx(1.0)


def test_isolated_configuration_reports_its_own_peak_memory() -> None:
    config = {
        "problem": "sinusoid",
        "impl": "mamlbook:folded",
        "steps": 1,
        "order": 2,
        "device": "cpu",
        "repeat": 1,
        "warmup": 0,
        "meta_batch": 3,
        "threads": 1,
    }
    row = bench.run_isolated(config, timeout=120)
    assert row["meta_batch"] == 3 and row["threads"] == 1
    assert row["peak_mib"] > 10  # a Python process with torch loaded
    assert row["extra_mib"] is not None and row["extra_mib"] >= 0


def test_results_file_and_plot(tmp_path) -> None:
    rows = [
        {
            "problem": "p",
            "impl": i,
            "strategy": "loop",
            "order": 2,
            "steps": s,
            "meta_batch": b,
            "device": "cpu",
            "threads": 1,
            "ms_median": 1.0 + s * b,
            "ms_min": 0.5 + s * b,
            "peak_mib": 100.0 + s,
            "extra_mib": None,
            "repeat": 3,
            "ratio_vs_learn2learn": None,
        }
        for i in ("learn2learn", "mamlbook")
        for s in (1, 5)
        for b in (2, 4)
    ]
    path = write_json(rows, tmp_path / "r.json", command="mamlbook bench --problems p")
    document = json.loads(path.read_text())
    assert set(document) == {"format", "rows", "peak_gflops"} and document["format"] == BenchResults.FORMAT
    assert document["peak_gflops"] is None  # measured only when asked for (`mamlbook bench` does)
    assert len(document["rows"]) == len(rows)
    assert all(
        r["command"].startswith("mamlbook bench") and "machine" in r and "mamlbook" in r for r in document["rows"]
    )
    typed = read_rows(path)
    assert all(isinstance(r, BenchRow) for r in typed) and typed[0].machine.cpu_count >= 1
    assert [{k: getattr(r, k) for k in rows[0]} for r in typed] == rows
    assert plot_bench(rows, tmp_path / "bench.png").stat().st_size > 1000
    # a row without a column is refused when written, naming the row and the column
    with pytest.raises(RecordError, match=r"rows\[0\].*missing field 'ms_min'"):
        write_json([{k: v for k, v in rows[0].items() if k != "ms_min"}], tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
