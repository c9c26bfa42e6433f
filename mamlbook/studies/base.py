"""What every study shares: the machine it ran on, its fixed test seed, and its result files.

Studies are the book's experiments too heavy for a chapter's build: run once from the command line
(`mamlbook study NAME`), saved as small JSON files under `book/results/`, read back by the chapters.
Every result states what produced it: the command, the package and torch versions, the machine.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

TEST_SEED = 30_000


def machine() -> dict[str, Any]:
    """What ran a study: enough to tell two machines' timings apart."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save_result(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a study's result as JSON (infinities, for diverged runs, as null), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value):
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(clean(result), indent=1) + "\n")
    os.replace(partial, path)
    return path


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read a saved study; null losses (diverged runs) come back as infinity."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; produce it with `mamlbook study {path.stem}`")
    result = json.loads(path.read_text())
    for grid in result.get("grids", {}).values():
        grid["loss"] = [[float("inf") if v is None else v for v in row] for row in grid["loss"]]
    return result
