"""One module per `mamlbook` subcommand, each with `add_parser(subparsers)` and `run(args)`."""

from . import bench, evaluate, train

SUBCOMMANDS = [train, evaluate, bench]
