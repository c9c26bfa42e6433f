"""MAML for policies on 2D navigation, with three meta-gradient estimators: `mamlbook study rl`.

Trains MAML-TRPO (Finn et al. 2017's settings, at a meta-batch and sample count this machine can
afford) with the biased surrogate meta-gradient, the unbiased DiCE one and ProMP's LVC, plus the
pretrained baseline (the same TRPO on a mixture of goals, no inner loop); then meta-tests all of
them, a randomly initialized policy and the analytic oracle after 0..3 inner steps on 40 fixed test
goals (40 trajectories per goal and step), and adds the bandit check of the estimators' bias.

Each run lives in the cache (`study_folder()`) under its estimator's name and resumes from its
checkpoint, and a finished run's evaluation is kept beside it, so the study can be stopped and
restarted without losing work. The main estimator gets the most iterations; the other two run
for `SIDE_FRACTION` of them, enough to compare the learning curves over the same iterations.

Every method's mean return per test goal is kept (`per_goal`, `[steps + 1][goals]`, the fixed goals'
order), so methods can be compared goal by goal. The paper's numbers live in the chapter, not here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..config import cache_root
from ..rl.bandit import meta_gradient_bias
from ..rl.estimators import ESTIMATORS
from ..rl.evaluate import evaluate_methods, random_init, test_goals
from ..rl.trainer import Nav2DConfig, Nav2DTrainer, load_policy
from .records import significant

FORMAT = 2  # of the cached evaluation: 2 keeps each goal's returns
MAIN = "surrogate"  # the estimator of the paper and of every public implementation: the reference curve
SIZE = {"meta_batch": 20, "trajectories": 10}  # the paper's 20 tasks, half its 20 trajectories per step
ITERATIONS = 100  # the main run; about 5.7 core-seconds an iteration at SIZE
CURVATURE = "exact"
SIDE_FRACTION = 0.55  # the other estimators' share of the main run's iterations
PRETRAIN_ITERATIONS = 60
TEST_STEPS = 3
BANDIT = {"theta": 0.0, "goal": 1.0, "sigma": 1.0, "alpha": 0.1, "n": 10, "samples": 200_000}
SMALL = {
    "size": {"meta_batch": 3, "trajectories": 4, "horizon": 15},
    "iterations": 2,
    "pretrain": 2,
    "goals": 4,
    "trajectories": 4,
    "steps": 2,
    "bandit_samples": 2_000,
}


def study_folder(small: bool = False) -> Path:
    return cache_root() / "studies" / ("rl-nav2d-small" if small else "rl-nav2d")


def plan(small: bool = False, iterations: int | None = None) -> dict[str, tuple[Nav2DConfig, int]]:
    """Run name -> (config, iterations), in the order they are trained (main, pretrained, the others)."""
    size = SMALL["size"] if small else SIZE
    main = iterations or (SMALL["iterations"] if small else ITERATIONS)
    side = max(1, round(main * SIDE_FRACTION)) if not small else main
    pretrain = SMALL["pretrain"] if small else (PRETRAIN_ITERATIONS if iterations is None else main)
    # The stored study was trained with autograd's curvature: pinned, so that rerunning it reproduces
    # the file bit for bit (the hand-derived path takes the same step up to float32 rounding).
    size = {**size, "curvature": CURVATURE}
    runs: dict[str, tuple[Nav2DConfig, int]] = {
        MAIN: (Nav2DConfig(estimator=MAIN, iterations=main, **size), main),
        "pretrained": (Nav2DConfig(estimator="surrogate", inner_steps=0, iterations=pretrain, **size), pretrain),
    }
    for estimator in ESTIMATORS:
        if estimator != MAIN:
            runs[estimator] = (Nav2DConfig(estimator=estimator, iterations=side, **size), side)
    return runs


def train_run(config: Nav2DConfig, iterations: int, folder: Path, progress: bool = True) -> Nav2DTrainer:
    """Train (or resume) the run in `folder` up to `iterations`."""
    if (folder / "checkpoint.pt").exists():
        trainer = Nav2DTrainer.resume(folder, iterations=max(iterations, 1))
        saved = {k: v for k, v in trainer.config.to_dict().items() if k != "iterations"}
        wanted = {k: v for k, v in config.to_dict().items() if k != "iterations"}
        if saved != wanted or trainer.config.curvature != config.curvature:
            raise ValueError(f"{folder} holds a run with other settings; remove it to train this study's")
    else:
        trainer = Nav2DTrainer(config, folder)
    trainer.fit(iterations, progress=progress, desc=f"rl study: {folder.name}")
    return trainer


def curve(history: list[dict[str, Any]]) -> dict[str, list]:
    keys = ("iteration", "pre_return", "post_return", "kl", "seconds")
    return {k: [row.get(k) for row in history] for k in keys}


def rl(small: bool = False, iterations: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train every run (resuming where they stopped), meta-test them all, and return the result."""
    folder = study_folder(small)
    runs = plan(small, iterations)
    trained: dict[str, Nav2DTrainer] = {}
    for name, (config, target) in runs.items():
        trained[name] = train_run(config, target, folder / name, progress)
    goals = test_goals(SMALL["goals"] if small else 40)
    trajectories = SMALL["trajectories"] if small else 40
    steps = SMALL["steps"] if small else TEST_STEPS
    key = {"format": FORMAT, "iterations": {n: t.iteration for n, t in trained.items()}, "steps": steps}
    cached = folder / "evaluation.json"
    evaluation = None
    if cached.exists():
        saved = json.loads(cached.read_text())
        evaluation = saved["evaluation"] if saved.get("key") == key else None
    if evaluation is None:
        started = time.perf_counter()
        methods = {}
        for name in runs:
            _, policy, params = load_policy(folder / name)
            methods["pretrained" if name == "pretrained" else f"MAML ({name})"] = (policy, params)
        methods["random init"] = random_init(runs[MAIN][0])
        evaluation = evaluate_methods(methods, steps, goals, trajectories, inner_lr=runs[MAIN][0].inner_lr)
        evaluation["seconds"] = round(time.perf_counter() - started, 1)
        for row in evaluation["methods"].values():
            per_goal = row["per_goal"]
            if len(per_goal) == 1:  # the oracle does not adapt: one row, the same after every step
                per_goal = per_goal * (steps + 1)
            row["per_goal"] = [significant(returns) for returns in per_goal]
        cached.write_text(json.dumps({"key": key, "evaluation": evaluation}) + "\n")
    bandit_settings = {**BANDIT, "samples": SMALL["bandit_samples"] if small else BANDIT["samples"]}
    bandit = {e: meta_gradient_bias(e, **bandit_settings) for e in ESTIMATORS}
    return {
        "folder": str(folder),
        "settings": {name: {**config.to_dict(), "iterations": target} for name, (config, target) in runs.items()},
        "main": MAIN,
        "curves": {name: curve(t.history) for name, t in trained.items()},
        "training_seconds": {name: round(sum(r["seconds"] for r in t.history), 1) for name, t in trained.items()},
        "evaluation": evaluation,
        "bandit": {"settings": bandit_settings, "estimators": bandit},
    }
