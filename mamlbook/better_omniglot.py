"""The better-updates comparison on real Omniglot (5-way 1-shot, minimal split): `mamlbook study better-omniglot`.

Each method trains the `omniglot-5w1s` CPU preset (about 20 minutes per run on one core) and is
scored on 600 meta-test tasks of the held-out alphabet with its own inner rule. Runs live in the
cache under a hash of their configuration, and a run that was interrupted resumes from its last
checkpoint, so the study can be stopped and restarted without losing work.

Budget choices, stated because they shape the result: one seed per method (a seed costs a run);
MAML++ with two inner steps (its multi-step loss needs more than one; five, as in the paper, costs
five query passes per task); Reptile with five steps (with one, its update is plain joint training).
"""

from __future__ import annotations

import json
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
TEST_TASKS, TEST_STEPS = 600, 10
# The study's budget, fixed here so that a longer preset elsewhere does not change the study's runs.
ITERATIONS = 1200
SMALL = {"iterations": 2, "meta_batch": 2, "eval_every": 1, "eval_tasks": 2, "checkpoint_every": 1}


def method_config(label: str, seed: int = 0, small: bool = False, iterations: int | None = None) -> TrainConfig:
    algorithm, changes = METHODS[label]
    extra = dict(SMALL) if small else {"iterations": ITERATIONS}
    if iterations is not None:
        extra["iterations"] = iterations
    return preset_config(PRESET, "cpu", algorithm=algorithm, seed=seed, **changes, **extra)


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


def better_omniglot(small: bool = False, iterations: int | None = None, progress: bool = True) -> dict[str, Any]:
    test_tasks, steps = (10, 2) if small else (TEST_TASKS, TEST_STEPS)
    runs = []
    for i, label in enumerate(METHODS, 1):
        config = method_config(label, small=small, iterations=iterations)
        folder = run_folder(config, test_tasks)
        result = train_and_test(config, folder, test_tasks, steps)
        runs.append(
            {
                "label": label,
                "algorithm": config.algorithm,
                "inner_steps": config.inner_steps,
                "seed": config.seed,
                "key": folder.name,
                **result,
            }
        )
        if progress:
            print(
                f"[{i}/{len(METHODS)}] {label}: meta-test accuracy {100 * result['accuracy']:.2f}% "
                f"after {result['test_steps']} step(s)",
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
            "seeds": [base.seed],
            "data": "minimal Omniglot (images_background_small1 + small2); test alphabet Japanese_(katakana)",
        },
        "runs": runs,
    }


STUDIES["better-omniglot"] = better_omniglot
