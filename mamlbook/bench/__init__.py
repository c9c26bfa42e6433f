"""Side-by-side benchmarks: mamlbook's strategies against learn2learn, higher and TorchOpt.

Sits above the library (engine, meta, models, tasks) and below the command line; nothing in the
library imports it. `peers` holds the peers' meta-gradients, also the tests' oracles.
"""

from .runner import (
    PROBLEMS,
    Problem,
    add_ratios,
    format_table,
    image_tasks,
    machine,
    read_rows,
    run_bench,
    run_isolated,
    run_one,
    time_impl,
    write_json,
)

__all__ = [
    "PROBLEMS",
    "Problem",
    "add_ratios",
    "format_table",
    "image_tasks",
    "machine",
    "read_rows",
    "run_bench",
    "run_isolated",
    "run_one",
    "time_impl",
    "write_json",
]
