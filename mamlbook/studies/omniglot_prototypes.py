"""ProtoNets and ProtoMAML beside MAML on Omniglot 5-way 1-shot, each scored two ways:
`mamlbook study omniglot-prototypes`.

The jobs, in order of priority:

- MAML, seed 0, with exactly the configuration of the Omniglot chapter's stored run
  (`book/results/omniglot-5w1s-cpu/config.json`: the `omniglot-5w1s` CPU preset, 2,400
  meta-iterations of 8 tasks, one second-order inner step at 0.4). That run kept no weights; this one
  keeps its final weights (float32, under 1 MB) beside the result file, `omniglot-prototypes/maml-seed0.pt`,
  so the book can score it any way later;
- then ProtoNets (Snell et al. 2017) and ProtoMAML (Triantafillou et al. 2020), seeds 0, 1 and 2, seed
  by seed, so a study cut short holds both methods on the seeds it reached.

Every run trains the preset's 2,400 meta-iterations, not better-omniglot's 1,200: the comparisons
are against this MAML run, and an equal budget means the same number of Adam updates on the same
stream of 8-task meta-batches (the seed fixes the tasks). ProtoNets differs from MAML where its
method does: no inner loop (the preset's inner step and rate go unused) and no test steps, each query
going to the nearest prototype; it trains on the same 5-way 1-shot episodes as MAML, not Snell et al.'s
60-way ones, so that both methods see the same tasks. ProtoMAML is MAML with each task's head set from
its prototypes before the inner step.

Every run is scored on better-omniglot's 600 meta-test tasks of the held-out alphabet (the same tasks,
in the same order), after 10 inner steps (ProtoNets: none), per task, twice: transductively (all
queries of a task in one batch, so batch norm uses their statistics, as training does) and not
(each query alone in a batch with the support set, Nichol et al.'s protocol). Runs live in the cache
under a hash of their configuration; one interrupted resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import cache_root
from ..reports.paired import PairedComparison, paired_difference
from ..reports.run import META_TEST_SEED
from ..train.evaluate import mean_ci95
from ..train.presets import preset_config
from ..train.runconfig import TrainConfig
from ..train.trainer import Trainer
from . import better_omniglot as bo
from .better import config_key
from .carry import carry_in, carry_out
from .pool import run_in_order, run_in_processes

STUDY = "omniglot-prototypes"
PRESET = bo.PRESET
# label: algorithm
METHODS = {"MAML": "maml", "ProtoNets": "protonet", "ProtoMAML": "protomaml"}
REFERENCE = "MAML"
SEEDS = {"MAML": (0,), "ProtoNets": (0, 1, 2), "ProtoMAML": (0, 1, 2)}
SMALL_SEEDS = (0, 1)
# The small study's test: few tasks, as a non-transductive score costs one forward pass per query.
SMALL_TEST = {"tasks": 4, "steps": 2}
# The run whose weights the book keeps, and the file they go to beside the result file.
KEPT = ("MAML", 0)
KEPT_NAME = "maml-seed0.pt"
KEPT_LIMIT = 1_000_000  # bytes: the kept weights live in the repository
WEIGHTS = "weights.pt"  # every run's final weights, in its cache folder
MODES = ("transductive", "non_transductive")
BOOTSTRAP = {"confidence": 0.95, "resamples": 10_000, "seed": 0}
DIFFERS = {
    "MAML": "the Omniglot chapter's stored run: the omniglot-5w1s CPU preset as it is",
    "ProtoNets": "no inner loop and no test steps (each query goes to the nearest prototype; the preset's inner "
    "step and rate go unused); the same 5-way 1-shot episodes as MAML, not Snell et al.'s 60-way ones",
    "ProtoMAML": "MAML's settings, each task's head set from its prototypes before the inner step",
}


def method_config(
    label: str, seed: int = 0, small: bool = False, iterations: int | None = None, device: str = "cpu"
) -> TrainConfig:
    """The run of method `label`: the preset's CPU configuration (2,400 meta-iterations) with its algorithm."""
    extra = dict(bo.SMALL) if small else {}
    if iterations is not None:
        extra["iterations"] = iterations
    return preset_config(PRESET, "cpu", algorithm=METHODS[label], seed=seed, device=device, **extra)


def plan(small: bool = False, iterations: int | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """Every job as (label, seed, config), most important first: MAML seed 0, then seed by seed ProtoNets
    and ProtoMAML."""
    label, seed = KEPT
    rows: list[dict[str, Any]] = [{"label": label, "seed": seed}]
    seeds = SMALL_SEEDS if small else SEEDS["ProtoNets"]
    rows += [{"label": label, "seed": seed} for seed in seeds for label in ("ProtoNets", "ProtoMAML")]
    for row in rows:
        row["config"] = method_config(row["label"], row["seed"], small, iterations, device)
    return rows


def study_root() -> Path:
    """The cache folder that holds one folder per job of the study."""
    return cache_root() / "studies" / STUDY


def run_folder(config: TrainConfig, test_tasks: int) -> Path:
    return study_root() / config_key(config, test_tasks)


def test_steps(config: TrainConfig, steps: int) -> int:
    """The inner steps a run is scored after: `steps`, or none for a prototypical network."""
    return 0 if config.make_algorithm().prototypes else steps


def scores_path(folder: Path, config: TrainConfig, steps: int) -> Path:
    return folder / f"scores-{test_steps(config, steps)}-steps.json"


# ----- weights -----
def save_weights(params: dict[str, Tensor], path: Path) -> Path:
    """The parameters alone, as float32 CPU tensors (`torch.save` of a state dict), written atomically."""
    state = {name: value.detach().to("cpu", torch.float32).clone() for name, value in params.items()}
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)
    return path


def load_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """A weights file of `save_weights`: name -> float32 tensor; an error naming the file otherwise."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(v, Tensor) and v.dtype == torch.float32 for v in state.values()
    ):
        raise ValueError(f"{path} is not a file of float32 weights by name")
    return state


def load_kept(kept: Any, folder: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict[str, Tensor]]:
    """The kept run's model with its weights, and its parameters by name (detached), on `device`.

    `kept` is a result's `kept` record (`KeptWeights`); `folder` the folder of the result file, which
    `kept.file` is relative to.
    """
    config = TrainConfig.from_dict({**kept.config, "device": device})
    model = config.make_model()
    model.load_state_dict(load_weights(Path(folder) / kept.file))
    return model, {name: value.detach() for name, value in model.named_parameters()}


def keep_weights(folder: Path, config: TrainConfig, keep: Path) -> dict[str, Any] | None:
    """Copy the kept run's weights from its cache `folder` to `keep/KEPT_NAME`; its record, or None when
    the run has no weights file (a result reused without them)."""
    source = folder / WEIGHTS
    if not source.exists():
        return None
    size = source.stat().st_size
    if size >= KEPT_LIMIT:
        raise ValueError(f"{source} holds {size:,} bytes: the kept weights must stay under {KEPT_LIMIT:,}")
    keep.mkdir(parents=True, exist_ok=True)
    target = keep / KEPT_NAME
    shutil.copyfile(source, target)
    label, seed = KEPT
    return {
        "label": label,
        "seed": seed,
        "key": folder.name,
        "file": f"{keep.name}/{KEPT_NAME}",
        "bytes": size,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "dtype": "float32",
        "config": config.to_dict(),
    }


# ----- one job -----
def train_and_score(config: TrainConfig, folder: Path, test_tasks: int, steps: int) -> dict[str, Any]:
    """Train (or finish training) the run in `folder`, keep its weights, then score it on the study's
    tasks both ways; cached in the folder's scores file."""
    done = scores_path(folder, config, steps)
    if done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    trainer = Trainer.resume(folder) if (folder / "checkpoint.pt").exists() else Trainer(config, folder)
    history = trainer.fit(progress=False, plot=False)
    save_weights(trainer.params, folder / WEIGHTS)
    step = test_steps(config, steps)
    result: dict[str, Any] = {"test_steps": step, "iterations": config.iterations}
    for mode in MODES:
        per_task = bo.per_task_accuracy(folder, test_tasks, step, transductive=mode == "transductive")
        mean, ci95 = mean_ci95(torch.tensor(per_task))
        suffix = "" if mode == "transductive" else "_non_transductive"
        result |= {f"accuracy{suffix}": mean, f"accuracy{suffix}_ci95": ci95, f"per_task{suffix}": per_task}
    result |= {
        "val_curve": [[row["iteration"], row.get("val_accuracy_post")] for row in history],
        "train_seconds": bo.training_seconds(history),
        "seconds_this_session": round(time.perf_counter() - started, 1),
        "trained_on": bo.hardware(config.device),
    }
    done.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _score_in_worker(config: dict[str, Any], folder: str, test_tasks: int, steps: int) -> dict[str, Any]:
    return train_and_score(TrainConfig.from_dict(config), Path(folder), test_tasks, steps)


def _train_jobs(
    todo: list[tuple[int, dict[str, Any], TrainConfig, Path]],
    test_tasks: int,
    steps: int,
    jobs: int,
    deadline: float,
    progress: bool,
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """Run `todo` in order, `jobs` at a time (in processes when more than one), starting none after `deadline`."""
    results: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}

    def announce(i: int, _seconds: float) -> None:
        bo._announce(todo, i, results, errors, progress)

    if jobs == 1 or not todo:
        run_in_order([(i, (train_and_score, config, folder, test_tasks, steps)) for i, _, config, folder in todo],
                     deadline, results, errors, announce, progress=progress)  # fmt: skip
        return results, errors
    threads = max(1, (os.cpu_count() or 1) // jobs)
    work = [(i, (_score_in_worker, config.to_dict(), str(folder), test_tasks, steps)) for i, _, config, folder in todo]
    run_in_processes(work, jobs, deadline, results, errors, announce, threads=threads, progress=progress)
    return results, errors


# ----- the study -----
def omniglot_prototypes(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    trained_only: bool = False,
    device: str = "cpu",
    jobs: int = 1,
    time_limit: float | None = None,
    reuse: str | os.PathLike | None = None,
    keep: str | os.PathLike | None = None,
    carry: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Every job of the plan, trained and scored (or read from the cache), in order of priority.

    `trained_only` trains nothing and lists the jobs not finished under `missing`; no job starts after
    `time_limit` seconds (a job stopped mid-run resumes from its checkpoint on the next call); `reuse`
    counts the finished jobs of an earlier result file as done (`adopt`); `keep` is the folder, beside
    the result file, that the kept MAML run's weights are copied to (`mamlbook study` passes it); `carry`
    an archive of the unfinished jobs' folders (`studies.carry`), read first and rewritten last, so a job
    cut short resumes from its checkpoint on another machine.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if time_limit is not None and time_limit < 0:
        raise ValueError(f"time_limit must be at least 0 seconds, got {time_limit}")
    deadline = time.perf_counter() + (time_limit if time_limit is not None else math.inf)
    test_tasks, steps = (SMALL_TEST["tasks"], SMALL_TEST["steps"]) if small else (bo.TEST_TASKS, bo.TEST_STEPS)
    rows = plan(small, iterations, device)
    configs = [row.pop("config") for row in rows]
    folders = [run_folder(config, test_tasks) for config in configs]
    if reuse is not None:
        adopted = adopt(reuse, rows, configs, folders, small, test_tasks, steps)
        if progress:
            print(f"reused {adopted} finished jobs from {reuse}", file=sys.stderr, flush=True)
    carry_in(carry, study_root(), folders, progress)
    results: dict[int, dict[str, Any]] = {}
    todo = []
    for i, (row, config, folder) in enumerate(zip(rows, configs, folders, strict=True)):
        path = scores_path(folder, config, steps)
        if path.exists():
            results[i] = json.loads(path.read_text())
        elif not trained_only:
            todo.append((i, row, config, folder))
    if progress and todo:
        print(f"{len(todo)} of {len(rows)} jobs to train or score, {jobs} at a time", file=sys.stderr, flush=True)
    trained, errors = _train_jobs(todo, test_tasks, steps, jobs, deadline, progress)
    results.update(trained)
    carry_out(carry, study_root(), [folder for i, folder in enumerate(folders) if i not in results], progress)
    runs, missing = [], []
    kept = None
    for i, (row, config, folder) in enumerate(zip(rows, configs, folders, strict=True)):
        if i not in results:
            missing.append({**row, "key": folder.name, **({"error": errors[i]} if i in errors else {})})
            continue
        runs.append({**results[i], **row, "algorithm": config.algorithm, "device": config.device, "key": folder.name})
        if keep is not None and (row["label"], row["seed"]) == KEPT:
            kept = keep_weights(folder, config, Path(keep))
    options = {
        "--small": small,
        f"--iterations {iterations}": iterations is not None,
        f"--device {device}": device != "cpu",
    }
    command = " ".join([f"mamlbook study {STUDY}", *(option for option, given in options.items() if given)])
    return {
        "settings": settings(small, iterations, device, jobs, test_tasks, steps),
        "reading": (
            "runs: query accuracy per test task after test_steps inner steps, transductive (a task's queries in one "
            "batch) and non-transductive (each query alone with the support set); methods: the mean over seeds with "
            "its interval (paired_difference against a zero score), the transductive minus the non-transductive "
            "accuracy paired by seed and task, and each method minus MAML paired by task; every interval a "
            "bootstrap of reports.paired (hierarchical over seeds, then tasks; BCa over tasks for one seed each). "
            "MAML has one seed: a comparison with it holds this MAML model fixed, so its interval covers the "
            "other method's seeds and the tasks, not MAML retrained with another seed"
        ),
        "complete_with": (
            f"{command} (trains only the jobs under missing, resuming each from its checkpoint; the cache keeps "
            "the rest; on another machine add --reuse with this file and --carry with the archive of the "
            "unfinished jobs)"
            if missing
            else None
        ),
        "runs": runs,
        "missing": missing,
        "methods": summary(runs),
        "kept": kept,
    }


def settings(
    small: bool, iterations: int | None, device: str, jobs: int, test_tasks: int, steps: int
) -> dict[str, Any]:
    base = method_config(REFERENCE, small=small, iterations=iterations, device=device)
    seeds = {label: list(SEEDS[label] if label == REFERENCE or not small else SMALL_SEEDS) for label in METHODS}
    return {
        "preset": PRESET,
        "device": device,
        "jobs": jobs,
        "iterations": base.iterations,
        "meta_batch": base.meta_batch,
        "k_query": base.k_query,
        "inner_steps": base.inner_steps,
        "inner_lr": base.inner_lr,
        "test_tasks": test_tasks,
        "test_seed": META_TEST_SEED,
        "test_steps": {label: test_steps(method_config(label, small=small), steps) for label in METHODS},
        "seeds": seeds,
        "maml_config": base.to_dict(),
        "differs": dict(DIFFERS),
        "bootstrap": dict(BOOTSTRAP),
        "data": "minimal Omniglot (images_background_small1 + small2); test alphabet Japanese_(katakana)",
    }


# ----- reading the runs -----
def _interval(c: PairedComparison, seeds: list[int]) -> dict[str, Any]:
    return {
        "difference": c.difference,
        "low": c.low,
        "high": c.high,
        "decided": c.decided,
        "seeds": seeds,
        "tasks": c.n_tasks,
        "method": c.method,
    }


def _bootstrap(a: np.ndarray, b: np.ndarray) -> PairedComparison:
    return paired_difference(
        a, b, confidence=BOOTSTRAP["confidence"], n_resamples=BOOTSTRAP["resamples"], seed=BOOTSTRAP["seed"]
    )


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: each mode's mean over seeds with its interval, the transductive minus the non-transductive
    accuracy (paired by seed and task) and, for the other methods, the method minus MAML (paired by task)."""
    scores: dict[str, dict[str, np.ndarray]] = {}
    table: dict[str, dict[str, Any]] = {}
    for label in METHODS:
        rs = [r for r in runs if r["label"] == label]
        if not rs:
            continue
        scores[label] = {
            "transductive": np.array([r["per_task"] for r in rs]),
            "non_transductive": np.array([r["per_task_non_transductive"] for r in rs]),
        }
        zero = np.zeros((1, scores[label]["transductive"].shape[1]))
        seeds = [r["seed"] for r in rs]
        out: dict[str, Any] = {"seeds": seeds, "test_steps": rs[0]["test_steps"]}
        for mode, values in scores[label].items():
            c = _bootstrap(values, zero)
            out[mode] = {"mean": c.difference, "low": c.low, "high": c.high, "by_seed": values.mean(axis=1).tolist()}
        gap = scores[label]["transductive"] - scores[label]["non_transductive"]
        out["transductive_gap"] = _interval(_bootstrap(gap, zero), [len(rs), len(rs)])
        out["against_maml"] = {}
        if label != REFERENCE and REFERENCE in scores:
            reference = scores[REFERENCE]
            n_ref = len(reference["transductive"])
            for mode in MODES:
                c = _bootstrap(scores[label][mode], reference[mode])
                out["against_maml"][mode] = _interval(c, [len(rs), n_ref])
        seconds = [r["train_seconds"] for r in rs if r["device"] == "cpu"]
        out["train_seconds"] = sum(seconds) / len(seconds) if seconds else None
        table[label] = out
    return table


# ----- an earlier result file -----
def adopt(
    path: str | os.PathLike,
    rows: list[dict[str, Any]],
    configs: list[TrainConfig],
    folders: list[Path],
    small: bool,
    test_tasks: int,
    steps: int,
) -> int:
    """Put the finished jobs of an earlier result file into the cache, where the study finds them; returns
    how many. Each run names its cache folder (`key`, a hash of its configuration and test tasks), so a run
    is taken only by the job it came from; the kept weights travel with the MAML run when the file's
    `kept` weights sit beside it. A file of the other size of study or other test tasks is refused."""
    path = Path(path)
    data = json.loads(path.read_text())
    if data.get("study") != STUDY:
        raise ValueError(f"{path} is not a result of `mamlbook study {STUDY}`")
    theirs = data.get("settings", {})
    ours = {"test_tasks": test_tasks, "test_seed": META_TEST_SEED}
    differs = [name for name, value in ours.items() if theirs.get(name) != value]
    if data.get("small") != small:
        differs.append("small")
    if differs:
        raise ValueError(f"{path} was made with other settings ({', '.join(differs)}): its jobs cannot be reused")
    by_key = {run["key"]: run for run in data.get("runs", [])}
    kept = data.get("kept")
    adopted = 0
    for config, folder in zip(configs, folders, strict=True):
        run, target = by_key.get(folder.name), scores_path(folder, config, steps)
        if run is None or target.exists() or run.get("test_steps") != test_steps(config, steps):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(run, indent=1) + "\n")
        adopted += 1
        weights = path.parent / kept["file"] if kept and kept.get("key") == folder.name else None
        if weights is not None and weights.exists() and not (folder / WEIGHTS).exists():
            shutil.copyfile(weights, folder / WEIGHTS)
    return adopted
