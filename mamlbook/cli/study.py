"""`mamlbook study NAME`: run a study too heavy for a chapter's build and save its result file."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    study = subparsers.add_parser("study", help="run a book study (e.g. the hyperparameter sweep) and save it")
    study.add_argument(
        "name",
        help="study name: sweep, better (sinusoid), better-omniglot (Omniglot 5-way 1-shot), omniglot-prototypes "
        "(ProtoNets and ProtoMAML beside MAML on Omniglot 5-way 1-shot, scored transductively and not), medical, rl, "
        "rl-paper (2D navigation at the paper's scale, three seeds), cheetah (the running cheetah with a goal "
        "velocity; needs MuJoCo) or precision",
    )
    study.add_argument("--out", type=Path, help="result file (default: book/results/NAME.json)")
    study.add_argument("--small", action="store_true", help="the tiny version the book's smoke mode runs")
    study.add_argument("--iterations", type=int, help="meta-iterations per setting (default: the study's)")
    study.add_argument("--no-progress", action="store_true", help="no per-setting progress lines")
    study.add_argument(
        "--trained-only",
        action="store_true",
        help="train nothing: report the runs already finished and list the rest as missing "
        "(better-omniglot, omniglot-prototypes, rl-paper, cheetah)",
    )
    study.add_argument(
        "--device",
        help="train on this device, e.g. cuda (better-omniglot, omniglot-prototypes; default: the study's, cpu)",
    )
    study.add_argument(
        "--full",
        action="store_true",
        help="every method and every MAML++ piece switched off alone, over three seeds (better-omniglot)",
    )
    study.add_argument(
        "--confirm",
        action="store_true",
        help="MAML against MAML++ without CA on fresh seeds 3-5, the ablation's pick tested "
        "(better-omniglot; default file: book/results/better-omniglot-confirm.json)",
    )
    study.add_argument(
        "--jobs",
        type=int,
        help="runs trained at once, in separate processes (better-omniglot, omniglot-prototypes, precision, medical, "
        "rl-paper, cheetah; cheetah's default is 2). A job that fails, with one process or several, is reported "
        "and listed as missing; the others run on",
    )
    study.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="start no run after this many seconds; runs not started are listed as missing "
        "(better-omniglot, omniglot-prototypes, precision, medical, rl-paper, cheetah; rl-paper and cheetah also "
        "stop a running job at its next snapshot and resume it on the next call)",
    )
    study.add_argument(
        "--reuse",
        type=Path,
        metavar="FILE",
        help="count the finished jobs of an earlier result file of the study as done, e.g. to continue it on "
        "another machine (omniglot-prototypes, medical, rl-paper, cheetah)",
    )
    study.add_argument(
        "--carry",
        type=Path,
        metavar="FILE",
        help="an archive of the unfinished jobs' checkpoints: read at the start, rewritten at the end, so a job "
        "cut short resumes on another machine, e.g. book/results/NAME.carry.tar.gz beside --reuse's file "
        "(omniglot-prototypes, medical, rl-paper, cheetah)",
    )
    study.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..studies import run_study, save_result

    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {args.iterations}")
    command = "mamlbook " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["study"] else None
    options: dict = {"trained_only": True} if args.trained_only else {}
    for name in ("full", "confirm"):
        if getattr(args, name):
            options[name] = True
    for name in ("device", "jobs", "time_limit", "reuse", "carry"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    out = args.out or Path("book") / "results" / (f"{args.name}-confirm.json" if args.confirm else f"{args.name}.json")
    if args.name == "omniglot-prototypes":  # the kept MAML weights go beside the result file, in a folder of its name
        options["keep"] = out.parent / out.stem
    result = run_study(
        args.name,
        small=args.small,
        iterations=args.iterations,
        progress=not args.no_progress,
        command=command,
        **options,
    )
    print(f"wrote {save_result(result, out)} ({result.seconds:.0f} s)")
    return 0
