"""Reports on saved runs: meta-test tables against the baseline, and Lake's 20 one-shot runs.

Reads what `mamlbook.train` wrote (checkpoints, configs); sits below the studies and the CLI.
"""

from .lake import evaluate_lake_runs, format_lake, mhd_errors, write_lake
from .run import META_TEST_SEED, evaluate_run, format_report, write_report

__all__ = [
    "META_TEST_SEED",
    "evaluate_lake_runs",
    "evaluate_run",
    "format_lake",
    "format_report",
    "mhd_errors",
    "write_lake",
    "write_report",
]
