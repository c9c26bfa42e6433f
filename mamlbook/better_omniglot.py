"""The better-updates comparison on real Omniglot (5-way 1-shot, minimal split): `mamlbook study better-omniglot`.

Each method trains the `omniglot-5w1s` CPU preset's first 1,200 meta-iterations (20 to 50 minutes
per run on one core) and is scored on 600 meta-test tasks of the held-out alphabet with its own
inner rule. Runs live in the cache under a hash of their configuration, and a run that was
interrupted resumes from its last checkpoint, so the study can be stopped and restarted without
losing work.

Budget choices, stated because they shape the result: three seeds for MAML and MAML++ (the pair
the paper's stability claim is about), one for the other methods; the ablation switches off the
two MAML++ pieces that act on the schedule (DA, CA), seed 0; MAML++ with two inner steps (its
multi-step loss needs more than one; five, as in the paper, costs five query passes per task);
Reptile with five steps (with one, its update is plain joint training).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .better_study import config_key
from .checkpoint import load_checkpoint
from .config import cache_root
from .presets import preset_config
from .report import evaluate_run
from .runconfig import TrainConfig
from .study import STUDIES
from .train import Trainer

PRESET = "omniglot-5w1s"
# label: (algorithm, changes to the preset)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "MAML": ("maml", {}),
    "FOMAML": ("fomaml", {}),
    "Reptile": ("reptile", {"inner_steps": 5}),
    "ANIL": ("anil", {}),
    "Meta-SGD": ("metasgd", {}),
    "MAML++": ("mamlpp", {"inner_steps": 2}),
}
SEEDS = (0, 1, 2)
# Methods trained over SEEDS; the others use seed 0 only (a seed costs a run).
SEEDED = ("MAML", "MAML++")
# MAML++ with one piece switched off: the schedules, which a 1,200-iteration run may not suit.
ABLATION: dict[str, dict[str, Any]] = {"DA": {"da": False}, "CA": {"cosine": False}}
TEST_TASKS, TEST_STEPS = 600, 10
# The study's budget, fixed here so that a longer preset elsewhere does not change the study's runs.
ITERATIONS = 1200
SMALL = {"iterations": 2, "meta_batch": 2, "eval_every": 1, "eval_tasks": 2, "checkpoint_every": 1}


def method_config(
    label: str,
    seed: int = 0,
    small: bool = False,
    iterations: int | None = None,
    switched_off: dict[str, Any] | None = None,
) -> TrainConfig:
    """The run of method `label`; `switched_off` overrides its algorithm's options (the ablation)."""
    algorithm, changes = METHODS[label]
    extra = dict(SMALL) if small else {"iterations": ITERATIONS}
    if iterations is not None:
        extra["iterations"] = iterations
    if switched_off:
        extra["algorithm_options"] = dict(switched_off)
    return preset_config(PRESET, "cpu", algorithm=algorithm, seed=seed, **changes, **extra)


def plan(small: bool = False, iterations: int | None = None) -> list[dict[str, Any]]:
    """Every run of the study as (group, label, seed, config) rows, longest-standing runs first."""
    seeds = SEEDS[:2] if small else SEEDS
    rows = []
    for label in METHODS:
        for seed in seeds if label in SEEDED else seeds[:1]:
            rows.append({"group": "methods", "label": label, "seed": seed})
    for piece in ABLATION:
        rows.append({"group": "ablation", "label": f"MAML++ without {piece}", "piece": piece, "seed": seeds[0]})
    for row in rows:
        off = ABLATION.get(row.get("piece", ""))
        label = "MAML++" if off else row["label"]
        row["config"] = method_config(label, row["seed"], small, iterations, switched_off=off)
    return rows


def run_folder(config: TrainConfig, test_tasks: int) -> Path:
    return cache_root() / "studies" / "better-omniglot" / config_key(config, test_tasks)


def adopt(run: str | Path, test_tasks: int = TEST_TASKS) -> Path:
    """Copy a run trained with `mamlbook train` into the study's cache, under its configuration's key.

    The study then finishes (if needed) and scores it instead of training it again.
    """
    run = Path(run)
    payload = load_checkpoint(run)
    folder = run_folder(TrainConfig.from_dict(payload["config"]), test_tasks)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run if run.is_dir() else run.parent, folder)
    return folder


def training_seconds(history: list[dict[str, Any]]) -> float:
    """Wall time of training: each resumed session restarts the clock, so add each session's last reading."""
    total, last = 0.0, 0.0
    for row in history:
        seconds = float(row.get("seconds", 0.0))
        if seconds < last:
            total += last
        last = seconds
    return round(total + last, 1)


def saved_report(folder: Path, config: TrainConfig, test_tasks: int, steps: int) -> dict[str, Any] | None:
    """The run's own `mamlbook eval` report, when it scored the finished run on the study's tasks."""
    path = folder / "eval.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    same = (report.get("tasks"), report.get("steps"), report.get("k_shot"), report.get("iteration"))
    return report if same == (test_tasks, steps, config.k_shot, config.iterations) else None


def train_and_test(config: TrainConfig, folder: Path, test_tasks: int, steps: int) -> dict[str, Any]:
    """Train (or finish training) the run in `folder`, then meta-test it; cached in `folder/result.json`."""
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    trainer = Trainer.resume(folder) if (folder / "checkpoint.pt").exists() else Trainer(config, folder)
    history = trainer.fit(progress=False)
    report = saved_report(folder, config, test_tasks, steps) or evaluate_run(folder, tasks=test_tasks, steps=steps)
    (method,) = (m for n, m in report["methods"].items() if n != "pretrained")
    trained_steps = min(config.inner_steps, steps)
    result = {
        "test_steps": trained_steps,
        "accuracy": method["accuracy_mean"][trained_steps],
        "accuracy_ci95": method["accuracy_ci95"][trained_steps],
        "accuracy_10": method["accuracy_mean"][-1],
        "accuracy_10_ci95": method["accuracy_ci95"][-1],
        "accuracy_by_step": method["accuracy_mean"],
        "val_curve": [[row["iteration"], row.get("val_accuracy_post")] for row in history],
        "train_seconds": training_seconds(history),
        "seconds_this_session": round(time.perf_counter() - started, 1),
    }
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def better_omniglot(
    small: bool = False, iterations: int | None = None, progress: bool = True, trained_only: bool = False
) -> dict[str, Any]:
    """Every run of the plan, trained and scored (or read from the cache).

    `trained_only` trains nothing: the result holds the finished runs and names the others under
    `missing`, for a look at a study that is still running.
    """
    test_tasks, steps = (10, 2) if small else (TEST_TASKS, TEST_STEPS)
    rows = plan(small, iterations)
    runs, missing = [], []
    for i, row in enumerate(rows, 1):
        config: TrainConfig = row.pop("config")
        folder = run_folder(config, test_tasks)
        if trained_only and not (folder / "result.json").exists():
            missing.append({**row, "key": folder.name})
            continue
        result = train_and_test(config, folder, test_tasks, steps)
        runs.append(
            {
                **row,
                "algorithm": config.algorithm,
                "algorithm_options": config.algorithm_options,
                "inner_steps": config.inner_steps,
                "key": folder.name,
                **result,
            }
        )
        if progress:
            print(
                f"[{i}/{len(rows)}] {row['label']} seed {row['seed']}: meta-test accuracy "
                f"{100 * result['accuracy']:.2f}% after {result['test_steps']} step(s)",
                file=sys.stderr,
                flush=True,
            )
    base = method_config("MAML", small=small, iterations=iterations)
    return {
        "settings": {
            "preset": PRESET,
            "iterations": base.iterations,
            "meta_batch": base.meta_batch,
            "test_tasks": test_tasks,
            "test_steps": steps,
            "seeds": sorted({r["seed"] for r in runs}),
            "seeded_methods": list(SEEDED),
            "ablation": {piece: off for piece, off in ABLATION.items()},
            "data": "minimal Omniglot (images_background_small1 + small2); test alphabet Japanese_(katakana)",
        },
        "runs": runs,
        "missing": missing,
        "methods": summary(runs, "methods"),
        "ablation": summary(runs, "ablation"),
    }


# ----- reading a result -----
# Two-sided 95% quantiles of Student's t by degrees of freedom (a few seeds are far from normal).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def seed_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean over seeds and the half-width of its t-based 95% interval (None for one seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, T95.get(n - 1, 1.96) * _std(values) / math.sqrt(n)


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summary(runs: list[dict[str, Any]], group: str) -> dict[str, dict[str, Any]]:
    """Per label: accuracies per seed, their mean and 95% interval over seeds, and the tasks' mean interval."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run["group"] == group:
            by_label.setdefault(run["label"], []).append(run)
    table = {}
    for label, rs in by_label.items():
        out: dict[str, Any] = {"seeds": [r["seed"] for r in rs], "inner_steps": rs[0]["inner_steps"]}
        for key in ("accuracy", "accuracy_10"):
            values = [r[key] for r in rs]
            mean, half = seed_interval(values)
            out[key] = mean
            out[f"{key}_by_seed"] = values
            out[f"{key}_seed_ci95"] = half
            out[f"{key}_task_ci95"] = sum(r[f"{key}_ci95"] for r in rs) / len(rs)
        out["train_seconds"] = sum(r["train_seconds"] for r in rs) / len(rs)
        table[label] = out
    return table


def val_spread(runs: list[dict[str, Any]], label: str, group: str = "methods") -> tuple[list[int], list[list[float]]]:
    """Validation curves of method `label` over its seeds: the iterations and one curve per seed."""
    rs = [r for r in runs if r["group"] == group and r["label"] == label]
    curves = [dict((it, a) for it, a in r["val_curve"] if a is not None) for r in rs]
    iterations = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return iterations, [[c[it] for it in iterations] for c in curves]


def stability(runs: list[dict[str, Any]], label: str, group: str = "methods") -> dict[str, float | int]:
    """How unsteady method `label`'s validation accuracy is, in points, from its seeds' curves.

    `spread`: standard deviation across seeds at each check, averaged (over the whole run and over
    its second half, `spread_late`); `jitter_late`: the mean change from one check to the next in
    the second half, averaged over seeds (a run can be steady across seeds and still oscillate).
    """
    iterations, curves = val_spread(runs, label, group)
    if not curves or len(iterations) < 4:
        raise ValueError(f"{label}: too few validation checks to judge stability")
    points = [[100 * a for a in curve] for curve in curves]
    half = len(iterations) // 2
    out: dict[str, float | int] = {"seeds": len(points)}
    jitter = [sum(abs(c[i] - c[i - 1]) for i in range(half + 1, len(c))) / (len(c) - half - 1) for c in points]
    out["jitter_late"] = sum(jitter) / len(jitter)
    if len(points) > 1:
        sd = [_std([c[i] for c in points]) for i in range(len(iterations))]
        out["spread"] = sum(sd) / len(sd)
        out["spread_late"] = sum(sd[half:]) / len(sd[half:])
    return out


STUDIES["better-omniglot"] = better_omniglot
