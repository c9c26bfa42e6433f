"""`--nproc N` of `mamlbook train`: the same command again under torch.distributed.run.

Its own module because both `cli.train` (supervised) and `cli.rl` (2D navigation) relaunch with it.
"""

from __future__ import annotations

import argparse
import sys


def relaunch(args: argparse.Namespace) -> int:
    """`--nproc N`: this command again, under torch.distributed.run with N local processes."""
    import subprocess

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    argv = [args.task]
    for action in args.train_parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "nproc") or value is None or value is False:
            continue
        option = action.option_strings[-1]
        if value is True:
            argv.append(option)
        else:
            for item in value if isinstance(value, list) else [value]:
                argv += [option, str(item)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
    return subprocess.call([*command, "-m", "mamlbook", "train", *argv])
