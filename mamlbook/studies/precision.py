"""Reduced precision in MAML, measured: `mamlbook study precision`.

Two questions, on Omniglot 5-way 1-shot with Conv4 (the `omniglot-5w1s` CPU preset):

1. How much of the meta-gradient do bfloat16 and float16 matrix products keep? For MAML,
   first-order MAML and MAML++ at 1 and 5 inner steps, the meta-gradient at the initialization in
   float32 parameters with `precision="bf16"`/`"fp16"` (and in plain float32) against the same
   computation in float64, on several meta-batches: relative error and cosine. Two yardsticks sit
   beside it: the same precision's error on an ordinary gradient of the network (one loss, no inner
   loop), which mixed-precision training is known to survive; and how far two meta-batches'
   float64 meta-gradients lie apart, the sampling noise every meta-step already carries.
2. Does it change what training reaches? MAML trained in bf16 and in float32 from the same seeds
   for the same iterations, each scored (in float32) on the same 600 meta-test tasks, compared by
   the paired difference of per-task accuracies with seeds as the outer unit (`reports.paired`).

Runs live in the cache under their configuration's hash and resume, so the study can be stopped
(`time_limit`) and restarted; runs not started are listed as missing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import cache_root
from ..tasks import TaskBatch
from ..train.presets import preset_config
from ..train.runconfig import TrainConfig
from ..train.trainer import Trainer
from .better import config_key
from .better_omniglot import _train_all
from .records import significant


def _sig(value: float) -> float:
    return significant([value])[0]

PRESET = "omniglot-5w1s"
# label: (algorithm, changes to the preset). MAML++ without DA: its first-order phase would make the
# probe's meta-gradient first order at iteration 0, and the second-order term is what is in question.
ALGORITHMS: dict[str, tuple[str, dict[str, Any]]] = {
    "MAML": ("maml", {}),
    "first-order MAML": ("fomaml", {}),
    "MAML++": ("mamlpp", {"algorithm_options": {"da": False}}),
}
STEPS = (1, 5)
PROBE_PRECISIONS = ("fp32", "bf16", "fp16")
PROBE_BATCHES = 3  # meta-batches per setting: errors are averaged, and pairs of them give the noise
PROBE_SEED = 40_000
TRAIN_PRECISIONS = ("fp32", "bf16")
SEEDS = (0, 1, 2)
ITERATIONS = 1200  # the budget of the better-omniglot study's MAML runs
TEST_TASKS = 600
SMALL = {"iterations": 2, "meta_batch": 2, "eval_every": 1, "eval_tasks": 2, "checkpoint_every": 1, "k_query": 1}


def probe_config(algorithm: str, changes: dict[str, Any], steps: int, dtype: str, precision: str, small: bool):
    extra = {"meta_batch": 2, "k_query": 1} if small else {}
    return preset_config(
        PRESET, "cpu", algorithm=algorithm, inner_steps=steps, dtype=dtype, precision=precision, **changes, **extra
    )


def _meta_gradient(config: TrainConfig, batch: TaskBatch) -> torch.Tensor:
    """The run's meta-gradient on `batch` at its initialization, flattened, in float64."""
    trainer = Trainer(config)
    leaves = list(trainer.meta_parameters().values())
    loss = trainer.meta_objective(batch.to(config.device, leaves[0].dtype))
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)]
    return torch.cat([g.double().flatten() for g in grads])


def _plain_gradient(config: TrainConfig, batch: TaskBatch) -> torch.Tensor:
    """An ordinary gradient of the same network: the query loss of the first task, no inner loop."""
    from ..precision import reduced_precision

    trainer = Trainer(config)
    dtype = next(iter(trainer.params.values())).dtype
    x, y = batch.query_x[0].to(dtype), batch.query_y[0]
    with reduced_precision(config.precision, config.device):
        loss = F.cross_entropy(trainer.model(x), y)
    grads = torch.autograd.grad(loss.to(dtype), list(trainer.model.parameters()))
    return torch.cat([g.double().flatten() for g in grads])


def _compare(estimate: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    error = ((estimate - truth).norm() / truth.norm()).item()
    cosine = F.cosine_similarity(estimate, truth, dim=0).item()
    return error, cosine


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def gradient_errors(small: bool = False, progress: bool = False) -> dict[str, Any]:
    """Each (algorithm, steps, precision)'s meta-gradient error against float64, with the yardsticks."""
    batches = [
        preset_config(PRESET, "cpu", **({"meta_batch": 2, "k_query": 1} if small else {}))
        .make_task()
        .sample(
            2 if small else preset_config(PRESET, "cpu").meta_batch,
            torch.Generator().manual_seed(PROBE_SEED + i),
        )
        for i in range(2 if small else PROBE_BATCHES)
    ]
    steps_list = (1, 2) if small else STEPS
    rows, noise = [], []
    for label, (algorithm, changes) in ALGORITHMS.items():
        for steps in steps_list:
            truths = [
                _meta_gradient(probe_config(algorithm, changes, steps, "float64", "fp32", small), b) for b in batches
            ]
            pairs = [(i, j) for i in range(len(truths)) for j in range(i + 1, len(truths))]
            spread = _mean([((truths[i] - truths[j]).norm() / truths[i].norm()).item() for i, j in pairs])
            noise.append({"algorithm": label, "steps": steps, "between_batches": _sig(spread)})
            for precision in PROBE_PRECISIONS:
                config = probe_config(algorithm, changes, steps, "float32", precision, small)
                measured = [_compare(_meta_gradient(config, b), t) for b, t in zip(batches, truths, strict=True)]
                rows.append(
                    {
                        "algorithm": label,
                        "steps": steps,
                        "precision": precision,
                        "relative_error": _sig(_mean([e for e, _ in measured])),
                        "cosine": _sig(_mean([c for _, c in measured])),
                    }
                )
                if progress:
                    print(f"  {label} steps={steps} {precision}: error {rows[-1]['relative_error']:.2e}", flush=True)
    plain = []
    for precision in PROBE_PRECISIONS:
        truth = [_plain_gradient(probe_config("maml", {}, 1, "float64", "fp32", small), b) for b in batches]
        config = probe_config("maml", {}, 1, "float32", precision, small)
        measured = [_compare(_plain_gradient(config, b), t) for b, t in zip(batches, truth, strict=True)]
        plain.append(
            {
                "precision": precision,
                "relative_error": _sig(_mean([e for e, _ in measured])),
                "cosine": _sig(_mean([c for _, c in measured])),
            }
        )
    return {"meta_batches": len(batches), "rows": rows, "plain_gradient": plain, "noise": noise}


def train_config(precision: str, seed: int, small: bool = False, iterations: int | None = None) -> TrainConfig:
    extra = dict(SMALL) if small else {"iterations": ITERATIONS}
    if iterations is not None:
        extra["iterations"] = iterations
    return preset_config(PRESET, "cpu", seed=seed, precision=precision, **extra)


def run_folder(config: TrainConfig, test_tasks: int) -> Path:
    return cache_root() / "studies" / "precision" / config_key(config, test_tasks)


def training(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = False,
    jobs: int = 1,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """MAML trained in each of TRAIN_PRECISIONS over SEEDS (resuming cached runs), scored per task."""
    import json

    test_tasks, steps = (10, 1) if small else (TEST_TASKS, 1)
    todo, done, rows = [], {}, []
    seeds = SEEDS[:2] if small else SEEDS
    for seed in seeds:  # seed-major: a study cut short holds whole seeds
        for precision in TRAIN_PRECISIONS:
            config = train_config(precision, seed, small, iterations)
            folder = run_folder(config, test_tasks)
            row = {"label": precision, "seed": seed, "precision": precision}
            i = len(rows)
            rows.append((row, config, folder))
            saved = folder / "result.json"
            if saved.exists() and "per_task" in (result := json.loads(saved.read_text())):
                done[i] = result
            else:
                todo.append((i, row, config, folder))
    deadline = time.perf_counter() + time_limit if time_limit is not None else math.inf
    trained, errors = _train_all(todo, test_tasks, steps, jobs, deadline, progress)
    done.update(trained)
    runs, missing = [], []
    for i, (row, config, _) in enumerate(rows):
        if i in done:
            result = done[i]
            runs.append(
                {
                    "precision": row["precision"],
                    "seed": row["seed"],
                    "iterations": config.iterations,
                    "accuracy": result["accuracy"],
                    "accuracy_ci95": result["accuracy_ci95"],
                    "train_seconds": result["train_seconds"],
                    "trained_on": result["trained_on"],
                    "per_task": result["per_task"],
                }
            )
        else:
            missing.append({"precision": row["precision"], "seed": row["seed"], "error": errors.get(i)})
    return {"iterations": rows[0][1].iterations, "test_tasks": test_tasks, "runs": runs, "missing": missing}


def precision(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    jobs: int = 1,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """The gradient-error probe and the training comparison, as the study's result."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if time_limit is not None and time_limit < 0:
        raise ValueError(f"time_limit must be at least 0 seconds, got {time_limit}")
    started = time.perf_counter()
    errors = gradient_errors(small, progress)
    left = None if time_limit is None else max(0.0, time_limit - (time.perf_counter() - started))
    return {
        "preset": PRESET,
        "gradient": errors,
        "training": training(small, iterations, progress, jobs, left),
    }
