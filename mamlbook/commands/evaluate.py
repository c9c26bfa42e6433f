"""`mamlbook eval`: meta-test a trained run against its pretrained baseline."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    ev = subparsers.add_parser("eval", help="meta-test a trained run against its pretrained baseline")
    ev.add_argument("run", type=Path, help="run folder (or checkpoint file)")
    ev.add_argument("--tasks", type=int, default=600, help="meta-test tasks (default 600)")
    ev.add_argument("--steps", type=int, default=10, help="adaptation steps to report (default 10)")
    ev.add_argument("--k-shot", type=int, help="support examples per task (default: as trained)")
    ev.add_argument("--baseline-lr", type=float, help="fine-tuning rate of the baseline (default: inner lr)")

    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..report import evaluate_run, format_report, write_report

    report = evaluate_run(
        args.run, tasks=args.tasks, steps=args.steps, k_shot=args.k_shot, baseline_lr=args.baseline_lr
    )
    print(format_report(report))
    folder = args.run if args.run.is_dir() else args.run.parent
    json_path, figure = write_report(report, folder)
    print(f"wrote {json_path} and {figure}")
    return 0
