"""`mamlbook eval`: meta-test a trained run against its pretrained baseline."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="meta-test a trained run against its pretrained baseline")
    ev.add_argument(
        "run", type=Path, help="run folder (or checkpoint file); lake-runs (Lake's one-shot runs); nav2d; cheetah-vel"
    )
    ev.add_argument(
        "checkpoint",
        type=Path,
        nargs="?",
        help="with lake-runs: a 20-way Omniglot run or checkpoint; with nav2d or cheetah-vel: the run folder",
    )
    ev.add_argument("--baseline", choices=("mhd",), help="with lake-runs: score the Modified Hausdorff baseline")
    ev.add_argument("--tasks", type=int, help="meta-test tasks (default 600; RL: test goals, default 40)")
    ev.add_argument("--steps", type=int, default=10, help="adaptation steps to report (default 10)")
    ev.add_argument("--k-shot", type=int, help="support examples per task (default: as trained)")
    ev.add_argument("--baseline-lr", type=float, help="fine-tuning rate of the baseline (default: inner lr)")
    ev.add_argument(
        "--run", dest="rl_run", type=Path, help="with nav2d or cheetah-vel: the run folder of `mamlbook train TASK`"
    )
    ev.add_argument(
        "--trajectories", type=int, help="with nav2d or cheetah-vel: trajectories per goal and step (default 40)"
    )

    ev.set_defaults(handler=run)


def run_lake(args: argparse.Namespace) -> int:
    """`mamlbook eval lake-runs [CHECKPOINT] [--baseline mhd]`: per-run and mean error, MHD beside."""
    from ..reports.lake import evaluate_lake_runs, format_lake, mhd_errors, write_lake

    if args.checkpoint is None:
        if args.baseline != "mhd":
            raise ValueError("lake-runs needs a CHECKPOINT to evaluate, or --baseline mhd")
        print(format_lake(None, mhd_errors().tolist()))
        return 0
    report = evaluate_lake_runs(args.checkpoint, steps=args.steps)
    print(format_lake(report["maml_error"], report["mhd_error"], report["algorithm"]))
    rate, steps = report["inner_lr"], report["steps"]
    print(f"{report['algorithm']}: {steps} inner steps at lr {rate}, iteration {report['iteration']}")
    folder = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    print(f"wrote {write_lake(report, folder)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..reports.run import evaluate_run, format_report, write_report

    if str(args.run) == "lake-runs":
        return run_lake(args)
    from .rl import RL_TASKS, eval_nav2d

    if str(args.run) in RL_TASKS:
        return eval_nav2d(args)
    if args.checkpoint is not None or args.baseline is not None:
        raise ValueError("CHECKPOINT and --baseline go with `mamlbook eval lake-runs`")

    tasks = 600 if args.tasks is None else args.tasks
    report = evaluate_run(args.run, tasks=tasks, steps=args.steps, k_shot=args.k_shot, baseline_lr=args.baseline_lr)
    print(format_report(report))
    folder = args.run if args.run.is_dir() else args.run.parent
    json_path, figure = write_report(report, folder)
    print(f"wrote {json_path} and {figure}")
    return 0
