"""The one place that reads the environment.

`MAMLBOOK_SMOKE=1` shrinks every experiment so that CI executes each chapter in seconds while the
published book runs at full size; `MAMLBOOK_DATA` says where data sets live.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def smoke() -> bool:
    """True when experiments should run at their small, fast size."""
    return os.environ.get("MAMLBOOK_SMOKE", "0").strip().lower() in _TRUE


def pick(full, small):
    """Return `small` in smoke mode and `full` otherwise: `iterations = pick(20_000, 50)`."""
    return small if smoke() else full


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where data sets are read from and downloaded to.

    An explicit `root` wins, then `$MAMLBOOK_DATA`, then a per-user cache folder.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MAMLBOOK_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mamlbook" / "data"


def cache_root() -> Path:
    """Where derived files (preprocessed tensors) are written; never inside a read-only data root."""
    env = os.environ.get("MAMLBOOK_CACHE")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mamlbook"
