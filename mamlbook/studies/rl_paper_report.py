"""The rl-paper study's result: its settings, each method's mean return over seeds, paired comparisons,
and the reuse of an earlier result file's finished jobs (`adopt`).

Every run is scored on the same test goals with the same random numbers, so two methods' returns on
goal g are comparable goal by goal. Seeds are the outer unit (`reports.paired`): a method's interval
resamples its seeds, then the goals; a comparison resamples each method's seeds independently and
the goals jointly. A method's own interval is its paired difference from a score of zero on every
goal, which is the hierarchical bootstrap of its mean.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..reports.paired import PairedComparison, paired_difference
from .records import significant

FORMAT = 1  # of the result file, `RLPaperResult.FORMAT`
SNAPSHOTS = ("last", "best")
PRETRAINED, RANDOM = "pretrained", "random init"
DESCRIPTIONS = {
    "surrogate": "MAML-TRPO, the meta-gradient of the paper and its code (biased: no score term of the inner step)",
    "lvc": "MAML-TRPO, ProMP's low-variance curvature meta-gradient",
    "dice": "MAML-TRPO, the unbiased DiCE meta-gradient",
    PRETRAINED: "one policy trained by the same TRPO on a mixture of goals, without an inner loop",
}
BOOTSTRAP = {"confidence": 0.95, "resamples": 10_000, "seed": 0}
# the paper's method at the step of its text, compared with the step of the authors' released script
STEP_PAIR = ("MAML (surrogate, 0.1)", "MAML (surrogate, 0.5)")


def baseline_name(method: str, inner_lr: float) -> str:
    """The row of the pretrained baseline or the random initialization adapted by `inner_lr`."""
    return f"{method} ({inner_lr:g})"


Named = Callable[[str, float], str]
"""How a baseline's row is named from the baseline and the step it is adapted by (`baseline_name`)."""


def row_names(methods: dict[str, dict[str, Any]], eval_lrs: list[float], named: Named = baseline_name) -> list[str]:
    """Every row of a table, in order: the MAML methods, then the baselines at each step size."""
    maml = [name for name, method in methods.items() if method["inner_steps"]]
    baselines = [named(b, lr) for b in (PRETRAINED, RANDOM) for lr in eval_lrs if b == RANDOM or b in methods]
    return maml + baselines


def pairs(
    methods: dict[str, dict[str, Any]], eval_lrs: list[float], named: Named = baseline_name
) -> list[tuple[str, str]]:
    """The comparisons (a, b), a minus b: each MAML method against the pretrained baseline and the random
    initialization adapted by its own step, then the paper's step against the released one."""
    out = []
    for name, method in methods.items():
        if method["inner_steps"]:
            for baseline in (PRETRAINED, RANDOM):
                out.append((name, named(baseline, method["inner_lr"])))
    if all(name in methods for name in STEP_PAIR):
        out.append(STEP_PAIR)
    return out


def _scores(runs: list[dict[str, Any]], snapshot: str, step: int) -> np.ndarray:
    return np.array([run[snapshot][step] for run in runs], dtype=np.float64)  # [seeds, goals]


def _interval(result: PairedComparison) -> dict[str, Any]:
    return {
        "difference": result.difference,
        "low": result.low,
        "high": result.high,
        "decided": result.decided,
        "seeds": [result.n_seeds_a, result.n_seeds_b],
        "tasks": result.n_tasks,
        "method": result.method,
    }


def _by_row(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        rows.setdefault(run["method"], []).append(run)
    return {name: sorted(rs, key=lambda r: r["seed"]) for name, rs in rows.items()}


def tables(runs: list[dict[str, Any]], names: list[str], bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`tables[snapshot][row]`: the mean return over seeds after 0..steps inner steps with its interval."""
    by_row = _by_row(runs)
    options = {"confidence": bootstrap["confidence"], "n_resamples": bootstrap["resamples"], "seed": bootstrap["seed"]}
    out: dict[str, dict[str, Any]] = {}
    for snapshot in SNAPSHOTS:
        table: dict[str, Any] = {}
        for name in names:
            rs = by_row.get(name)
            if not rs:
                continue
            mean, low, high = [], [], []
            for step in range(len(rs[0][snapshot])):
                scores = _scores(rs, snapshot, step)
                result = paired_difference(scores, np.zeros((1, scores.shape[1])), **options)
                mean.append(result.difference)
                low.append(result.low)
                high.append(result.high)
            table[name] = {
                "mean": mean,
                "low": low,
                "high": high,
                "by_seed": [[float(np.mean(row)) for row in r[snapshot]] for r in rs],
                "seeds": [r["seed"] for r in rs],
                "snapshot_iterations": [r["iterations" if snapshot == "last" else "best_iteration"] for r in rs],
            }
        out[snapshot] = table
    return out


def comparisons(
    runs: list[dict[str, Any]], wanted: list[tuple[str, str]], bootstrap: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """`comparisons[snapshot]`: each pair of `wanted` whose two methods have runs, a minus b at every step."""
    by_row = _by_row(runs)
    options = {"confidence": bootstrap["confidence"], "n_resamples": bootstrap["resamples"], "seed": bootstrap["seed"]}
    out: dict[str, list[dict[str, Any]]] = {}
    for snapshot in SNAPSHOTS:
        found = []
        for a, b in wanted:
            if a not in by_row or b not in by_row:
                continue
            steps = range(len(by_row[a][0][snapshot]))
            by_step = [
                _interval(
                    paired_difference(_scores(by_row[a], snapshot, s), _scores(by_row[b], snapshot, s), **options)
                )
                for s in steps
            ]
            found.append({"a": a, "b": b, "by_step": by_step})
        out[snapshot] = found
    return out


def assemble(
    settings: dict[str, Any],
    runs: list[dict[str, Any]],
    missing: list[dict[str, Any]],
    jobs: int,
    small: bool,
    study: str = "rl-paper",
    named: Named = baseline_name,
    reading: str | None = None,
) -> dict[str, Any]:
    """The result of study `study` (what `mamlbook study rl-paper` writes), from its runs and missing jobs;
    `named` names the baselines' rows, `reading` replaces the description of the tables' intervals."""
    methods = settings["methods"]
    eval_lrs = settings["eval_inner_lrs"]
    cost: dict[str, tuple[float, float]] = {}
    for run in runs:  # a job's cost counts once, whatever the rows it scores
        cost[run["key"]] = (run["cpu_seconds"], run["wall_seconds"])
    command = f"mamlbook study {study}" + (" --small" if small else "")
    if reading is None:
        reading = (
            "tables: the mean return over seeds after 0..steps inner steps on the test goals, of each run's last "
            "snapshot and of its best (the highest mean return after one inner step on the validation goals); "
            "comparisons: a minus b, paired over the test goals; each interval a hierarchical bootstrap over "
            f"seeds, then goals ({100 * settings['bootstrap']['confidence']:g}%); decided when it excludes zero"
        )
    return {
        "settings": settings,
        "reading": reading,
        "complete_with": (
            f"{command} (trains only the jobs under missing, resuming each from its checkpoint; the cache keeps "
            "the rest)"
            if missing
            else None
        ),
        "cost": {
            "jobs_finished": jobs - len(missing),
            "jobs": jobs,
            "cpu_seconds": round(sum(c for c, _ in cost.values()), 1),
            "wall_seconds": round(sum(w for _, w in cost.values()), 1),
        },
        "runs": runs,
        "missing": missing,
        "tables": tables(runs, row_names(methods, eval_lrs, named), settings["bootstrap"]),
        "comparisons": comparisons(runs, pairs(methods, eval_lrs, named), settings["bootstrap"]),
    }


def best_snapshot(iterations: list[int], validation: list[float]) -> int:
    """The snapshot with the highest validation return (the earliest of equals)."""
    if not iterations or len(iterations) != len(validation):
        raise ValueError(f"need one validation return per snapshot, got {len(validation)} for {len(iterations)}")
    return iterations[max(range(len(validation)), key=lambda i: (validation[i], -i))]


def thinned(history: list[dict[str, Any]], every: int) -> dict[str, list]:
    """The training curve in blocks of `every` iterations: mean returns, labelled by the block's last iteration."""
    out: dict[str, list] = {"iteration": [], "pre_return": [], "post_return": []}
    for start in range(0, len(history), every):
        block = history[start : start + every]
        out["iteration"].append(block[-1]["iteration"])
        out["pre_return"].append(sum(r["pre_return"] for r in block) / len(block))
        post = [r["post_return"] for r in block]
        out["post_return"].append(None if None in post else sum(post) / len(post))
    for name in ("pre_return", "post_return"):
        out[name] = [None if v is None else significant([v])[0] for v in out[name]]
    return out


def settings(study: Any) -> dict[str, Any]:
    """What the result says about how it was produced (the `RLPaperSettings` record's fields)."""
    methods = {}
    for name, method in study.methods.items():
        description = DESCRIPTIONS[PRETRAINED if not method["inner_steps"] else method["estimator"]]
        methods[name] = {**method, "description": description}
    return {
        "training": {**study.training, "hidden": list(study.training["hidden"])},
        "methods": methods,
        "seeds": list(study.seeds),
        "eval_inner_lrs": list(study.eval_lrs),
        "snapshot_every": study.snapshot_every,
        "curve_every": study.curve_every,
        "validation": dict(study.validation),
        "test": dict(study.test),
        "bootstrap": dict(BOOTSTRAP),
    }


def _differences(ours: Any, theirs: Any, where: str) -> list[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        names = sorted(set(ours) | set(theirs))
        return [d for n in names for d in _differences(ours.get(n), theirs.get(n), f"{where}.{n}" if where else n)]
    return [] if ours == theirs else [where]


def adopt(study: Any, path: str | Path) -> int:
    """Put the finished jobs of an earlier result file into the cache, where `run` finds them; returns how
    many. Every run names its job's cache folder (`key`), which hashes the job's settings, so a run is
    taken only by the job it came from; a file made with other settings (`study.described()`) is refused,
    naming them. The file must be of the same study (`study.NAME`)."""
    data = json.loads(Path(path).read_text())
    if data.get("study") != study.NAME or data.get("format") != FORMAT:
        article = "an" if study.NAME[0] in "aeiour" else "a"  # "an rl-paper", "a cheetah"
        raise ValueError(f"{path} is not {article} {study.NAME} study result of format {FORMAT}")
    ours = json.loads(json.dumps(study.described()))
    differs = _differences(ours, data.get("settings"), "")
    if data.get("small") != study.small:
        differs.append("small")
    if differs:
        raise ValueError(f"{path} was made with other settings ({', '.join(differs)}): its jobs cannot be reused")
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in data["runs"]:
        by_key.setdefault(row["key"], []).append(row)
    adopted = 0
    jobs = [(study.folder(job), study.scores_path(job)) for job in study.plan()]
    floors = [(study.floor_folder(seed), study.results_path(study.floor_folder(seed))) for seed in study.seeds]
    for folder, target in jobs + floors:
        rows = by_key.get(folder.name)
        if rows and not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(rows, indent=1) + "\n")
            adopted += (folder, target) in jobs
    return adopted
