"""The `mamlbook` command line: train, eval, bench (one module each under `mamlbook.commands`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .checkpoint import CheckpointError
from .commands import SUBCOMMANDS


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
    except (ValueError, CheckpointError, ImportError, FileNotFoundError) as exc:
        print(f"mamlbook {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
