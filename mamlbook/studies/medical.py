"""Few-shot blood-cell classification (PBC) against the baselines a clinician would ask about: `mamlbook study medical`.

Every method is scored on the same meta-test tasks: for each image size (28 and 64 px), split (1, 2)
and K (1, 5 shots), 600 3-way tasks of the 3 cell types held out of meta-training, drawn once from
`TEST_SEED`, with 15 query images per type. The methods (`METHODS`), three seeds each:

- meta-learned on the 5 other types: MAML, Meta-SGD and prototypical networks (`pbc-3wKs` presets);
- pre-trained on every image of the 5 other types as a plain 5-way classifier, then a new head fitted
  to the K shots on the frozen features: a linear head (Chen et al. 2019's "Baseline"), nearest class
  mean, and Baseline++ (a cosine head, pre-trained with augmentation);
- from scratch: Conv4 from random weights, trained on the K shots alone;
- cross-domain (28 px only): MAML meta-trained on Omniglot, adapted to the cells in grey, stain as ink;
- the floor that learns nothing across tasks: nearest class mean and logistic regression on raw pixels.

Training is converged, not budgeted: every meta-learner trains until its validation accuracy stops
improving (`train.convergence.plateau`, checked every `CHUNK` iterations from `MIN_ITERATIONS` on, at
most `MAX_ITERATIONS`), every pre-trained network likewise by epochs. Costs are process CPU seconds.

Each trained model lives in the cache under a hash of its configuration; a cut-short run resumes
from its checkpoint, and a finished job's scores are kept beside it, so the study can be stopped
and restarted without losing work. Jobs run in order of priority (28 px, seed 0 of everything, then
the other seeds, then 64 px), `jobs` at a time in separate processes, so a study stopped by
`time_limit` holds whole comparisons and names the rest under `missing`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import cache_root
from ..data.pbc import CITATION, DOI_URL, LICENSE, pbc_files
from ..models import Conv4
from ..tasks import TaskBatch
from ..tasks.pbc import PBC, SPLIT_NAMES, split_classes
from ..train.checkpoint import load_checkpoint, save_checkpoint
from ..train.convergence import RULE, fit_until_converged, plateau
from ..train.presets import PRESETS, preset_config
from ..train.restore import restore_run
from ..train.runconfig import TrainConfig
from ..train.trainer import Trainer, trained_cpu_seconds
from .base import TEST_SEED
from .carry import carry_in, carry_out
from .medical_methods import (
    COSINE_SCALE,
    adapt_and_score,
    as_stain_ink,
    prototype_scores,
    raw_pixel_floor,
    score,
    scratch_and_score,
    transfer_and_score,
)
from .medical_report import assemble
from .pool import run_in_order, run_in_processes

FORMAT = 2
SIZES, SPLIT_IDS, SHOTS, SEEDS = (28, 64), (1, 2), (1, 5), (0, 1, 2)
N_WAY, K_QUERY, TEST_TASKS, TEST_STEPS = 3, 15, 600, 3
PRESET = {1: "pbc-3w1s", 5: "pbc-3w5s"}
# Converged training: check the validation curve every CHUNK iterations from MIN_ITERATIONS on.
MIN_ITERATIONS, MAX_ITERATIONS, CHUNK = 600, 4000, 200
META = {"MAML": "maml", "Meta-SGD": "metasgd", "ProtoNets": "protonet"}
METHODS = {
    "MAML": "meta-trained on the 5 other cell types; adapts every weight by SGD on the K shots",
    "Meta-SGD": "as MAML, with a learned inner learning rate per weight",
    "ProtoNets": "meta-trained embedding; each query goes to the nearest mean of a type's embedded shots",
    "Transfer (new head)": "5-way classifier trained on the other types' images; new linear head fitted to the K shots",
    "Baseline++": "as Transfer, pre-trained with a cosine head and augmentation; new cosine head fitted to the K shots",
    "Nearest class mean": "the Transfer model's features; each query goes to the closest mean of a type's shots",
    "From scratch": "Conv4 from random weights, trained on the K shots alone",
    "MAML from Omniglot": "MAML meta-trained on handwritten characters, adapted to grey cells (stain as ink)",
    "Raw pixels: nearest class mean": "no learning across tasks: the closest mean of a type's shots, in pixels",
    "Raw pixels: logistic regression": "no learning across tasks: a linear classifier fitted to the shots' pixels",
}
FLOORS = ("Raw pixels: nearest class mean", "Raw pixels: logistic regression")
PRETRAIN = {"epochs": 100, "min_epochs": 10, "min_points": 5, "batch_size": 50, "lr": 1e-3}
HEAD = {"lr": 0.01, "record": (0, 10, 25, 50, 100)}
SCRATCH = {"lr": 0.01, "record": (0, 2, 5, 10)}
HIDDEN = 32
SMALL = {
    "train": {"iterations": 2, "meta_batch": 2, "eval_every": 2, "eval_tasks": 2, "checkpoint_every": 2},
    "budget": {"min_iterations": 2, "max_iterations": 4, "chunk": 2},
    "hidden": 8,
    "sizes": (28,),
    "seeds": (0, 1),
    "test_tasks": 3,
    "test_steps": 2,
    "pretrain": {"epochs": 2, "min_epochs": 1, "min_points": 3, "batch_size": 100, "lr": 1e-3},
    "head": {"lr": 0.01, "record": (0, 3)},
    "scratch": {"lr": 0.01, "record": (0, 2)},
}


# ----- configurations -----
def meta_config(
    algorithm: str,
    split_id: int,
    k_shot: int,
    seed: int,
    variant: str,
    small: bool = False,
    iterations: int | None = None,
    size: int = 28,
) -> TrainConfig:
    """A PBC meta-training run: the K-shot preset on `split_id` at `size` px, trained for at most
    `iterations` (default `MAX_ITERATIONS`; the study stops it earlier once converged)."""
    changes: dict[str, Any] = dict(SMALL["train"]) if small else {"iterations": MAX_ITERATIONS}
    if iterations is not None:
        changes["iterations"] = iterations
    hidden = SMALL["hidden"] if small else HIDDEN
    task_options: dict[str, Any] = {"n_way": N_WAY, "split_id": split_id, "variant": variant}
    model_options: dict[str, Any] = {"n_way": N_WAY, "in_channels": 3, "hidden": hidden}
    if size != 28:  # keys of 28 px runs stay those of the presets' own size
        task_options["size"], model_options["image_size"] = size, size
    return preset_config(
        PRESET[k_shot],
        "cpu",
        algorithm=algorithm,
        seed=seed,
        task_options=task_options,
        model_options=model_options,
        **changes,
    )


def omniglot_config(k_shot: int, seed: int = 0, small: bool = False, iterations: int | None = None) -> TrainConfig:
    """MAML on Omniglot with the PBC runs' shape (3-way, K shots, Conv4 of the same width, 4 tasks per
    meta-batch), its own inner learning rate (the Omniglot preset's 0.4) and one grey input channel."""
    pbc = PRESETS[PRESET[k_shot]]["cpu"]
    changes: dict[str, Any] = {"k_query": pbc["k_query"], "meta_batch": pbc["meta_batch"], "iterations": MAX_ITERATIONS}
    if small:
        changes.update(SMALL["train"])
    if iterations is not None:
        changes["iterations"] = iterations
    return preset_config(
        "omniglot-5w1s",
        "cpu",
        k_shot=k_shot,
        seed=seed,
        task_options={"n_way": N_WAY},
        model_options={"n_way": N_WAY, "in_channels": 1, "hidden": SMALL["hidden"] if small else HIDDEN},
        **changes,
    )


def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT, **payload}, sort_keys=True).encode()).hexdigest()[:16]


def study_folder() -> Path:
    return cache_root() / "studies" / "medical"


# ----- the shared meta-test tasks -----
def test_tasks(split_id: int, k_shot: int, tasks: int, data=None, size: int = 28) -> tuple[PBC, TaskBatch]:
    """The meta-test tasks every method of (`split_id`, `k_shot`) is scored on: one seed for all sizes,
    so the same images make the tasks at 28 and at 64 px."""
    distribution = PBC(k_shot, K_QUERY, N_WAY, "test", split_id, data=data, size=size)
    return distribution, distribution.sample(tasks, torch.Generator().manual_seed(TEST_SEED))


# ----- jobs -----
class Study:
    """The plan and its shared pieces (data, test tasks), for one size of study (full or small)."""

    def __init__(self, small: bool, iterations: int | None, progress: bool) -> None:
        self.small, self.iterations, self.progress = small, iterations, progress
        self.files = pbc_files()
        self.variant = self.files.variant
        self.sizes = SMALL["sizes"] if small else SIZES
        self.seeds = SMALL["seeds"] if small else SEEDS
        self.tasks = SMALL["test_tasks"] if small else TEST_TASKS
        self.steps = SMALL["test_steps"] if small else TEST_STEPS
        self.hidden = SMALL["hidden"] if small else HIDDEN
        self.pretrain = SMALL["pretrain"] if small else PRETRAIN
        self.head = SMALL["head"] if small else HEAD
        self.scratch = SMALL["scratch"] if small else SCRATCH
        self.budget = (
            SMALL["budget"]
            if small
            else {"min_iterations": MIN_ITERATIONS, "max_iterations": MAX_ITERATIONS, "chunk": CHUNK}
        )
        self._tests: dict[tuple[int, int, int], tuple[PBC, TaskBatch]] = {}
        self._folders: dict[str, Path] = {}
        self._configs: dict[str, TrainConfig | None] = {}
        self._data: dict[int, Any] = {}

    def test(self, split_id: int, k_shot: int, size: int) -> tuple[PBC, TaskBatch]:
        if (split_id, k_shot, size) not in self._tests:
            distribution, batch = test_tasks(split_id, k_shot, self.tasks, self._data.get(size), size)
            self._data[size] = distribution.data
            self._tests[split_id, k_shot, size] = distribution, batch
        return self._tests[split_id, k_shot, size]

    def test_settings(self, size: int) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "steps": self.steps,
            "seed": TEST_SEED,
            "k_query": K_QUERY,
            "n_way": N_WAY,
            "variant": self.variant,
            "data": self.files.key[:16],
            "size": size,
        }

    def plan(self) -> list[dict[str, Any]]:
        """Every job, most important first: per size, the floors, then seed 0 of every method on every
        split, then the other seeds."""
        jobs: list[dict[str, Any]] = []
        for size in self.sizes:
            for split_id in SPLIT_IDS:
                for k in SHOTS:
                    jobs.append({"kind": "floor", "method": "Raw pixels", "size": size, "split": split_id, "k_shot": k})
            for seed in self.seeds:
                at = {"size": size, "seed": seed}
                for split_id in SPLIT_IDS:
                    for k in SHOTS:
                        for method, algorithm in META.items():
                            jobs.append({"kind": "meta", "method": method, "algorithm": algorithm, **at,
                                         "split": split_id, "k_shot": k})  # fmt: skip
                    for head in ("linear", "cosine"):
                        jobs.append({"kind": "pretrain", "method": "Transfer", "head": head, **at, "split": split_id})
                    for k in SHOTS:
                        jobs.append({"kind": "scratch", "method": "From scratch", **at, "split": split_id, "k_shot": k})
                if size == 28:  # Omniglot's characters are 28 px
                    for k in SHOTS:
                        jobs.append({"kind": "omniglot", "method": "MAML from Omniglot", **at, "k_shot": k})
        return jobs

    def config(self, job: dict[str, Any]) -> TrainConfig | None:
        """The job's training configuration (None for jobs that are not a Trainer run), built once:
        building one validates its tasks, which reads PBC's file list."""
        name = json.dumps(job, sort_keys=True)
        if name not in self._configs:
            self._configs[name] = self._config(job)
        return self._configs[name]

    def _config(self, job: dict[str, Any]) -> TrainConfig | None:
        if job["kind"] == "meta":
            return meta_config(
                job["algorithm"], job["split"], job["k_shot"], job["seed"], self.variant, self.small,
                self.iterations, job["size"],
            )  # fmt: skip
        if job["kind"] == "omniglot":
            return omniglot_config(job["k_shot"], job["seed"], self.small, self.iterations)
        return None

    def folder(self, job: dict[str, Any]) -> Path:
        """Where a job's model and scores live: trained models under their configuration's hash."""
        name = json.dumps(job, sort_keys=True)
        if name not in self._folders:
            self._folders[name] = self._folder(job)
        return self._folders[name]

    def _folder(self, job: dict[str, Any]) -> Path:
        config = self.config(job)
        if config is not None:
            settings = {k: v for k, v in config.to_dict().items() if not (k == "precision" and v == "fp32")}
            what: dict[str, Any] = {"config": settings, "budget": self.budget}
        elif job["kind"] == "pretrain":
            what = {"job": job, "hidden": self.hidden, "pretrain": self.pretrain, "data": self.files.key[:16]}
            what["rule"] = RULE
            if job["head"] == "cosine":
                what["cosine_scale"] = COSINE_SCALE
        else:
            what = {"job": job, "hidden": self.hidden, "scratch": self.scratch}
        return study_folder() / job["kind"] / _key(what)

    def results_path(self, job: dict[str, Any]) -> Path:
        extra: dict[str, Any] = {"head": self.head} if job["kind"] in ("pretrain", "floor") else {}
        if job["kind"] in ("meta", "omniglot"):  # a run stopped by another rule resumes and is scored again
            extra["rule"] = RULE
        return self.folder(job) / f"scores-{_key({'test': self.test_settings(job['size']), **extra})}.json"

    def run(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """Train (or finish training) the job's model, score it on the shared test tasks, keep the scores.

        A meta-learner's training time is read from its checkpoint wherever the folder holds one:
        rows scored before the count spanned resumes (a job stopped and resumed counted only its last
        stretch) are then corrected; rows whose folder is gone keep the time they were stored with."""
        path = self.results_path(job)
        folder = self.folder(job)
        if path.exists():
            rows = json.loads(path.read_text())
            if job["kind"] in ("meta", "omniglot") and (folder / "checkpoint.pt").exists():
                spent = round(trained_cpu_seconds(load_checkpoint(folder)), 1)
                rows = [{**row, "train_cpu_seconds": spent} for row in rows]
            return rows
        rows = getattr(self, f"_run_{job['kind']}")(job, folder)
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return rows

    def _row(self, method, job, k_shot, scored, correct: Tensor, started, **extra) -> dict[str, Any]:
        """One result row; `correct: [B, len(steps)]` per-task accuracies, kept at the headline step as
        `per_task` (the shared test tasks' order, the same for every method and seed)."""
        last = len(scored["steps"]) - 1 if "headline_index" not in extra else extra.pop("headline_index")
        return {
            "method": method,
            "size": job["size"],
            "split": extra.pop("split", job.get("split")),
            "k_shot": k_shot,
            "seed": job.get("seed", 0),
            "accuracy": scored["accuracy_by_step"][last],
            "accuracy_ci95": scored["ci95_by_step"][last],
            "headline_step": scored["steps"][last],
            **scored,
            "test_cpu_seconds": round(time.process_time() - started, 1),
            "tasks": self.tasks,
            **extra,
            "per_task": [round(float(v), 6) for v in correct[:, last].tolist()],
        }

    def _train(self, config: TrainConfig, folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
        """Train to convergence; the verdict, the history and the training's CPU seconds since the run
        began (`Trainer.cpu_seconds`: carried by the checkpoint, so a job stopped and resumed, on this
        machine or another, counts every stretch up to its last checkpoint, not only the last one)."""
        trainer = Trainer.resume(folder) if (folder / "checkpoint.pt").exists() else Trainer(config, folder)
        verdict = fit_until_converged(trainer, self.budget["min_iterations"], self.budget["chunk"])
        if not self.small:
            trainer.plot()
        return verdict, trainer.history, trainer.cpu_seconds

    def _meta_rows(self, job, folder, batches) -> list[dict[str, Any]]:
        config = self.config(job)
        verdict, history, cpu_seconds = self._train(config, folder)
        restored = restore_run(load_checkpoint(folder), folder)
        rate = 1.0 if restored.learned else config.inner_lr
        rows = []
        for split_id, batch, names in batches:
            started = time.process_time()
            if job["kind"] == "meta" and job["algorithm"] == "protonet":
                acc, pred = prototype_scores(restored.model, restored.params, batch)
                steps, headline = [0], 0
            else:
                acc, pred = adapt_and_score(
                    restored.model, restored.params, restored.rule, batch, self.steps, rate, config.inner_steps
                )
                steps, headline = list(range(self.steps + 1)), config.inner_steps
            rows.append(
                self._row(
                    job["method"],
                    job,
                    job["k_shot"],
                    score(acc, steps, pred, batch, names),
                    acc,
                    started,
                    headline_index=headline,
                    split=split_id,
                    train_cpu_seconds=round(cpu_seconds, 1),
                    iterations=verdict["stopped_at"],
                    max_iterations=config.iterations,
                    converged=verdict["converged"],
                    inner_lr=config.inner_lr,
                    key=folder.name,
                    val_curve=[[r["iteration"], r.get("val_accuracy_post")] for r in history],
                )  # fmt: skip
            )
        return rows

    def _run_meta(self, job, folder) -> list[dict[str, Any]]:
        distribution, batch = self.test(job["split"], job["k_shot"], job["size"])
        return self._meta_rows(job, folder, [(job["split"], batch, distribution.sampler.class_names)])

    def _run_omniglot(self, job, folder) -> list[dict[str, Any]]:
        batches = []
        for split_id in SPLIT_IDS:
            distribution, batch = self.test(split_id, job["k_shot"], job["size"])
            batches.append((split_id, as_stain_ink(batch), distribution.sampler.class_names))
        return self._meta_rows(job, folder, batches)

    def _run_pretrain(self, job, folder) -> list[dict[str, Any]]:
        path = folder / "pretrained.pt"
        size, head = job["size"], job["head"]
        distribution, _ = self.test(job["split"], SHOTS[0], size)
        net = Conv4(len(split_classes(job["split"])["train"]), 3, self.hidden, image_size=size)
        net = net.to(memory_format=torch.channels_last)
        if path.exists():
            payload = load_checkpoint(path)
            net.load_state_dict(payload["state"])
        else:
            net, gain, history = pretrain_classifier_for(distribution, self.hidden, job, self.pretrain)
            payload = {"kind": "pretrained-classifier", "state": net.state_dict(), "gain": gain,
                       "history": history, "job": job}  # fmt: skip
            folder.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, payload)
        history = payload["history"]
        verdict = plateau([h["val_accuracy"] for h in history], min_points=self.pretrain["min_points"])
        methods = (
            (("Transfer (new head)", "head", list(self.head["record"])), ("Nearest class mean", "ncm", [0]))
            if head == "linear"
            else (("Baseline++", "head", list(self.head["record"])),)
        )
        rows = []
        for k in SHOTS:
            distribution, batch = self.test(job["split"], k, size)
            names = distribution.sampler.class_names
            started = time.process_time()
            out = transfer_and_score(net, batch, self.head["record"], self.head["lr"], head)
            seconds = (time.process_time() - started) / len(methods)  # the features are shared
            for method, key, steps in methods:
                acc, pred = out[key]
                row = self._row(
                    method, job, k, score(acc, steps, pred, batch, names), acc, started,
                    train_cpu_seconds=history[-1]["cpu_seconds"], epochs=len(history),
                    converged=verdict.converged, key=folder.name,
                    val_curve=[[r["epoch"], r["val_accuracy"]] for r in history],
                )  # fmt: skip
                row["test_cpu_seconds"] = round(seconds, 1)
                rows.append(row)
        return rows

    def _run_scratch(self, job, folder) -> list[dict[str, Any]]:
        distribution, batch = self.test(job["split"], job["k_shot"], job["size"])
        started = time.process_time()
        acc, pred = scratch_and_score(batch, self.hidden, job["seed"], self.scratch["record"], self.scratch["lr"])
        scored = score(acc, list(self.scratch["record"]), pred, batch, distribution.sampler.class_names)
        return [self._row(job["method"], job, job["k_shot"], scored, acc, started, train_cpu_seconds=0.0,
                          key=folder.name)]  # fmt: skip

    def _run_floor(self, job, folder) -> list[dict[str, Any]]:
        distribution, batch = self.test(job["split"], job["k_shot"], job["size"])
        names = distribution.sampler.class_names
        started = time.process_time()
        out = raw_pixel_floor(batch, self.head["record"], self.head["lr"])
        seconds = (time.process_time() - started) / 2
        rows = []
        for method, key, steps in (
            ("Raw pixels: nearest class mean", "ncm", [0]),
            ("Raw pixels: logistic regression", "logistic", list(self.head["record"])),
        ):
            acc, pred = out[key]
            row = self._row(method, job, job["k_shot"], score(acc, steps, pred, batch, names), acc, started,
                            train_cpu_seconds=0.0, key=folder.name)  # fmt: skip
            row["test_cpu_seconds"] = round(seconds, 1)
            rows.append(row)
        return rows


def pretrain_classifier_for(distribution: PBC, hidden: int, job: dict[str, Any], settings: dict[str, Any]):
    """The pre-training of a `pretrain` job: Baseline (linear head, plain images) or Baseline++ (cosine head,
    augmented images), converged by epochs."""
    from .medical_methods import pretrain_classifier

    cosine = job["head"] == "cosine"
    return pretrain_classifier(
        distribution, hidden, job["seed"], head=job["head"], augmented=cosine, size=job["size"], **settings
    )


def _label(job: dict[str, Any]) -> str:
    where = f"split {job['split']} " if "split" in job else ""
    shots = f"{job['k_shot']}-shot " if "k_shot" in job else ""
    head = f"({job['head']} head) " if "head" in job else ""
    seed = f" seed {job['seed']}" if "seed" in job else ""
    return f"{job['method']} {head}{job['size']} px {where}{shots}{seed}".replace("  ", " ").strip()


# ----- running the plan, in one process or several -----
_WORKER_STUDY: dict[tuple, Study] = {}


def _run_in_worker(small: bool, iterations: int | None, job: dict[str, Any]) -> list[dict[str, Any]]:
    key = (small, iterations)
    if key not in _WORKER_STUDY:  # one Study per process: its decoded images and test tasks are reused
        _WORKER_STUDY[key] = Study(small, iterations, False)
    return _WORKER_STUDY[key].run(job)


def _run_jobs(study: Study, todo: list[tuple[int, dict]], jobs: int, deadline: float, progress: bool):
    """Run `todo` ((number, job) pairs in priority order), `jobs` at a time, starting none after `deadline`.
    Returns rows and errors by job number; a failed job is reported, not fatal."""
    rows: dict[int, list[dict[str, Any]]] = {}
    errors: dict[int, str] = {}
    total = len(study.plan())

    def announce(number: int, job: dict, seconds: float) -> None:
        if not progress:
            return
        if number in errors:
            print(f"[{number}/{total}] {_label(job)} failed: {errors[number]}", file=sys.stderr, flush=True)
            return
        summary = ", ".join(f"{r['method']} {r['k_shot']}-shot split {r['split']} {100 * r['accuracy']:.1f}%"
                            for r in rows[number])  # fmt: skip
        print(f"[{number}/{total}] {_label(job)}: {summary} ({seconds:.0f} s)", file=sys.stderr, flush=True)

    by_number = dict(todo)
    if jobs == 1:
        run_in_order([(n, (study.run, job)) for n, job in todo], deadline, rows, errors,
                     lambda n, seconds: announce(n, by_number[n], seconds), progress=progress)  # fmt: skip
        return rows, errors
    work = [(n, (_run_in_worker, study.small, study.iterations, job)) for n, job in todo]
    run_in_processes(work, jobs, deadline, rows, errors, lambda n, seconds: announce(n, by_number[n], seconds),
                     progress=progress)  # fmt: skip
    return rows, errors


def medical(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    trained_only: bool = False,
    time_limit: float | None = None,
    jobs: int = 1,
    reuse: str | Path | None = None,
    carry: str | Path | None = None,
) -> dict[str, Any]:
    """Every job of the plan, run (or read from the cache) in order of priority, `jobs` at a time.

    `trained_only` runs nothing: the result holds the finished jobs and lists the rest under
    `missing`. No job starts after `time_limit` seconds; those not started are listed as missing.
    `reuse` names an earlier result file of this study whose finished jobs count as done (`adopt`):
    a study continued on another machine starts where the file left off. `carry` names an archive of
    the unfinished jobs' folders (`studies.carry`): read at the start, rewritten at the end, so a job
    cut short resumes from its checkpoint on the next machine too.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    study = Study(small, iterations, progress)
    if reuse is not None:
        adopted = adopt(study, reuse)
        if progress:
            print(f"reused {adopted} finished jobs from {reuse}", file=sys.stderr, flush=True)
    deadline = time.perf_counter() + (time_limit if time_limit is not None else float("inf"))
    plan = study.plan()
    carry_in(carry, study_folder(), [study.folder(job) for job in plan], progress)
    done = {n for n, job in enumerate(plan, 1) if study.results_path(job).exists()}
    todo = [] if trained_only else [(n, job) for n, job in enumerate(plan, 1) if n not in done]
    fresh, errors = _run_jobs(study, todo, jobs, deadline, progress)
    runs, missing = [], []
    for number, job in enumerate(plan, 1):
        if number in fresh:
            runs += fresh[number]
        elif number in done:
            runs += study.run(job)
        else:
            missing.append({**job, "key": study.folder(job).name, **({"error": errors[number]} if number in errors
                                                                       else {})})  # fmt: skip
    unfinished = [study.folder(job) for n, job in enumerate(plan, 1) if n not in fresh and n not in done]
    carry_out(carry, study_folder(), unfinished, progress)
    return assemble(study, runs, missing, settings(study), METHODS, FLOORS)


def adopt(study: Study, path: str | Path) -> int:
    """Put the finished jobs of an earlier result file into the cache, where `run` finds them; returns how
    many. Every row names its job's cache folder (`key`), which hashes the job's whole configuration, so a
    row is taken only by the job it came from; a file made under other test tasks, another convergence
    rule or the other size of study is refused, naming what differs."""
    data = json.loads(Path(path).read_text())
    if data.get("study") != "medical" or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a medical study result of format {FORMAT}")
    ours = settings(study)
    differs = [name for name in ("convergence", "test_tasks", "test_seed", "k_query", "n_way", "pretrain", "head",
                                 "scratch", "hidden") if data["settings"].get(name) != ours[name]]  # fmt: skip
    if data.get("small") != study.small:
        differs.append("small")
    if differs:
        raise ValueError(f"{path} was made with other settings ({', '.join(differs)}): its jobs cannot be reused")
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in data["runs"]:
        by_key.setdefault(row["key"], []).append(row)
    adopted = 0
    for job in study.plan():
        path_ = study.results_path(job)
        rows = by_key.get(study.folder(job).name)
        if rows and not path_.exists():
            path_.parent.mkdir(parents=True, exist_ok=True)
            path_.write_text(json.dumps(rows, indent=1) + "\n")
            adopted += 1
    return adopted


def settings(study: Study) -> dict[str, Any]:
    """What the result says about how it was produced: tasks, budgets, data."""
    example = meta_config("maml", 1, 1, 0, study.variant, study.small, study.iterations)
    return {
        "n_way": N_WAY,
        "k_query": K_QUERY,
        "shots": list(SHOTS),
        "sizes": list(study.sizes),
        "seeds": list(study.seeds),
        "budget": dict(study.budget),
        "convergence": f"{RULE}; windows of at least 4 evaluations of a meta-learner, "
        f"{study.pretrain['min_points']} epochs of a pre-trained network",
        "meta_batch": example.meta_batch,
        "inner_lr": example.inner_lr,
        "inner_steps": example.inner_steps,
        "eval_every": example.eval_every,
        "eval_tasks": example.eval_tasks,
        "hidden": study.hidden,
        "test_tasks": study.tasks,
        "test_steps": study.steps,
        "test_seed": TEST_SEED,
        "pretrain": study.pretrain,
        "head": {**study.head, "record": list(study.head["record"])},
        "scratch": {**study.scratch, "record": list(study.scratch["record"])},
        "splits": {str(s): {**split_classes(s), "name": SPLIT_NAMES[s]} for s in SPLIT_IDS},
        "data": {
            "variant": study.variant,
            "images": len(study.files.paths),
            "per_class": study.files.counts(),
            "left_out": [list(pair) for pair in study.files.left_out],
            "source": CITATION,
            "doi": DOI_URL,
            "license": LICENSE,
        },
    }
