"""`mamlbook study sweep`: MAML's sensitivity to its hyperparameters on sinusoid regression.

Trains MAML over two grids (inner learning rate x inner steps, meta learning rate x meta-batch size)
and records the held-out query loss of each setting. The book's questions chapter plots the saved
file; in smoke mode it reruns a tiny version of the same study so that this code path stays tested.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from ..train.evaluate import adaptation_curve, mean_ci95
from ..train.runconfig import TrainConfig
from ..train.trainer import Trainer
from .base import TEST_SEED


def _grid_point(settings: dict[str, Any], iterations: int, test_tasks: int, seed: int) -> dict[str, float]:
    """Meta-train one setting, then score it on fixed new tasks with the inner loop it was trained for."""
    config = TrainConfig(
        task="sinusoid",
        k_shot=10,
        iterations=iterations,
        eval_every=max(iterations, 1),
        eval_tasks=10,
        seed=seed,
        **settings,
    )
    started = time.perf_counter()
    trainer = Trainer(config)
    trainer.fit(progress=False)
    batch = config.make_task().sample(test_tasks, torch.Generator().manual_seed(TEST_SEED))
    curve = adaptation_curve(trainer.model, trainer.params, batch, "mse", config.inner_steps, config.inner_lr)
    mean, ci95 = mean_ci95(curve["loss"][:, -1])
    if mean != mean or mean > 1e6:  # diverged: record it as such rather than as a huge number
        mean, ci95 = float("inf"), float("nan")
    return {"loss": mean, "ci95": ci95, "seconds": round(time.perf_counter() - started, 2)}


def sweep(small: bool = False, iterations: int | None = None, progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """Two 2-D grids over MAML's hyperparameters on sinusoid regression (K=10), one seed each point.

    Grid "inner": inner_lr x inner_steps, with meta_lr 1e-3 and meta-batch 25 (the paper's).
    Grid "outer": meta_lr x meta_batch, with inner_lr 0.01 and one inner step.
    """
    if small:
        grids = {
            "inner": ("inner_lr", [0.01, 0.1], "inner_steps", [1, 2]),
            "outer": ("meta_lr", [1e-3, 1e-2], "meta_batch", [2, 5]),
        }
        iterations, test_tasks = iterations or 3, 10
    else:
        grids = {
            "inner": ("inner_lr", [0.001, 0.003, 0.01, 0.03, 0.1], "inner_steps", [1, 2, 3, 5]),
            "outer": ("meta_lr", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], "meta_batch", [1, 5, 10, 25, 50]),
        }
        iterations, test_tasks = iterations or 2000, 300
    result: dict[str, Any] = {
        "settings": {
            "task": "sinusoid",
            "k_shot": 10,
            "iterations": iterations,
            "test_tasks": test_tasks,
            "seed": seed,
            "fixed": {"inner": {"meta_lr": 1e-3, "meta_batch": 25}, "outer": {"inner_lr": 0.01, "inner_steps": 1}},
        },
        "grids": {},
    }
    total = sum(len(xs) * len(ys) for _, xs, _, ys in grids.values())
    done = 0
    for name, (x_name, xs, y_name, ys) in grids.items():
        fixed = result["settings"]["fixed"][name]
        rows = {"loss": [], "ci95": [], "seconds": []}
        for y in ys:
            row = {key: [] for key in rows}
            for x in xs:
                point = _grid_point({**fixed, x_name: x, y_name: y}, iterations, test_tasks, seed)
                for key in rows:
                    row[key].append(point[key])
                done += 1
                if progress:
                    print(
                        f"[{done}/{total}] {name}: {x_name}={x} {y_name}={y} -> query MSE {point['loss']:.4f} "
                        f"({point['seconds']:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
            for key in rows:
                rows[key].append(row[key])
        result["grids"][name] = {"x": x_name, "x_values": xs, "y": y_name, "y_values": ys, **rows}
    return result
