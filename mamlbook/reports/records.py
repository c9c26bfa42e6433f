"""The typed files of a run folder that the reports write and the book reads.

`eval.json` (`mamlbook eval`), `lake.json` (Lake's 20 runs), `metrics.jsonl` (the Trainer's
validation log) and `run.json` (how a stored run was produced). Each is read through its record
class, so a missing or renamed field fails naming the file and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..records import Record, RecordError, from_data, read_record

__all__ = [
    "EvalMethod",
    "EvalReport",
    "LakeReport",
    "MetricsRow",
    "RunNote",
    "read_eval",
    "read_lake",
    "read_metrics",
    "read_run_note",
]


@dataclass(frozen=True)
class EvalMethod:
    """Query loss (and accuracy, for classification) after 0..steps inner steps: mean and 95% half-width."""

    mean: list[float]
    ci95: list[float]
    inner_lr: float | str
    accuracy_mean: list[float] | None = None
    accuracy_ci95: list[float] | None = None


@dataclass(frozen=True, kw_only=True)
class EvalReport(Record):
    run: str
    iteration: int
    tasks: int
    k_shot: int
    steps: int
    loss: str
    methods: dict[str, EvalMethod]


@dataclass(frozen=True, kw_only=True)
class LakeReport(Record):
    """Percent errors on Lake et al.'s 20 one-shot runs, per run, beside modified Hausdorff distance's."""

    checkpoint: str
    iteration: int
    steps: int
    inner_lr: float | str
    maml_error_by_step: list[float]
    maml_error: list[float]
    mhd_error: list[float]
    maml_mean: float
    mhd_mean: float
    algorithm: str = "MAML"


@dataclass(frozen=True, kw_only=True)
class RunNote(Record):
    """How a stored run was produced, written by hand beside it: command, versions, machine, data."""

    command: str
    mamlbook: str
    torch: str
    python: str
    machine: str
    data: str
    date: str
    note: str | None = None
    what: str | None = None
    why: str | None = None
    eval_5shot: str | None = None


@dataclass(frozen=True)
class MetricsRow:
    """One line of a run's metrics.jsonl: the training loss and the validation before/after adaptation."""

    iteration: int
    train_loss: float
    val_loss_pre: float
    val_loss_post: float
    seconds: float
    val_accuracy_pre: float | None = None
    val_accuracy_post: float | None = None


def read_eval(path: str | os.PathLike) -> EvalReport:
    return read_record(EvalReport, path)


def read_lake(path: str | os.PathLike) -> LakeReport:
    return read_record(LakeReport, path)


def read_run_note(path: str | os.PathLike) -> RunNote:
    return read_record(RunNote, path)


def read_metrics(path: str | os.PathLike) -> list[MetricsRow]:
    """Every line of a metrics.jsonl, typed; a malformed line fails naming the file and the line."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(f"{path}:{number}: not valid JSON ({error})") from None
        rows.append(from_data(MetricsRow, data, f"{path}:{number}"))
    return rows
