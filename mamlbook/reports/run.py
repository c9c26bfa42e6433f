"""Meta-test reports: MAML against the pretrained baseline on fresh tasks, as tables and JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..meta.prototypes import prototype_accuracy, prototype_head
from ..records import from_data, write_record
from ..train.checkpoint import CheckpointError, load_checkpoint
from ..train.evaluate import adaptation_curve, mean_ci95
from ..train.restore import restore_run
from ..train.runconfig import DTYPES, TrainConfig
from .records import EvalReport

META_TEST_SEED = 20_000


def evaluate_run(
    run: str | os.PathLike,
    tasks: int = 600,
    steps: int = 10,
    k_shot: int | None = None,
    baseline_lr: float | None = None,
    seed: int = META_TEST_SEED,
) -> dict[str, Any]:
    """Query loss after 0 to `steps` inner steps on `tasks` fresh tasks, for every model in the run folder.

    The trained run is named by its algorithm ("MAML", "Meta-SGD", ...) and adapts with its own
    inner rule. Returns `{"methods": {name: {"mean": [...], "ci95": [...]}}, ...}`.
    """
    run = Path(run)
    payload = load_checkpoint(run)
    config = TrainConfig.from_dict(payload["config"])
    if k_shot is not None:
        config = TrainConfig.from_dict({**config.to_dict(), "k_shot": k_shot})
    trained = restore_run(payload, run)
    distribution = config.make_task().for_split("test")
    batch = distribution.sample(tasks, torch.Generator().manual_seed(seed)).to(config.device, DTYPES[config.dtype])
    # The trained run adapts with its own rule (learned rates, per-step batch norm, head only).
    lr = "learned" if trained.learned else config.inner_lr
    candidates = {trained.name: (trained.model, trained.params, lr, trained.rule)}
    baseline_path = run / "baseline.pt" if run.is_dir() else run.parent / "baseline.pt"
    if baseline_path.exists():
        model = config.make_model()
        state = load_checkpoint(baseline_path, expect_model=config.model)
        params = {k: v.to(config.device, DTYPES[config.dtype]) for k, v in state["params"].items()}
        if set(params) != {k for k, _ in model.named_parameters()}:
            raise CheckpointError(f"{baseline_path} does not fit model {config.model!r}")
        candidates["pretrained"] = (model, params, baseline_lr or config.inner_lr, None)
    methods = {}
    for name, (model, params, lr, rule) in candidates.items():
        classify = distribution.loss in ("ce", "bce")
        rate = 1.0 if isinstance(lr, str) else lr  # unused when the rule carries learned rates
        if name == trained.name and trained.config.make_algorithm().prototypes:
            # A prototypical network does not take steps: the same classifier at every step count.
            losses, accuracies = prototype_accuracy(model, params, batch)
            curves = {
                "loss": losses[:, None].expand(-1, steps + 1),
                "accuracy": accuracies[:, None].expand(-1, steps + 1),
            }
        else:
            protomaml = name == trained.name and trained.config.make_algorithm().prototype_head
            init = (lambda p, sx, sy, m=model: prototype_head(m, p, sx, sy)) if protomaml else None
            curves = adaptation_curve(
                model, params, batch, distribution.loss, steps, rate, with_accuracy=classify, rule=rule, init=init
            )
        curve = curves["loss"]
        stats = [mean_ci95(curve[:, s]) for s in range(steps + 1)]
        methods[name] = {
            "mean": [m for m, _ in stats],
            "ci95": [c for _, c in stats],
            "inner_lr": lr,
        }
        if classify:  # accuracy per task, then mean and 95% CI over tasks
            acc = [mean_ci95(curves["accuracy"][:, s]) for s in range(steps + 1)]
            methods[name].update(accuracy_mean=[m for m, _ in acc], accuracy_ci95=[c for _, c in acc])
    return {
        "run": str(run),
        "iteration": payload["iteration"],
        "tasks": tasks,
        "k_shot": config.k_shot,
        "steps": steps,
        "loss": distribution.loss,
        "methods": methods,
    }


def format_report(report: dict[str, Any]) -> str:
    names = list(report["methods"])
    lines = [
        f"meta-test on {report['tasks']} new tasks, K={report['k_shot']}, after {report['iteration']} "
        f"meta-iterations; query {report['loss']} (mean ± 95% CI)",
        f"{'steps':>5} " + " ".join(f"{n:>20}" for n in names),
    ]
    for s in range(report["steps"] + 1):
        cells = [f"{report['methods'][n]['mean'][s]:>10.4f} ± {report['methods'][n]['ci95'][s]:<7.4f}" for n in names]
        lines.append(f"{s:>5} " + " ".join(f"{c:>20}" for c in cells))
    if all("accuracy_mean" in report["methods"][n] for n in names):
        lines.append(f"query accuracy (%, mean ± 95% CI over {report['tasks']} tasks)")
        for s in range(report["steps"] + 1):
            cells = [
                f"{100 * report['methods'][n]['accuracy_mean'][s]:>10.2f} ± "
                f"{100 * report['methods'][n]['accuracy_ci95'][s]:<7.2f}"
                for n in names
            ]
            lines.append(f"{s:>5} " + " ".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def write_report(report: dict[str, Any], folder: str | os.PathLike) -> tuple[Path, Path]:
    from ..train.plots import plot_adaptation_curves

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = write_record(from_data(EvalReport, report, "eval.json"), folder / "eval.json", indent=2)
    figure = plot_adaptation_curves(
        {n: m["mean"] for n, m in report["methods"].items()}, folder / "eval.png", ylabel=f"query {report['loss']}"
    )
    return path, figure
