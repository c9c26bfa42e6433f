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
Reptile with five steps (with one, its update is plain joint training). `full=True` is the
whole design: every method and every MAML++ piece switched off alone, over three seeds (36
runs); with a GPU, `device="cuda"` and `jobs` runs at a time make that a matter of minutes.
`confirm=True` tests the one variant the ablation singled out (MAML++ without cosine annealing)
against MAML on seeds the ablation never saw: a variant picked after looking at six rows needs
fresh seeds before its margin means anything.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import is_dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..config import cache_root
from ..meta.prototypes import embed, prototype_accuracy, prototype_head, prototype_logits, prototypes
from ..records import from_data, to_data
from ..reports.run import META_TEST_SEED, evaluate_run
from ..tasks import TaskBatch
from ..train.algorithms import MAMLPP_PIECES
from ..train.checkpoint import load_checkpoint
from ..train.evaluate import adaptation_curve, query_accuracy
from ..train.presets import preset_config
from ..train.restore import restore_run
from ..train.runconfig import DTYPES, TrainConfig
from ..train.trainer import Trainer
from .better import config_key
from .pool import run_in_order, run_in_processes
from .records import BetterOmniglotResult, PooledOmniglot, significant

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
# The full plan: every method over SEEDS, and every MAML++ piece switched off alone (the paper's table 2).
FULL_ABLATION: dict[str, dict[str, Any]] = {piece.upper(): off for piece, off in MAMLPP_PIECES.items()}
# The confirmation: the variant picked after the ablation, against MAML, on seeds no earlier run used.
CONFIRM_SEEDS = (3, 4, 5)
CONFIRM: dict[str, dict[str, Any] | None] = {"MAML": None, "MAML++ without CA": FULL_ABLATION["CA"]}
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
    device: str = "cpu",
) -> TrainConfig:
    """The run of method `label` on `device`; `switched_off` overrides its algorithm's options (the ablation)."""
    algorithm, changes = METHODS[label]
    extra = dict(SMALL) if small else {"iterations": ITERATIONS}
    if iterations is not None:
        extra["iterations"] = iterations
    if switched_off:
        extra["algorithm_options"] = dict(switched_off)
    return preset_config(PRESET, "cpu", algorithm=algorithm, seed=seed, device=device, **changes, **extra)


def plan(
    small: bool = False,
    iterations: int | None = None,
    device: str = "cpu",
    full: bool = False,
    confirm: bool = False,
) -> list[dict[str, Any]]:
    """Every run of the study as (group, label, seed, config) rows, seed by seed.

    The default plan is what a CPU can afford (see the module's docstring); `full` trains every
    method and every ablation over all seeds; `confirm`, only the confirmation's pair on its fresh
    seeds. Seed-major order means a study cut short by a time limit still holds whole seeds.
    """
    if confirm:
        if full:
            raise ValueError("confirm and full are separate studies: pick one")
        return _confirm_plan(small, iterations, device)
    seeds = SEEDS[:2] if small else SEEDS
    ablation = FULL_ABLATION if full else ABLATION
    rows = []
    for label in METHODS:
        for seed in seeds if full or label in SEEDED else seeds[:1]:
            rows.append({"group": "methods", "label": label, "seed": seed})
    for piece in ablation:
        for seed in seeds if full else seeds[:1]:
            rows.append({"group": "ablation", "label": f"MAML++ without {piece}", "piece": piece, "seed": seed})
    rows.sort(key=lambda row: row["seed"])  # stable: groups and methods keep their order within a seed
    for row in rows:
        off = ablation.get(row.get("piece", ""))
        label = "MAML++" if off else row["label"]
        row["config"] = method_config(label, row["seed"], small, iterations, switched_off=off, device=device)
    return rows


def _confirm_plan(small: bool, iterations: int | None, device: str) -> list[dict[str, Any]]:
    seeds = CONFIRM_SEEDS[:2] if small else CONFIRM_SEEDS
    return [
        {
            "group": "confirm",
            "label": label,
            "seed": seed,
            "config": method_config(
                "MAML++" if off else label, seed, small, iterations, switched_off=off, device=device
            ),
        }
        for seed in seeds
        for label, off in CONFIRM.items()
    ]


def paired_gap(table: dict[str, dict[str, Any]], label: str, against: str) -> dict[str, Any]:
    """`label` minus `against` in points, seed by seed over the seeds both have, and its 95% interval.

    Pairing by seed removes what the seed does to both (initialization, the stream of tasks), so
    the interval is the one for the difference, not two intervals to compare.
    """
    a, b = table[label], table[against]
    theirs = dict(zip(b["seeds"], b["accuracy_by_seed"], strict=True))
    seeds = [seed for seed in a["seeds"] if seed in theirs]
    deltas = [
        100 * (acc - theirs[seed])
        for seed, acc in zip(a["seeds"], a["accuracy_by_seed"], strict=True)
        if seed in theirs
    ]
    if not deltas:
        raise ValueError(f"{label} and {against} share no seed")
    mean, half = seed_interval(deltas)
    return {"seeds": seeds, "deltas": deltas, "mean": mean, "ci95": half}


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
    """Wall time of training: each resumed piece of a run restarts the clock, so add each piece's last reading."""
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


def hardware(device: str) -> str:
    """The chip a run trained on, for the record (a result's timings mean little without it)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def per_task_accuracy(folder: Path, test_tasks: int, step: int, transductive: bool = True) -> list[float]:
    """Each meta-test task's query accuracy after `step` inner steps: `evaluate_run`'s tasks, in its order.

    `evaluate_run` keeps means over tasks; comparing two methods task by task (paired) needs each
    task's score, on the same tasks for every method and seed, which its fixed seed gives.
    `transductive=False` scores each query alone with the support set (`query_accuracy`). As in
    `evaluate_run`, ProtoMAML starts each task from its prototype head, and a prototypical network,
    which takes no steps, is scored by its prototype classifier whatever `step`.
    """
    payload = load_checkpoint(folder)
    config = TrainConfig.from_dict(payload["config"])
    trained = restore_run(payload, folder)
    distribution = config.make_task().for_split("test")
    batch = distribution.sample(test_tasks, torch.Generator().manual_seed(META_TEST_SEED))
    batch = batch.to(config.device, DTYPES[config.dtype])
    rate = 1.0 if trained.learned else config.inner_lr  # as evaluate_run: learned rates live in the rule
    algorithm = config.make_algorithm()
    if algorithm.prototypes:
        return significant(prototype_task_accuracy(trained.model, trained.params, batch, transductive).tolist())
    init = partial(prototype_head, trained.model) if algorithm.prototype_head else None
    if not transductive:
        accuracy = query_accuracy(
            trained.model, trained.params, batch, distribution.loss, step, rate, trained.rule, False, init
        )
        return significant(accuracy.tolist())
    curves = adaptation_curve(
        trained.model,
        trained.params,
        batch,
        distribution.loss,
        step,
        rate,
        with_accuracy=True,
        rule=trained.rule,
        init=init,
    )
    return significant(curves["accuracy"][:, step].tolist())


def prototype_task_accuracy(
    model: torch.nn.Module, params: Mapping[str, torch.Tensor], batch: TaskBatch, transductive: bool = True
) -> torch.Tensor:
    """A prototypical network's query accuracy `[B]` per task. Transductive: support and queries embedded
    in one batch (`meta.prototypes.prototype_accuracy`, as training and `evaluate_run` do); otherwise each
    query embedded alone in a batch of the support set and that query, the prototypes taken from that
    batch's support rows (Nichol et al.'s protocol, as `query_outputs`)."""
    if transductive:
        return prototype_accuracy(model, params, batch)[1]
    accuracies = []
    with torch.no_grad():
        for sx, sy, qx, qy in zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y, strict=True):
            n_way, shots = int(sy.max()) + 1, len(sx)
            logits = []
            for j in range(len(qx)):
                features = embed(model, params, torch.cat([sx, qx[j : j + 1]]))
                logits.append(prototype_logits(features[shots:], prototypes(features[:shots], sy, n_way)))
            accuracies.append((torch.cat(logits).argmax(-1) == qy).float().mean())
    return torch.stack(accuracies)


def train_and_test(config: TrainConfig, folder: Path, test_tasks: int, steps: int) -> dict[str, Any]:
    """Train (or finish training) the run in `folder`, then meta-test it; cached in `folder/result.json`.

    A result kept before runs had per-task scores is scored again from the finished checkpoint.
    """
    done = folder / "result.json"
    previous = json.loads(done.read_text()) if done.exists() else None
    if previous is not None and "per_task" in previous:
        return previous
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
        "trained_on": (previous or {}).get("trained_on") or hardware(config.device),
        "per_task": per_task_accuracy(folder, test_tasks, trained_steps),
    }
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _train_in_worker(config: dict[str, Any], folder: str, test_tasks: int, steps: int) -> dict[str, Any]:
    return train_and_test(TrainConfig.from_dict(config), Path(folder), test_tasks, steps)


def _train_all(
    todo: list[tuple[int, dict[str, Any], TrainConfig, Path]],
    test_tasks: int,
    steps: int,
    jobs: int,
    deadline: float,
    progress: bool = False,
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """Train the runs in `todo`, `jobs` at a time, starting none after `deadline` (a perf_counter value).

    Returns the results and the errors, by row index. A run that fails is reported, not fatal:
    the others' hours of training are worth keeping.
    """
    results: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    if jobs == 1:
        run_in_order([(i, (train_and_test, config, folder, test_tasks, steps)) for i, _, config, folder in todo],
                     deadline, results, errors, lambda i, _seconds: _announce(todo, i, results, errors, progress),
                     progress=progress)  # fmt: skip
        return results, errors
    threads = max(1, (os.cpu_count() or 1) // jobs)
    work = [(i, (_train_in_worker, config.to_dict(), str(folder), test_tasks, steps)) for i, _, config, folder in todo]
    run_in_processes(work, jobs, deadline, results, errors,
                     lambda i, _seconds: _announce(todo, i, results, errors, progress),
                     threads=threads, progress=progress)  # fmt: skip
    return results, errors


def _announce(todo: list, i: int, results: dict, errors: dict, progress: bool) -> None:
    if not progress:
        return
    row = next(r for j, r, _, _ in todo if j == i)
    name = f"{row['label']} seed {row['seed']}"
    if i in errors:
        print(f"{name} failed: {errors[i]}", file=sys.stderr, flush=True)
    else:
        result = results[i]
        print(
            f"{name}: meta-test accuracy {100 * result['accuracy']:.2f}% after {result['test_steps']} step(s) "
            f"({result['train_seconds']:.0f} s of training; {len(results) + len(errors)}/{len(todo)} trained)",
            file=sys.stderr,
            flush=True,
        )


def better_omniglot(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    trained_only: bool = False,
    device: str = "cpu",
    full: bool = False,
    jobs: int = 1,
    time_limit: float | None = None,
    confirm: bool = False,
) -> dict[str, Any]:
    """Every run of the plan, trained and scored (or read from the cache).

    `trained_only` trains nothing: the result holds the finished runs and names the others under
    `missing`, for a look at a study that is still running. `jobs` trains that many runs at once
    (in separate processes: on a GPU, where one small run leaves the card mostly idle); no run
    starts after `time_limit` seconds, and those not started are listed as missing.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if time_limit is not None and time_limit < 0:
        raise ValueError(f"time_limit must be at least 0 seconds, got {time_limit}")
    started = time.perf_counter()
    deadline = started + time_limit if time_limit is not None else math.inf
    test_tasks, steps = (10, 2) if small else (TEST_TASKS, TEST_STEPS)
    rows = plan(small, iterations, device, full, confirm)
    configs = [row.pop("config") for row in rows]
    folders = [run_folder(config, test_tasks) for config in configs]
    results: dict[int, dict[str, Any]] = {}
    todo = []
    stale: dict[int, dict[str, Any]] = {}  # scored before per-task scores: rescored when time allows
    for i, folder in enumerate(folders):
        saved = json.loads((folder / "result.json").read_text()) if (folder / "result.json").exists() else None
        if saved is not None and ("per_task" in saved or trained_only):
            results[i] = saved
        elif not trained_only:
            todo.append((i, rows[i], configs[i], folder))
            if saved is not None:
                stale[i] = saved
    if progress and todo:
        print(f"{len(todo)} of {len(rows)} runs to train or score, {jobs} at a time", file=sys.stderr, flush=True)
    trained, errors = _train_all(todo, test_tasks, steps, jobs, deadline, progress)
    results.update(trained)
    for i, saved in stale.items():
        results.setdefault(i, saved)
    runs, missing = [], []
    for i, (row, config, folder) in enumerate(zip(rows, configs, folders, strict=True)):
        if i not in results:
            missing.append({**row, "key": folder.name, **({"error": errors[i]} if i in errors else {})})
            continue
        result = results[i]
        runs.append(
            {
                **row,
                "algorithm": config.algorithm,
                "algorithm_options": config.algorithm_options,
                "inner_steps": config.inner_steps,
                "device": config.device,
                "key": folder.name,
                **result,
            }
        )
    base = method_config("MAML", small=small, iterations=iterations, device=device)
    return {
        "settings": {
            "preset": PRESET,
            "device": device,
            "full": full,
            "confirm": confirm,
            "jobs": jobs,
            "iterations": base.iterations,
            "meta_batch": base.meta_batch,
            "test_tasks": test_tasks,
            "test_steps": steps,
            "seeds": sorted({r["seed"] for r in runs}),
            "seeded_methods": list(METHODS) if full else list(SEEDED),
            "ablation": dict(FULL_ABLATION if full else ABLATION),
            "data": "minimal Omniglot (images_background_small1 + small2); test alphabet Japanese_(katakana)",
        },
        "runs": runs,
        "missing": missing,
        "methods": summary(runs, "methods"),
        "ablation": summary(runs, "ablation"),
        "confirm": summary(runs, "confirm"),
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
        seconds = [r["train_seconds"] for r in rs if r.get("train_seconds") is not None]
        out["train_seconds"] = sum(seconds) / len(seconds) if seconds else None
        out["runs"] = sum(r.get("replicates", 1) for r in rs)
        table[label] = out
    return table


def _device(run: dict[str, Any]) -> str:
    return run.get("device", "cpu")  # results written before runs recorded their device were all CPU runs


def pool(*results: BetterOmniglotResult | dict[str, Any]) -> PooledOmniglot:
    """Several study results (say, one per device) read as one: seeds stay the unit of evidence.

    A seed fixes a run's initialization and its stream of tasks, so the same configuration and seed
    trained on another device is a replicate that differs only in floating-point rounding, not an
    extra seed. Replicates are averaged into one row per (group, label, seed) before the seeds'
    interval is taken; `replicates` lists them side by side, which measures what rounding alone
    does to a run. Training time counts CPU runs only (GPU runs shared their card).
    """
    results = tuple(to_data(r) if is_dataclass(r) else r for r in results)
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for result in results:
        for run in result["runs"]:
            groups.setdefault((run["group"], run["label"], run["seed"]), []).append(run)
    runs, pairs = [], []
    for (group, label, seed), rs in groups.items():
        row: dict[str, Any] = {"group": group, "label": label, "seed": seed, "inner_steps": rs[0]["inner_steps"]}
        for key in ("accuracy", "accuracy_ci95", "accuracy_10", "accuracy_10_ci95"):
            row[key] = sum(r[key] for r in rs) / len(rs)
        cpu = [r["train_seconds"] for r in rs if _device(r) == "cpu"]
        row["train_seconds"] = sum(cpu) / len(cpu) if cpu else None
        row["replicates"] = len(rs)
        row["devices"] = sorted({_device(r) for r in rs})
        runs.append(row)
        if len(row["devices"]) > 1:
            accuracy = {_device(r): r["accuracy"] for r in rs}
            pairs.append(
                {
                    "group": group,
                    "label": label,
                    "seed": seed,
                    "accuracy": accuracy,
                    "difference": max(accuracy.values()) - min(accuracy.values()),
                }
            )
    runs.sort(key=lambda row: row["seed"])  # stable: per method, seeds in order whatever file they came from
    found = set(groups)
    missing: dict[tuple[str, str, int], dict[str, Any]] = {}
    for result in results:
        for m in result.get("missing", []):
            key = (m["group"], m["label"], m["seed"])
            if key not in found:
                missing.setdefault(key, {"group": m["group"], "label": m["label"], "seed": m["seed"]})
    pooled = {
        "runs": runs,
        "methods": summary(runs, "methods"),
        "ablation": summary(runs, "ablation"),
        "replicates": pairs,
        "missing": list(missing.values()),
    }
    return from_data(PooledOmniglot, pooled, "pooled better-omniglot results")


def val_spread(runs: list[Any], label: str, group: str = "methods") -> tuple[list[int], list[list[float]]]:
    """Validation curves of method `label` over its seeds: the iterations and one curve per seed.

    `runs` are a result's typed runs (`OmniglotRun`) or their dicts.
    """
    runs = [to_data(r) if is_dataclass(r) else r for r in runs]
    rs = [r for r in runs if r["group"] == group and r["label"] == label]
    curves = [dict((it, a) for it, a in r["val_curve"] if a is not None) for r in rs]
    iterations = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return iterations, [[c[it] for it in iterations] for c in curves]


def stability(runs: list[Any], label: str, group: str = "methods") -> dict[str, float | int]:
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
