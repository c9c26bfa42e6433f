"""`mamlbook bench`: time one meta-iteration side by side with the peers."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import comma_ints, comma_names


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="time one meta-iteration side by side with learn2learn and higher")
    bench.add_argument("--problems", type=comma_names, default=["sinusoid"])
    bench.add_argument("--steps", type=comma_ints, default=[1])
    bench.add_argument("--impls", type=comma_names, default=["mamlbook", "learn2learn", "higher"])
    bench.add_argument("--order", type=int, choices=(1, 2), default=2)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--repeat", type=int, default=10)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--json", type=Path, help="write one JSON row per measurement here")
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import format_table, run_bench, write_json

    rows = run_bench(args.problems, args.steps, args.impls, args.order, args.device, args.repeat, args.warmup)
    print(format_table(rows))
    if args.json:
        print(f"wrote {write_json(rows, args.json)}")
    return 0
