"""Checkpoints that are written atomically and refuse to load into the wrong run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "mamlbook-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or belongs to another model."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` so that a crash mid-write never leaves a half file under that name.

    The bytes go to a temporary file in the same folder, are flushed to disk, and only then replace
    `path` in one rename; a process killed at any point leaves the previous checkpoint whole (a
    temporary file it left behind is removed by the next save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if not _written_by_live_process(stale):
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _written_by_live_process(tmp: Path) -> bool:
    """Whether the process named in a temporary file's name (`.NAME.PID.*.tmp`) still runs."""
    try:
        pid = int(tmp.name.split(".")[-3])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, expect_model: str | None = None) -> dict[str, Any]:
    """Read a checkpoint, with an error that says what is wrong rather than a torch traceback."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mamlbook checkpoint (expected format {FORMAT})")
    model = payload.get("config", {}).get("model")
    if expect_model is not None and model != expect_model:
        raise CheckpointError(f"checkpoint {path} was trained for model {model!r}, not {expect_model!r}")
    return payload
