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
    bench.add_argument(
        "--problems",
        type=comma_names,
        default=["sinusoid"],
        help="sinusoid, omniglot-5w1s, omniglot-20w1s; or nav2d alone (MAML-RL: TRPO's step two ways, and the "
        "meta-updates of pytorch-maml-rl and learn2learn's example)",
    )
    bench.add_argument("--steps", type=comma_ints, default=[1], help="inner steps, e.g. 1,5,10,20")
    bench.add_argument(
        "--impls",
        type=comma_names,
        default=None,
        help="mamlbook (every strategy the model allows), mamlbook:<strategy>, mamlbook:step-compiled (the whole "
        "meta-iteration compiled, MLPs), anil, imaml, "
        "learn2learn, higher, torchopt (second order only); on the sinusoid also torch-plain, "
        "tensorflow, tensorflow:eager, jax, jax:eager (the `frameworks` extra); default mamlbook,learn2learn,higher. "
        "On nav2d: mamlbook (both curvatures), mamlbook:exact, mamlbook:gauss-newton, pytorch-maml-rl, "
        "learn2learn (the peers' meta-updates, bench.nav2d_anchors); default all; mamlbook@2, "
        "mamlbook:gauss-newton@2: task-parallel on 2 local processes (rl.parallel), --threads each",
    )
    bench.add_argument("--order", type=int, choices=(1, 2), default=2)
    bench.add_argument(
        "--precision",
        type=comma_names,
        default=["fp32"],
        help="fp32, bf16, fp16, or several (fp32,bf16): mamlbook's strategies in reduced precision (autocast)",
    )
    bench.add_argument(
        "--no-flops", action="store_true", help="skip the GFLOP/s columns and the matrix-product peak"
    )
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--repeat", type=int, default=10, help="timed meta-iterations per configuration")
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--meta-batch", type=comma_ints, default=None, help="override the problem's meta-batch sizes")
    bench.add_argument("--threads", type=int, default=None, help="torch intra-op threads for every configuration")
    bench.add_argument(
        "--estimator",
        choices=("surrogate", "dice", "lvc"),
        help="nav2d: the meta-gradient our rows compute (default Nav2DConfig's, dice); the anchors compute "
        "the surrogate's, so --estimator surrogate times the same quantity",
    )
    bench.add_argument(
        "--in-process", action="store_true", help="run every configuration in this process (no CPU peak memory)"
    )
    bench.add_argument("--json", type=Path, help="write the rows, the command and the machine here")
    bench.add_argument("--plot", type=Path, help="draw time against meta-batch and memory against steps here")
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.runner import format_table, machine_peaks, run_bench, write_json

    if "nav2d" in args.problems:
        return _nav2d(args)
    if args.estimator is not None:
        raise ValueError("--estimator applies to --problems nav2d only (the supervised problems have no estimator)")

    rows = run_bench(
        args.problems,
        args.steps,
        args.impls or ["mamlbook", "learn2learn", "higher"],
        args.order,
        args.device,
        args.repeat,
        args.warmup,
        meta_batches=args.meta_batch or [None],
        threads=args.threads,
        isolate=not args.in_process,
        precisions=args.precision,
        flops=not args.no_flops,
    )
    print(format_table(rows))
    peaks = None
    if not args.no_flops:
        peaks = machine_peaks(args.threads, args.device)
        print("matrix-product peak of this machine: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    if args.json:
        command = "mamlbook " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        print(f"wrote {write_json(rows, args.json, command, peaks)}")
    if args.plot:
        from ..bench.plots import plot_bench

        print(f"wrote {plot_bench(rows, args.plot)}")
    return 0


def _nav2d(args: argparse.Namespace) -> int:
    """`--problems nav2d`: one MAML-RL meta-iteration at the paper's 2D-navigation settings, TRPO's step
    by autograd ("exact") and by hand ("gauss-newton"), and the anchors' meta-updates, alternated in one
    process (`bench.nav2d`)."""
    from ..bench.nav2d import compare_nav2d_step
    from ..bench.runner import write_json

    if args.problems != ["nav2d"]:
        raise ValueError("nav2d is benchmarked on its own: --problems nav2d, without the supervised problems")
    ways = nav2d_impls(args.impls or ["mamlbook", "pytorch-maml-rl", "learn2learn"])
    config = {} if args.estimator is None else {"estimator": args.estimator}
    result = compare_nav2d_step(ways, threads=args.threads or 1, iterations=args.repeat, warmup=args.warmup, **config)
    for row in nav2d_rows(result):
        label = f"{row['impl']}:{row['strategy']}" if row["impl"] == "mamlbook" else row["impl"]
        print(f"nav2d {label:>21}: {row['ms_median'] / 1000:.3f} s per meta-iteration (median of {args.repeat})")
    if "speedup" in result:
        print(f"speed-up by hand {result['speedup']:.2f}x")
    for name, speedup in result.get("parallel_speedup", {}).items():
        print(f"speed-up of {name} over one process {speedup:.2f}x")
    print(f"load average {result['load_average'][0]} -> {result['load_average'][1]}")
    if args.json:
        command = "mamlbook " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        print(f"wrote {write_json(nav2d_rows(result), args.json, command)}")
    return 0


def nav2d_impls(impls: list[str]) -> list[str]:
    """`--impls` on nav2d as `compare_nav2d_step`'s names: "mamlbook" is both curvatures; "@W" (W >= 2)
    after a mamlbook name runs it on W processes ("mamlbook:gauss-newton@2" is "gauss-newton@2")."""
    from ..bench.nav2d_anchors import ANCHORS
    from ..rl.trainer import CURVATURES

    names: list[str] = []
    for impl in impls:
        base, at, count = impl.partition("@")
        processes = not at or (count.isdigit() and int(count) >= 2)
        name, _, way = base.partition(":")
        if base == "mamlbook" and processes:
            names += [f"exact{at}{count}", f"gauss-newton{at}{count}"]
        elif name == "mamlbook" and way in CURVATURES and processes:
            names.append(f"{way}{at}{count}")
        elif impl in ANCHORS:
            names.append(impl)
        else:
            known = ", ".join(["mamlbook", *(f"mamlbook:{c}" for c in CURVATURES), *ANCHORS, "mamlbook[:way]@W"])
            raise ValueError(f"unknown impl {impl!r} on nav2d; known: {known}")
    return list(dict.fromkeys(names))


def nav2d_rows(result: dict) -> list[dict]:
    """`compare_nav2d_step`'s timings as benchmark rows (one per way of taking TRPO's step: impl
    "mamlbook" and the curvature, or the anchor's name and "maml-trpo"), so that they are written and
    read like every other benchmark file (`BenchResults`); `ratio_vs_learn2learn` where its anchor ran."""
    from ..bench.nav2d_anchors import ANCHORS
    from ..bench.runner import add_ratios
    from ..rl.trainer import Nav2DConfig

    settings = result["settings"]
    ours = settings.get("estimator", Nav2DConfig().estimator)
    rows = [
        {
            "problem": "nav2d",
            "impl": curvature if curvature in ANCHORS else "mamlbook",
            "strategy": "maml-trpo" if curvature in ANCHORS else curvature,
            "order": 2,
            "steps": 1,
            "meta_batch": settings["meta_batch"],
            "device": "cpu",
            "threads": result["threads"],
            "ms_median": 1000 * result["seconds"][curvature],
            "ms_min": 1000 * min(times),
            "peak_mib": None,
            "extra_mib": None,
            "repeat": result["iterations"],
            "ratio_vs_learn2learn": None,
            "estimator": "surrogate" if curvature in ANCHORS else ours,  # what the anchors' meta-updates compute
        }
        for curvature, times in result["steps"].items()
    ]
    add_ratios(rows)
    return rows
