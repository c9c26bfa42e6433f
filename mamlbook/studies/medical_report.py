"""The medical study's result: per-method cells over seeds, gains over the no-learning floor, paired comparisons.

Every method is scored on the same test tasks of a cell (size, split, shots), so comparisons are
paired task by task (`reports.paired.paired_difference`: a hierarchical bootstrap that resamples each
method's seeds, then the tasks jointly). A method's *gain* is its difference from the cell's floor,
the better of the two raw-pixel methods on that cell; its comparison with MAML is the same paired
difference against MAML's seeds. An interval that excludes zero decides; one that holds it says "no
difference detected" at its width.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..reports.paired import paired_difference

REFERENCE = "MAML"


def cell_name(size: int, split_id: int, k_shot: int) -> str:
    return f"{size} px, split {split_id}, {k_shot}-shot"


def _cells(runs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["method"], cell_name(run["size"], run["split"], run["k_shot"])), []).append(run)
    return {key: sorted(rs, key=lambda r: r["seed"]) for key, rs in cells.items()}


def _interval(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    result = paired_difference([r["per_task"] for r in a], [r["per_task"] for r in b])
    return {
        "difference": result.difference,
        "low": result.low,
        "high": result.high,
        "decided": result.decided,
        "seeds": [result.n_seeds_a, result.n_seeds_b],
        "tasks": result.n_tasks,
        "method": result.method,
    }


def table(runs: list[dict[str, Any]], floors: tuple[str, ...]) -> dict[str, dict[str, dict[str, Any]]]:
    """`table[method][cell]`: mean accuracy over seeds, each seed's, the budget (iterations or epochs,
    whether every seed converged, CPU seconds), the gain over the cell's floor and the paired difference
    from MAML, each with its interval."""
    cells = _cells(runs)
    floor_of: dict[str, str] = {}
    for (method, cell), rs in cells.items():
        if method in floors:
            best = floor_of.get(cell)
            mean = float(np.mean([r["accuracy"] for r in rs]))
            if best is None or mean > float(np.mean([r["accuracy"] for r in cells[best, cell]])):
                floor_of[cell] = method
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (method, cell), rs in sorted(cells.items()):
        values = [r["accuracy"] for r in rs]
        entry: dict[str, Any] = {
            "accuracy": float(np.mean(values)),
            "by_seed": values,
            "seeds": [r["seed"] for r in rs],
            "spread": max(values) - min(values),
            "task_ci95_by_seed": [r["accuracy_ci95"] for r in rs],
            "iterations": [r.get("iterations") for r in rs],
            "epochs": [r.get("epochs") for r in rs],
            "converged": all(r.get("converged", True) for r in rs),
            "train_cpu_seconds": float(np.mean([r["train_cpu_seconds"] for r in rs])),
            "test_cpu_seconds": float(np.mean([r["test_cpu_seconds"] for r in rs])),
            "floor": floor_of.get(cell),
            "gain": None,
            "vs_maml": None,
        }
        if cell in floor_of and method not in floors:
            entry["gain"] = _interval(rs, cells[floor_of[cell], cell])
        if method != REFERENCE and (REFERENCE, cell) in cells:
            entry["vs_maml"] = _interval(cells[REFERENCE, cell], rs)
        out.setdefault(method, {})[cell] = entry
    return out


def assemble(
    study: Any,
    runs: list[dict[str, Any]],
    missing: list[dict[str, Any]],
    settings: dict[str, Any],
    methods: dict[str, str],
    floors: tuple[str, ...],
) -> dict[str, Any]:
    """The study's result (what `mamlbook study medical` writes): `methods` by name with what each does,
    `floors` the methods that learn nothing across tasks."""

    train_seconds: dict[str, float] = {}
    for run in runs:  # a model's training counts once, whatever the rows it scores
        train_seconds[run["key"]] = run["train_cpu_seconds"]
    cpu = sum(train_seconds.values()) + sum(r["test_cpu_seconds"] for r in runs)
    jobs = len(study.plan())
    return {
        "settings": settings,
        "budget": (
            f"converged: meta-learners checked every {study.budget['chunk']} iterations from "
            f"{study.budget['min_iterations']} on, at most {study.budget['max_iterations']}; "
            f"pre-training by epochs, {study.pretrain['min_epochs']} to {study.pretrain['epochs']}"
        ),
        "cost": {"jobs_finished": jobs - len(missing), "jobs": jobs, "cpu_seconds": round(cpu)},
        "reading": (
            "cells: the mean accuracy over seeds; gain: the paired difference from the cell's floor (the better "
            "raw-pixel method), vs_maml: MAML minus the method, each a hierarchical bootstrap over seeds then "
            "tasks (95%); decided when the interval excludes zero"
        ),
        "complete_with": (
            "mamlbook study medical (trains and scores only the jobs under missing; the cache keeps the rest)"
            if missing
            else None
        ),
        "methods": methods,
        "floors": list(floors),
        "runs": runs,
        "missing": missing,
        "table": table(runs, floors),
    }
