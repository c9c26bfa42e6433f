"""`mamlbook study better`: MAML and its better-update variants side by side, over seeds.

Three parts share trained runs (a run is identified by the hash of its configuration and cached
on disk, so a rebuild or a rerun never trains the same configuration twice):

- methods: MAML, FOMAML, Reptile, ANIL, Meta-SGD, MAML++, each over several seeds;
- ablation: MAML++ with one piece switched off at a time (pieces that do not apply to the model,
  such as per-step batch norm on a network without batch norm, are listed as not applicable);
- sensitivity: final query loss against the inner learning rate (two orders of magnitude) and
  against the number of inner steps, for MAML, Meta-SGD and MAML++.

Registered in `mamlbook.studies.STUDIES`, so `mamlbook study better` runs it and
saves `book/results/better.json`; the chapter "Better gradient updates" plots that file.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import cache_root
from ..train.algorithms import MAMLPP_PIECES, make_algorithm
from ..train.evaluate import adaptation_curve, mean_ci95
from ..train.runconfig import TrainConfig
from ..train.trainer import Trainer
from .base import TEST_SEED
from .records import BetterResult, BetterRun, significant

CACHE_FORMAT = 1

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "MAML": ("maml", {}),
    "FOMAML": ("fomaml", {}),
    "Reptile": ("reptile", {}),
    "ANIL": ("anil", {}),
    "Meta-SGD": ("metasgd", {}),
    "MAML++": ("mamlpp", {}),
}
SENSITIVITY_METHODS = ("MAML", "Meta-SGD", "MAML++")
BN_PIECES = ("bnrs", "bnwb")

SIZES: dict[str, dict[str, Any]] = {
    # About 25 minutes on one core of a busy 2-core CPU (the sensitivity sweeps use one seed).
    "full": {
        "base": {
            "task": "sinusoid",
            "k_shot": 10,
            "meta_batch": 10,
            "inner_steps": 3,
            "inner_lr": 0.01,
            "iterations": 400,
            "eval_every": 25,
            "eval_tasks": 100,
        },
        "seeds": [0, 1, 2],
        "sweep_seeds": [0],
        "inner_lrs": [0.001, 0.01, 0.1],
        "inner_steps": [1, 3, 5],
        "test_tasks": 600,
    },
    # The chapter's smoke mode: the same code path in well under a minute.
    "small": {
        "base": {
            "task": "sinusoid",
            "k_shot": 10,
            "meta_batch": 4,
            "inner_steps": 2,
            "inner_lr": 0.01,
            "iterations": 12,
            "eval_every": 4,
            "eval_tasks": 10,
        },
        "seeds": [0, 1],
        "sweep_seeds": [0],
        "inner_lrs": [0.003, 0.03],
        "inner_steps": [1, 2],
        "test_tasks": 50,
    },
}


# TrainConfig fields added after runs were cached, with the value that reproduces the older runs:
# left out of the key at that value, so that existing caches stay valid.
LATER_FIELDS: dict[str, Any] = {"clip_grad_norm": None, "precision": "fp32"}


def config_key(config: TrainConfig, test_tasks: int) -> str:
    """The cache key of a run: a hash of everything that decides its result."""
    settings = {k: v for k, v in config.to_dict().items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    payload = {"format": CACHE_FORMAT, "config": settings, "test_tasks": test_tasks, "test_seed": TEST_SEED}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) and abs(value) < 1e6 else None


def train_and_test(config: TrainConfig, test_tasks: int) -> dict[str, Any]:
    """Meta-train one configuration and score it on fixed meta-test tasks, with its own inner loop.

    `per_task` keeps each test task's query MSE (the same tasks, in the same order, for every
    configuration), so two methods can be compared task by task; None when the run diverged.
    """
    started = time.perf_counter()
    trainer = Trainer(config)
    history = trainer.fit(progress=False)
    batch = config.make_task().for_split("test").sample(test_tasks, torch.Generator().manual_seed(TEST_SEED))
    curve = adaptation_curve(
        trainer.model, trainer.params, batch, trainer.loss, config.inner_steps, config.inner_lr, rule=trainer.rule
    )
    per_task = curve["loss"][:, -1]
    post, ci95 = mean_ci95(per_task)
    rates = {k: [round(float(x), 5) for x in v.detach().flatten()[:8]] for k, v in trainer.rates.items()}
    if trainer.algorithm.rule == "metasgd":  # one number per tensor: the mean learned rate
        rates = {k: [round(float(v.detach().mean()), 5)] for k, v in trainer.rates.items()}
    return {
        "test_loss": _finite(post),
        "test_ci95": ci95 if _finite(post) is not None else None,
        "test_loss_pre": _finite(float(curve["loss"][:, 0].mean())),
        "val_curve": [[row["iteration"], _finite(row["val_loss_post"])] for row in history],
        "rates": rates,
        "seconds": round(time.perf_counter() - started, 2),
        "per_task": significant(per_task.tolist()) if _finite(post) is not None else None,
    }


def cached_run(config: TrainConfig, test_tasks: int, cache: Path) -> tuple[dict[str, Any], bool]:
    """`train_and_test`, read from `cache/<key>.json` when this configuration has run before.

    An entry cached before runs kept their per-task scores is trained again: the cache holds no
    model to rescore, and a study's runs must all be comparable task by task.
    """
    path = cache / f"{config_key(config, test_tasks)}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if "per_task" in cached:
            return cached, True
    result = train_and_test(config, test_tasks)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(result) + "\n")
    partial.replace(path)
    return result, False


def plan(size: str, iterations: int | None = None) -> list[dict[str, Any]]:
    """Every run of the study, as (group, label, seed, config) rows; shared runs appear once per group."""
    spec = SIZES[size]
    base = {**spec["base"], **({"iterations": iterations} if iterations else {})}
    rows: list[dict[str, Any]] = []

    def add(group: str, label: str, seed: int, algorithm: str, options: dict[str, Any], **changes: Any) -> None:
        config = TrainConfig(**{**base, **changes}, algorithm=algorithm, algorithm_options=options, seed=seed)
        rows.append({"group": group, "label": label, "seed": seed, "config": config, **changes})

    for label, (algorithm, options) in METHODS.items():
        for seed in spec["seeds"]:
            add("methods", label, seed, algorithm, options)
    model = TrainConfig(**base).make_model()
    full = make_algorithm("mamlpp")
    for piece, off in MAMLPP_PIECES.items():
        if piece in BN_PIECES and full.prepare_model(model, 1) is model:
            continue  # no batch norm in this model: the piece changes nothing
        for seed in spec["seeds"]:
            add("ablation", f"MAML++ without {piece.upper()}", seed, "mamlpp", off)
    for label in SENSITIVITY_METHODS:
        algorithm, options = METHODS[label]
        for seed in spec["sweep_seeds"]:
            for lr in spec["inner_lrs"]:
                add("inner_lr", label, seed, algorithm, options, inner_lr=lr)
            for steps in spec["inner_steps"]:
                add("inner_steps", label, seed, algorithm, options, inner_steps=steps)
    return rows


def better(small: bool = False, iterations: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or read from the cache) every run of the study; the `mamlbook study better` entry point."""
    size = "small" if small else "full"
    cache = cache_root() / "studies" / "better"
    rows = plan(size, iterations)
    runs, trained = [], 0
    for i, row in enumerate(rows, 1):
        config: TrainConfig = row.pop("config")
        result, hit = cached_run(config, SIZES[size]["test_tasks"], cache)
        trained += not hit
        runs.append(
            {
                **row,
                "algorithm": config.algorithm,
                "inner_lr": config.inner_lr,
                "inner_steps": config.inner_steps,
                "key": config_key(config, SIZES[size]["test_tasks"]),
                **result,
            }
        )
        if progress:
            loss = result["test_loss"]
            took = "cached" if hit else f"{result['seconds']:.0f} s"
            print(
                f"[{i}/{len(rows)}] {row['group']}: {row['label']} seed {row['seed']} lr {config.inner_lr} "
                f"steps {config.inner_steps} -> test MSE {loss if loss is None else round(loss, 4)} "
                f"({took})",
                file=sys.stderr,
                flush=True,
            )
    spec = SIZES[size]
    skipped = [p for p in BN_PIECES if not any(r["label"].endswith(p.upper()) for r in runs)]
    return {
        "settings": {
            **spec["base"],
            **({"iterations": iterations} if iterations else {}),
            "seeds": spec["seeds"],
            "sweep_seeds": spec["sweep_seeds"],
            "inner_lrs": spec["inner_lrs"],
            "inner_steps_grid": spec["inner_steps"],
            "test_tasks": spec["test_tasks"],
            "test_seed": TEST_SEED,
            "not_applicable": skipped,
        },
        "trained": trained,
        "runs": runs,
    }


# ----- reading a result -----
@dataclass(frozen=True)
class LossStats:
    """Test losses of a method over its seeds: mean and standard deviation of the finite ones.

    `mean` and `seed_std` are None when every seed diverged, `seed_std` is nan for one finite seed;
    `ci95` is the mean of the runs' 95% half-widths over the test tasks and `seconds` the mean time
    per run (both None where not asked for).
    """

    mean: float | None
    seed_std: float | None
    n: int
    diverged: int
    ci95: float | None = None
    seconds: float | None = None


def _stats(values: list[float | None], **extra: float | None) -> LossStats:
    finite = [v for v in values if v is not None]
    if not finite:
        return LossStats(None, None, 0, len(values), **extra)
    t = torch.tensor(finite, dtype=torch.float64)
    std = float(t.std(unbiased=True)) if len(finite) > 1 else float("nan")
    return LossStats(float(t.mean()), std, len(finite), len(values) - len(finite), **extra)


def seed_runs(result: BetterResult, label: str, group: str = "methods") -> list[BetterRun]:
    """The runs of `label` in `group`, one per seed, in the file's order; ValueError naming it if none."""
    runs = [r for r in result.runs if r.group == group and r.label == label]
    if not runs:
        raise ValueError(f"no {group} runs of {label!r} in the result")
    return runs


def summary(result: BetterResult, group: str = "methods") -> dict[str, LossStats]:
    """Per label: mean test loss over seeds, its spread across seeds, and the mean 95% interval."""
    table = {}
    for label in dict.fromkeys(r.label for r in result.runs if r.group == group):
        runs = seed_runs(result, label, group)
        cis = [r.test_ci95 for r in runs if r.test_ci95 is not None]
        table[label] = _stats(
            [r.test_loss for r in runs],
            ci95=sum(cis) / len(cis) if cis else None,
            seconds=sum(r.seconds for r in runs) / len(runs),
        )
    return table


def curves(result: BetterResult, label: str) -> tuple[list[int], torch.Tensor]:
    """Validation curves of one method: iterations and a `[seeds, points]` tensor (nan = diverged)."""
    runs = seed_runs(result, label)
    iterations = [int(it) for it, _ in runs[0].val_curve]
    values = torch.tensor([[math.nan if v is None else v for _, v in r.val_curve] for r in runs])
    return iterations, values


def sensitivity(result: BetterResult, axis: str) -> dict[str, tuple[list[float], list[LossStats]]]:
    """For `axis` "inner_lr" or "inner_steps": per method, the grid and the test-loss stats at each point."""
    out = {}
    for label in dict.fromkeys(r.label for r in result.runs if r.group == axis):
        runs = seed_runs(result, label, axis)
        grid = sorted({getattr(r, axis) for r in runs})
        out[label] = (grid, [_stats([r.test_loss for r in runs if getattr(r, axis) == x]) for x in grid])
    return out
