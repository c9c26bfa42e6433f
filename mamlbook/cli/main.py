"""The `mamlbook` command line: one module per subcommand (`train`, `eval`, `bench`, `data`, `study`),
each with `add_parser(subparsers)` and `run(args)`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..train.checkpoint import CheckpointError
from ..train.trainer import DivergenceError
from . import bench, data, evaluate, study, train

SUBCOMMANDS = [train, evaluate, bench, data, study]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mamlbook", description="Model-Agnostic Meta-Learning, faster and leaner.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input ends with a one-line error and exit status 2, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, CheckpointError, DivergenceError, ImportError, FileNotFoundError) as exc:
        print(f"mamlbook {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
