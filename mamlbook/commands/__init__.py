"""One module per `mamlbook` subcommand, each with `add_parser(subparsers)` and `run(args)`."""

from . import bench, data, evaluate, study, train

SUBCOMMANDS = [train, evaluate, bench, data, study]
