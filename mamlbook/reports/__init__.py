"""Reports on saved runs: meta-test tables against the baseline, Lake's 20 one-shot runs, and paired
comparisons of methods on the same test tasks with the sentences a chapter prints about them.

Reads what `mamlbook.train` wrote (checkpoints, configs); sits below the studies and the CLI.
"""

from .claims import best_setting, describe, verdict
from .lake import evaluate_lake_runs, format_lake, mhd_errors, write_lake
from .paired import PairedComparison, compare_methods, paired_difference
from .published import PUBLISHED, Published, published
from .run import META_TEST_SEED, evaluate_run, format_report, write_report

__all__ = [
    "META_TEST_SEED",
    "PUBLISHED",
    "PairedComparison",
    "Published",
    "best_setting",
    "compare_methods",
    "describe",
    "evaluate_lake_runs",
    "evaluate_run",
    "format_lake",
    "format_report",
    "mhd_errors",
    "paired_difference",
    "published",
    "verdict",
    "write_lake",
    "write_report",
]
