"""`mamlbook train nav2d` and `mamlbook eval nav2d`: MAML for policies on 2D navigation (`mamlbook.rl`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# train options that have no meaning for nav2d: refused rather than ignored
TRAIN_ONLY_SUPERVISED = (
    "preset",
    "model",
    "k_shot",
    "inner_steps",
    "meta_lr",
    "order",
    "algorithm",
    "without",
    "strategy",
    "eval_every",
    "clip_grad_norm",
    "nproc",
)


def train_nav2d(args: argparse.Namespace) -> int:
    from ..rl.trainer import Nav2DConfig, Nav2DTrainer

    given = [name for name in TRAIN_ONLY_SUPERVISED if getattr(args, name, None) not in (None, False)]
    if given:
        raise ValueError(f"nav2d does not take {', '.join('--' + g.replace('_', '-') for g in given)}")
    settings = {
        "estimator": args.estimator,
        "outer": args.outer,
        "meta_batch": args.meta_batch,
        "trajectories": args.trajectories,
        "inner_lr": args.inner_lr,
        "seed": args.seed,
    }
    settings = {k: v for k, v in settings.items() if v is not None}
    out: Path = args.out
    if args.resume:
        if settings:
            raise ValueError(f"--resume continues the saved run; these options would change it: {', '.join(settings)}")
        extra = {} if args.iterations is None else {"iterations": args.iterations}
        trainer = Nav2DTrainer.resume(out, **extra)
        print(f"resuming {out} at iteration {trainer.iteration} of {trainer.config.iterations}")
    else:
        if (out / "checkpoint.pt").exists():
            raise ValueError(f"{out / 'checkpoint.pt'} exists; pass --resume to continue it or choose another --out")
        if args.iterations is not None:
            settings["iterations"] = args.iterations
        trainer = Nav2DTrainer(Nav2DConfig(**settings), out)
    trainer.fit(progress=not args.no_progress)
    c = trainer.config
    baseline = args.baseline_iterations or 0
    if baseline > 0:  # the pretrained baseline: the same outer step on a mixture of goals, no inner loop
        folder = out / "pretrained"
        if (folder / "checkpoint.pt").exists():
            pretrained = Nav2DTrainer.resume(folder, iterations=baseline)
        else:
            pretrained = Nav2DTrainer(
                Nav2DConfig.from_dict({**c.to_dict(), "inner_steps": 0, "iterations": baseline}), folder
            )
        pretrained.fit(progress=not args.no_progress)
    last = trainer.history[-1] if trainer.history else {}
    print(
        f"done: iteration {trainer.iteration}, return before adapting {last.get('pre_return', float('nan')):.1f}, "
        f"after one step {last.get('post_return', float('nan')):.1f}"
    )
    print(f"wrote {out}/checkpoint.pt, metrics.jsonl" + (", pretrained/" if baseline > 0 else ""))
    return 0


def eval_nav2d(args: argparse.Namespace) -> int:
    from ..rl.evaluate import TEST_GOALS, TEST_TRAJECTORIES, evaluate_run, format_table, test_goals

    if args.rl_run is None:
        raise ValueError("mamlbook eval nav2d needs --run DIR, a folder written by `mamlbook train nav2d`")
    goals = test_goals(args.tasks if args.tasks is not None else TEST_GOALS)
    trajectories = args.trajectories or TEST_TRAJECTORIES
    report = evaluate_run(args.rl_run, steps=args.steps, goals=goals, trajectories=trajectories)
    print(format_table(report))
    folder = args.rl_run if args.rl_run.is_dir() else args.rl_run.parent
    for row in report["methods"].values():
        row.pop("per_goal", None)
    path = folder / "evaluation.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return 0
