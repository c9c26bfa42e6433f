"""`mamlbook bench`: time one meta-iteration side by side with the peers."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .args import comma_ints, comma_names


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench", help="time one meta-iteration side by side with learn2learn, higher and TorchOpt"
    )
    bench.add_argument("--problems", type=comma_names, default=["sinusoid"], help="sinusoid, omniglot-5w1s, ...")
    bench.add_argument("--steps", type=comma_ints, default=[1], help="inner steps, e.g. 1,5,10,20")
    bench.add_argument(
        "--impls",
        type=comma_names,
        default=["mamlbook", "learn2learn", "higher"],
        help="mamlbook (every strategy the model allows), mamlbook:<strategy>, anil, imaml, "
        "learn2learn, higher, torchopt (second order only); on the sinusoid also torch-plain, "
        "tensorflow, tensorflow:eager, jax, jax:eager (the `frameworks` extra)",
    )
    bench.add_argument("--order", type=int, choices=(1, 2), default=2)
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--repeat", type=int, default=10, help="timed meta-iterations per configuration")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--meta-batch", type=comma_ints, default=None, help="override the problem's meta-batch sizes")
    bench.add_argument("--threads", type=int, default=None, help="torch intra-op threads for every configuration")
    bench.add_argument(
        "--in-process", action="store_true", help="run every configuration in this process (no CPU peak memory)"
    )
    bench.add_argument("--json", type=Path, help="write the rows, the command and the machine here")
    bench.add_argument("--plot", type=Path, help="draw time against meta-batch and memory against steps here")
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.runner import format_table, run_bench, write_json

    rows = run_bench(
        args.problems,
        args.steps,
        args.impls,
        args.order,
        args.device,
        args.repeat,
        args.warmup,
        meta_batches=args.meta_batch or [None],
        threads=args.threads,
        isolate=not args.in_process,
    )
    print(format_table(rows))
    if args.json:
        command = "mamlbook " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        print(f"wrote {write_json(rows, args.json, command)}")
    if args.plot:
        from ..bench.plots import plot_bench

        print(f"wrote {plot_bench(rows, args.plot)}")
    return 0
