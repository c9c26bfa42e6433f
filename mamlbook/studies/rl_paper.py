"""MAML-TRPO on 2D navigation at the paper's scale, over three seeds: `mamlbook study rl-paper`.

Finn et al. (2017, section 5.3 and appendix A.2) at their settings (`TRAINING`): 20 tasks per
meta-batch, 20 trajectories per task and step, horizon 100, 500 meta-iterations, one inner step,
TRPO (KL bound 0.01, 10 conjugate-gradient iterations, damping 1e-5, backtracking by 0.8 up to 15
times), gamma 0.99, GAE lambda 1, a policy with two hidden layers of 100. The methods (`METHODS`),
seeds 0, 1 and 2 each:

- MAML with the surrogate, LVC and DiCE meta-gradients, each at inner step 0.1 (the paper's text)
  and 0.5 (the authors' released script);
- the pretrained baseline: the same TRPO on a mixture of goals, without an inner loop;
- the floor that learns nothing: the random initialization of each seed (every trained run of that
  seed starts from it), not trained.

Snapshots: every `SNAPSHOT_EVERY` iterations a run keeps its parameters and scores them by the mean
return after one inner step on 40 validation goals, drawn from their own seed; its *best* snapshot
is the one with the highest. The paper reports the best iteration (appendix A.2); choosing it on
goals the test never sees keeps the test return of the best snapshot from being optimistic.

Meta-test: the last and the best snapshot of every run, after 0..3 inner steps on the 40 fixed test
goals (`rl.evaluate.test_goals`), 40 trajectories per goal and step, adapted by the run's training
inner step; the pretrained baseline and the random initialization by each MAML step size, so every
MAML row has a baseline and a floor adapted by the same step. Every run sees the same random numbers
(common random numbers). Each goal's mean return is kept (`[steps + 1][goals]`); the tables and the
paired comparisons (`rl_paper_report`) are built from them, seeds as the outer unit.

The jobs, one per method and seed, run in order of priority (`GROUPS`: MAML with the surrogate at 0.1
and the pretrained baseline first, seed by seed), `jobs` at a time in separate processes with one
torch thread each (one job alone also runs on one thread, so the result does not depend on `jobs`).
Each job lives in the cache under a hash of its settings: checkpoint, snapshots, validation returns
and, once finished, its scores, so the study can be stopped and restarted without losing work. No job
starts after `time_limit`; a running job stops at its next snapshot, keeps its checkpoint and is
listed under `missing` with the iteration it reached, and the next call resumes it. Costs are process
CPU seconds (training, validation and test) and wall seconds, summed over the calls that ran a job.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import cache_root
from ..rl.evaluate import adaptation_returns, random_init, test_goals
from ..rl.trainer import Nav2DConfig, Nav2DTrainer, load_policy
from .base import TEST_SEED
from .carry import carry_in, carry_out
from .pool import run_in_order, run_in_processes
from .records import significant
from .rl_paper_report import (
    FORMAT,
    PRETRAINED,
    RANDOM,
    adopt,
    assemble,
    baseline_name,
    best_snapshot,
    settings,
    thinned,
)

TRAINING: dict[str, Any] = {  # every setting of Nav2DConfig but the method's and the seed, stated
    "env": "nav2d",
    "outer": "trpo",
    "meta_batch": 20,
    "trajectories": 20,
    "horizon": 100,
    "gamma": 0.99,
    "gae_lambda": 1.0,
    "hidden": (100, 100),
    "max_kl": 0.01,
    "cg_iters": 10,
    "cg_damping": 1e-5,
    "backtrack": 0.8,
    "max_backtracks": 15,
    "curvature": "gauss-newton",  # the fast path; it takes the same step as "exact"
    "ppo_lr": 1e-3,  # the three PPO settings are unused by TRPO
    "ppo_epochs": 5,
    "ppo_clip": 0.2,
    "iterations": 500,
    "checkpoint_every": 5,
}
METHODS: dict[str, dict[str, Any]] = {
    **{
        f"MAML ({estimator}, {lr:g})": {"estimator": estimator, "inner_steps": 1, "inner_lr": lr}
        for estimator in ("surrogate", "lvc", "dice")
        for lr in (0.1, 0.5)
    },
    PRETRAINED: {"estimator": "surrogate", "inner_steps": 0, "inner_lr": 0.1},  # no inner loop: the step is unused
}
# Job order: each group's methods seed by seed, the groups in turn.
GROUPS = (
    ("MAML (surrogate, 0.1)", PRETRAINED),
    ("MAML (surrogate, 0.5)",),
    ("MAML (lvc, 0.1)", "MAML (lvc, 0.5)"),
    ("MAML (dice, 0.1)", "MAML (dice, 0.5)"),
)
SEEDS = (0, 1, 2)
SNAPSHOT_EVERY = 25
CURVE_EVERY = 5
VALIDATION = {"goals": 40, "trajectories": 20, "steps": 1, "goal_seed": TEST_SEED + 7, "sampling_seed": TEST_SEED + 8}
TEST = {"goals": 40, "trajectories": 40, "steps": 3, "goal_seed": TEST_SEED, "sampling_seed": TEST_SEED + 1}
SMALL: dict[str, Any] = {
    "training": {"meta_batch": 3, "trajectories": 4, "horizon": 15, "iterations": 4},
    "snapshot_every": 2,
    "curve_every": 1,
    "seeds": (0, 1),
    "methods": ("MAML (surrogate, 0.1)", PRETRAINED),
    "validation": {"goals": 4, "trajectories": 4},
    "test": {"goals": 4, "trajectories": 4, "steps": 2},
}


def study_folder(small: bool = False, name: str = "rl-paper") -> Path:
    """The cache folder of study `name`'s jobs (the cheetah study keeps its own, `studies.cheetah`)."""
    return cache_root() / "studies" / (f"{name}-small" if small else name)


def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT, **payload}, sort_keys=True).encode()).hexdigest()[:16]


def _now() -> float:
    """The wall clock the time limit is measured on, shared by the worker processes."""
    return time.time()


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Study:
    """The plan and how one job is trained, validated and tested, for one size of study (full or small).

    `NAME` names the study (its cache folder and result file), `GROUPS` its job order. A method may set
    its own `iterations`, which then replace the study's for its jobs (`iterations_of`; the cheetah
    study's methods do)."""

    NAME = "rl-paper"
    GROUPS = GROUPS

    def __init__(self, small: bool = False, iterations: int | None = None, progress: bool = True) -> None:
        if iterations is not None and iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        self.small, self.progress = small, progress
        self.training = {**TRAINING, **(SMALL["training"] if small else {})}
        if iterations is not None:
            self.training["iterations"] = iterations
        self.snapshot_every = SMALL["snapshot_every"] if small else SNAPSHOT_EVERY
        self.curve_every = SMALL["curve_every"] if small else CURVE_EVERY
        self.seeds = SMALL["seeds"] if small else SEEDS
        self.methods = {name: METHODS[name] for name in SMALL["methods"]} if small else dict(METHODS)
        self.validation = {**VALIDATION, **(SMALL["validation"] if small else {})}
        self.test = {**TEST, **(SMALL["test"] if small else {})}
        self.eval_lrs = sorted({m["inner_lr"] for m in self.methods.values() if m["inner_steps"]})

    @property
    def target(self) -> int:
        return self.training["iterations"]

    def plan(self) -> list[dict[str, Any]]:
        """Every job, most informative first: each of `GROUPS` seed by seed."""
        jobs = []
        for group in self.GROUPS:
            names = [name for name in group if name in self.methods]
            for seed in self.seeds:
                jobs += [{"method": name, **self.methods[name], "seed": seed} for name in names]
        return jobs

    def iterations_of(self, job: dict[str, Any]) -> int:
        """The iterations a job trains for: its method's own where the method sets them, else the study's."""
        return job.get("iterations", self.target)

    def config(self, job: dict[str, Any]) -> Nav2DConfig:
        return Nav2DConfig(
            estimator=job["estimator"],
            inner_steps=job["inner_steps"],
            inner_lr=job["inner_lr"],
            seed=job["seed"],
            **{**self.training, "iterations": self.iterations_of(job)},
        )

    def folder(self, job: dict[str, Any]) -> Path:
        """Where a job lives: named by its method and seed, and a hash of everything that changes its run."""
        config = self.config(job)
        settings = {k: v for k, v in config.to_dict().items() if k not in ("iterations", "checkpoint_every")}
        what = {"config": settings, "curvature": config.curvature, "snapshot_every": self.snapshot_every}
        slug = "pretrained" if not job["inner_steps"] else f"{job['estimator']}-{job['inner_lr']:g}"
        return study_folder(self.small, self.NAME) / f"{slug}-seed{job['seed']}-{_key(what)}"

    def floor_folder(self, seed: int) -> Path:
        what = {"random init": seed, "env": self.training["env"], "hidden": list(self.training["hidden"])}
        return study_folder(self.small, self.NAME) / f"random-init-seed{seed}-{_key(what)}"

    def results_path(self, folder: Path, iterations: int | None = None) -> Path:
        """Where a job's scores are kept: named by a hash of how they are computed, the job's `iterations`
        (default: the study's) among it."""
        iterations = self.target if iterations is None else iterations
        what = {"test": self.test, "validation": self.validation, "eval_lrs": self.eval_lrs, "iterations": iterations,
                "curve_every": self.curve_every, "horizon": self.training["horizon"]}  # fmt: skip
        return folder / f"scores-{_key(what)}.json"

    def scores_path(self, job: dict[str, Any]) -> Path:
        """Where `job`'s scores are kept once it is finished."""
        return self.results_path(self.folder(job), self.iterations_of(job))

    def baseline(self, name: str, lr: float) -> str:
        """The row of the pretrained baseline or the random initialization (`name`) adapted by `lr`."""
        return baseline_name(name, lr)

    def described(self) -> dict[str, Any]:
        """What the result says about how it was produced; an earlier file is reused only if it says the same."""
        return settings(self)

    def lrs(self, job: dict[str, Any]) -> list[float]:
        """The steps a job's policy is adapted by when scored: its own, or each MAML step (the baseline)."""
        return [job["inner_lr"]] if job["inner_steps"] else list(self.eval_lrs)

    def reached(self, job: dict[str, Any]) -> int:
        """The iteration of a job's last snapshot (0 if it has none)."""
        return max(_snapshots(self.folder(job)), default=0)

    # ----- scoring -----
    def returns(self, policy, params, lr: float, goals: dict[str, Any], steps: int) -> Tensor:
        """Mean return per goal after 0 to `steps` inner steps of size `lr`: `[steps + 1, goals]`."""
        generator = torch.Generator().manual_seed(goals["sampling_seed"])
        return adaptation_returns(
            policy, params, test_goals(goals["goals"], goals["goal_seed"], self.training["env"]), steps,
            goals["trajectories"], lr,
            self.training["gamma"], self.training["gae_lambda"], generator, self.training["horizon"],
            env=self.training["env"],
        )  # fmt: skip

    def validate(self, policy, params, lr: float) -> float:
        """The mean return after one inner step on the validation goals: what picks the best snapshot."""
        return float(self.returns(policy, params, lr, self.validation, self.validation["steps"])[-1].mean())

    def test_returns(self, policy, params, lr: float) -> list[list[float]]:
        returns = self.returns(policy, params, lr, self.test, self.test["steps"])
        return [significant(row) for row in returns.tolist()]

    # ----- one job -----
    def run(self, job: dict[str, Any], deadline: float = math.inf) -> dict[str, Any]:
        """Train the job (resuming it) snapshot by snapshot, then score it; `{"rows": [...]}` when it is
        finished, `{"stopped": iteration}` when `deadline` (on `_now()`'s clock) passed first."""
        folder, target = self.folder(job), self.iterations_of(job)
        path = self.results_path(folder, target)
        if path.exists():
            return {"rows": json.loads(path.read_text())}
        cpu, wall = time.process_time(), time.perf_counter()
        trainer = self._trainer(job, folder)
        train_cpu = 0.0
        try:
            if (
                trainer.iteration
                and self._is_snapshot(trainer.iteration, target)
                and trainer.iteration not in _snapshots(folder)
            ):
                self._snapshot(job, folder, trainer.iteration)  # stopped between its checkpoint and its snapshot
            while trainer.iteration < target:
                started = time.process_time()
                following = (trainer.iteration // self.snapshot_every + 1) * self.snapshot_every
                trainer.fit(min(target, following), progress=False)
                train_cpu += time.process_time() - started
                validation = self._snapshot(job, folder, trainer.iteration)
                if self.progress:
                    shown = ", ".join(f"{v:.2f} at step {lr:g}" for lr, v in validation.items())
                    print(f"{self.NAME}: {_label(job)}: iteration {trainer.iteration}/{target}, validation "
                          f"{shown} ({time.perf_counter() - wall:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
                if trainer.iteration < target and _now() >= deadline:
                    return {"stopped": trainer.iteration}
            rows = self._score(job, folder, trainer.history)
        finally:
            cost = self._add_cost(folder, time.process_time() - cpu, train_cpu, time.perf_counter() - wall)
        for row in rows:
            row.update(cost)
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return {"rows": rows}

    def _is_snapshot(self, iteration: int, target: int) -> bool:
        return iteration % self.snapshot_every == 0 or iteration == target

    def _trainer(self, job: dict[str, Any], folder: Path) -> Nav2DTrainer:
        config = self.config(job)
        if not (folder / "checkpoint.pt").exists():
            return Nav2DTrainer(config, folder)
        trainer = Nav2DTrainer.resume(folder, iterations=config.iterations)
        fixed = lambda c: {k: v for k, v in c.to_dict().items() if k not in ("iterations", "checkpoint_every")}  # noqa: E731
        if fixed(trainer.config) != fixed(config) or trainer.config.curvature != config.curvature:
            raise ValueError(f"{folder} holds a run with other settings; remove it to train this study's")
        return trainer

    def _snapshot(self, job: dict[str, Any], folder: Path, iteration: int) -> dict[float, float]:
        """Keep the parameters of the checkpoint just written (at `iteration`) and score them on the
        validation goals; returns the validation return by step size."""
        _, policy, params = load_policy(folder)
        path = folder / "snapshots" / f"{iteration:05d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(params, partial)
        os.replace(partial, path)
        return self._validation(job, folder, policy, [iteration])[iteration]

    def _validation(self, job, folder, policy, iterations: list[int]) -> dict[int, dict[float, float]]:
        """The validation returns of the snapshots at `iterations` by each of the job's steps, computed once."""
        path = folder / f"validation-{_key(self.validation)}.json"
        kept = json.loads(path.read_text()) if path.exists() else {}
        for iteration in iterations:
            for lr in self.lrs(job):
                name = f"{lr:g}"
                if str(iteration) not in kept.get(name, {}):
                    params = torch.load(folder / "snapshots" / f"{iteration:05d}.pt", weights_only=True)
                    kept.setdefault(name, {})[str(iteration)] = significant([self.validate(policy, params, lr)])[0]
        path.write_text(json.dumps(kept, indent=1) + "\n")
        return {it: {lr: kept[f"{lr:g}"][str(it)] for lr in self.lrs(job)} for it in iterations}

    def _score(self, job: dict[str, Any], folder: Path, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The job's rows, one per step it is adapted by: last and best snapshot on the test goals."""
        target = self.iterations_of(job)
        snapshots = sorted(it for it in _snapshots(folder) if it <= target)
        if not snapshots or snapshots[-1] != target:
            raise ValueError(f"{folder} has no snapshot at iteration {target}; remove it to train the job again")
        _, policy, _ = load_policy(folder)
        validation = self._validation(job, folder, policy, snapshots)
        load = lambda it: torch.load(folder / "snapshots" / f"{it:05d}.pt", weights_only=True)  # noqa: E731
        last_params = load(snapshots[-1])
        rows = []
        for lr in self.lrs(job):
            curve = [validation[it][lr] for it in snapshots]
            best = best_snapshot(snapshots, curve)
            last = self.test_returns(policy, last_params, lr)
            rows.append({
                "method": job["method"] if job["inner_steps"] else self.baseline(PRETRAINED, lr),
                "algorithm": "maml" if job["inner_steps"] else PRETRAINED,
                "estimator": job["estimator"] if job["inner_steps"] else None,
                "inner_lr": lr,
                "seed": job["seed"],
                "key": folder.name,
                "iterations": snapshots[-1],
                "best_iteration": best,
                "snapshots": snapshots,
                "validation": curve,
                "curve": thinned(history[:target], self.curve_every),
                "last": last,
                "best": last if best == snapshots[-1] else self.test_returns(policy, load(best), lr),
            })  # fmt: skip
        return rows

    def _add_cost(self, folder: Path, cpu: float, train_cpu: float, wall: float) -> dict[str, float]:
        """This call's seconds added to what earlier calls spent on the job: the job's total."""
        path = folder / "cost.json"
        cost = json.loads(path.read_text()) if path.exists() else {}
        cost = {
            "cpu_seconds": round(cost.get("cpu_seconds", 0.0) + cpu, 1),
            "train_cpu_seconds": round(cost.get("train_cpu_seconds", 0.0) + train_cpu, 1),
            "wall_seconds": round(cost.get("wall_seconds", 0.0) + wall, 1),
        }
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cost) + "\n")
        return cost

    # ----- the floor -----
    def floor(self, seed: int) -> list[dict[str, Any]]:
        """The random initialization of `seed`, adapted by each MAML step: its last and best snapshot are it."""
        folder = self.floor_folder(seed)
        path = self.results_path(folder)
        if path.exists():
            return json.loads(path.read_text())
        cpu, wall = time.process_time(), time.perf_counter()
        job = {"estimator": "surrogate", "inner_steps": 1, "inner_lr": self.eval_lrs[0], "seed": seed}
        policy, params = random_init(self.config(job))  # the initialization of every run of `seed`
        rows = []
        for lr in self.eval_lrs:
            returns = self.test_returns(policy, params, lr)
            rows.append({
                "method": self.baseline(RANDOM, lr), "algorithm": RANDOM, "estimator": None, "inner_lr": lr,
                "seed": seed, "key": folder.name, "iterations": 0, "best_iteration": 0, "snapshots": [0],
                "validation": significant([self.validate(policy, params, lr)]), "curve": None,
                "last": returns, "best": returns,
            })  # fmt: skip
        cost = {"cpu_seconds": round(time.process_time() - cpu, 1), "train_cpu_seconds": 0.0,
                "wall_seconds": round(time.perf_counter() - wall, 1)}  # fmt: skip
        for row in rows:
            row.update(cost)
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return rows


def _snapshots(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in (folder / "snapshots").glob("*.pt"))


def _label(job: dict[str, Any]) -> str:
    return f"{job['method']} seed {job['seed']}"


# ----- running the plan, in one process or several -----
_WORKER_STUDY: dict[tuple, Study] = {}


def _run_in_worker(
    small: bool, iterations: int | None, progress: bool, job: dict, deadline: float, kind: type[Study] = Study
) -> dict:
    key = (kind, small, iterations, progress)
    if key not in _WORKER_STUDY:
        _WORKER_STUDY[key] = kind(small, iterations, progress)
    return _WORKER_STUDY[key].run(job, deadline)


def _run_jobs(study: Study, todo: list[tuple[int, dict]], iterations: int | None, jobs: int, deadline: float):
    """Run `todo` ((number, job) pairs in priority order), `jobs` at a time, starting none after `deadline`.
    Returns the outcomes and errors by job number; a failed job is reported, not fatal."""
    outcomes: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    total = len(study.plan())

    def announce(number: int, job: dict, seconds: float) -> None:
        if not study.progress:
            return
        if number in errors:
            what = f"failed: {errors[number]}"
        elif "stopped" in outcomes[number]:
            what = f"stopped at iteration {outcomes[number]['stopped']} (time limit; resumes from its checkpoint)"
        else:
            rows = outcomes[number]["rows"]
            what = "; ".join(f"{r['method']}: {sum(r['best'][1]) / len(r['best'][1]):.2f} after one step "
                             f"(best snapshot, iteration {r['best_iteration']})" for r in rows)  # fmt: skip
        print(f"[{number}/{total}] {_label(job)} {what} ({seconds:.0f} s)", file=sys.stderr, flush=True)

    by_number = dict(todo)
    if jobs == 1:
        with _one_thread():
            run_in_order([(n, (study.run, job, deadline)) for n, job in todo], deadline, outcomes, errors,
                         lambda n, seconds: announce(n, by_number[n], seconds),
                         progress=study.progress, now=_now)  # fmt: skip
        return outcomes, errors
    kind = type(study)
    work = [(n, (_run_in_worker, study.small, iterations, study.progress, job, deadline, kind)) for n, job in todo]
    run_in_processes(work, jobs, deadline, outcomes, errors, lambda n, seconds: announce(n, by_number[n], seconds),
                     progress=study.progress, now=_now)  # fmt: skip
    return outcomes, errors


def rl_paper(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    trained_only: bool = False,
    time_limit: float | None = None,
    jobs: int = 1,
    reuse: str | Path | None = None,
    carry: str | Path | None = None,
) -> dict[str, Any]:
    """Every job of the plan, run (or read from the cache) in order of priority, `jobs` at a time; the
    random initialization of each seed scored beside them.

    `trained_only` trains nothing: the result holds the finished jobs and lists the rest under
    `missing`. No job starts after `time_limit` seconds, and a running one stops at its next snapshot.
    `reuse` names an earlier result file of this study whose finished jobs count as done (`adopt`);
    `carry` an archive of the unfinished jobs' folders (`studies.carry`), read first and rewritten last,
    so a stopped job resumes from its checkpoint on another machine too.
    """
    check_options(jobs, time_limit)
    study = Study(small, iterations, progress)
    runs, missing, total = execute(study, iterations, trained_only, time_limit, jobs, reuse, carry)
    return assemble(settings(study), runs, missing, total, small)


def check_options(jobs: int, time_limit: float | None) -> None:
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if time_limit is not None and time_limit < 0:
        raise ValueError(f"time_limit must be at least 0 seconds, got {time_limit}")


def execute(
    study: Study,
    iterations: int | None,
    trained_only: bool,
    time_limit: float | None,
    jobs: int,
    reuse: str | Path | None,
    carry: str | Path | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Run `study`'s plan as `rl_paper` describes; returns the rows of the finished jobs followed by the
    floors', the jobs not finished (`missing`, with the iteration each reached) and the number of jobs.
    `carry` names an archive of the unfinished jobs' folders, read at the start and rewritten at the end."""
    if reuse is not None:
        adopted = adopt(study, reuse)
        if study.progress:
            print(f"reused {adopted} finished jobs from {reuse}", file=sys.stderr, flush=True)
    deadline = _now() + (time_limit if time_limit is not None else math.inf)
    with _one_thread():
        floors = [row for seed in study.seeds for row in study.floor(seed)]
    plan = study.plan()
    carry_in(carry, study_folder(study.small, study.NAME), [study.folder(job) for job in plan], study.progress)
    done = {n for n, job in enumerate(plan, 1) if study.scores_path(job).exists()}
    todo = [] if trained_only else [(n, job) for n, job in enumerate(plan, 1) if n not in done]
    outcomes, errors = _run_jobs(study, todo, iterations, jobs, deadline)
    runs, missing, unfinished = [], [], []
    for number, job in enumerate(plan, 1):
        outcome = outcomes.get(number) or (study.run(job) if number in done else {})
        if "rows" in outcome:
            runs += outcome["rows"]
            continue
        entry = {"method": job["method"], "seed": job["seed"], "key": study.folder(job).name,
                 "iteration": study.reached(job)}  # fmt: skip
        if number in errors:
            entry["error"] = errors[number]
        missing.append(entry)
        unfinished.append(study.folder(job))
    carry_out(carry, study_folder(study.small, study.NAME), unfinished, study.progress)
    return runs + floors, missing, len(plan)
