"""What every study shares: the machine it ran on, its fixed test seed, and its result files.

Studies are the book's experiments too heavy for a chapter's build: run once from the command line
(`mamlbook study NAME`), saved as small JSON files under `book/results/`, read back by the chapters.
Every result states what produced it: the command, the package and torch versions, the machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from ..records import RecordError, cpu_model, from_data, read_json, record_from_data, write_record
from .records import RESULT_TYPES, StudyResult

TEST_SEED = 30_000


def machine() -> dict[str, Any]:
    """What ran a study: enough to tell two machines' timings apart."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save_result(result: StudyResult | dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a study's result through its typed record (infinities, for diverged runs, as null), atomically.

    A plain dict is first read into the study's record class, so a study cannot write a file its
    readers would refuse.
    """
    if isinstance(result, dict):
        result = result_from_data(result, str(path), new=True)
    return write_record(result, path)


def result_from_data(data: dict[str, Any], source: str, *, new: bool = False) -> StudyResult:
    """The typed record of a study's JSON data, chosen by its `study` field.

    A file must carry its record's format version; a result just computed (`new`) gets it now.
    """
    name = data.get("study")
    if name not in RESULT_TYPES:
        raise RecordError(f"{source}: field 'study' is {name!r}, not one of {', '.join(sorted(RESULT_TYPES))}")
    if new:
        return from_data(RESULT_TYPES[name], data, source)
    return record_from_data(RESULT_TYPES[name], data, source)


def load_result(path: str | os.PathLike) -> StudyResult:
    """Read a saved study as its typed record; a missing or renamed field fails, naming file and field."""
    data = read_json(path, missing=f"; produce it with `mamlbook study {Path(path).stem}`")
    return result_from_data(data, str(path))
