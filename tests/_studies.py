"""Shared by the policy studies' tests (rl-paper, cheetah): a small study run once per module, and
runs compared without their timings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mamlbook.studies import run_study, save_result


def cost_free(runs):
    """Runs without their seconds, which differ from one call to the next."""
    drop = ("cpu_seconds", "train_cpu_seconds", "wall_seconds")
    return [{k: v for k, v in (r if isinstance(r, dict) else dataclasses.asdict(r)).items() if k not in drop}
            for r in runs]  # fmt: skip


def run_small(name: str, tmp_path_factory) -> tuple[Path, Path]:
    """Study `name` at its small size, run into its own cache and written to a result file: (cache, file)."""
    cache = tmp_path_factory.mktemp("cache")
    path = tmp_path_factory.mktemp("result") / f"{name}.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAMLBOOK_CACHE", str(cache))
        save_result(run_study(name, small=True, progress=False), path)
    return cache, path


def interrupt_and_resume(run, make_study, tmp_path: Path, monkeypatch) -> tuple[dict, list[int]]:
    """Run a small study (`run(small=True, progress=False, ...)`) with a clock that passes the deadline once
    the first snapshot is written, carrying its unfinished jobs out (`carry`); then again without a limit
    on another machine (an empty cache) given the carried archive (the cut finished no job to `reuse`), and check
    that the resumed first job ends with the same float32 weights, and the study with the same runs, as an
    uninterrupted one. Returns the cut result and the iterations at which the resuming call stepped."""
    from mamlbook.rl.trainer import Nav2DTrainer, load_policy
    from mamlbook.studies import rl_paper

    interrupted, moved, straight = tmp_path / "interrupted", tmp_path / "moved", tmp_path / "straight"
    carried = tmp_path / "study.carry.tar.gz"
    monkeypatch.setenv("MAMLBOOK_CACHE", str(interrupted))
    monkeypatch.setattr(rl_paper, "_now", lambda: 100.0 * len(list(interrupted.rglob("snapshots/*.pt"))))
    cut = run(small=True, progress=False, time_limit=50, carry=carried)
    study = make_study(small=True)  # its folders under the cache just set
    job = study.plan()[0]
    assert torch.load(study.folder(job) / "checkpoint.pt", weights_only=False)["iteration"] == 2
    assert carried.exists() and not (moved / "studies").exists()
    monkeypatch.undo()
    monkeypatch.setenv("MAMLBOOK_CACHE", str(moved))
    steps, step = [], Nav2DTrainer.step
    monkeypatch.setattr(Nav2DTrainer, "step", lambda self: steps.append(self.iteration) or step(self))
    resumed = run(small=True, progress=False, carry=carried)
    assert not resumed["missing"] and not carried.exists(), "a finished study leaves no archive behind"
    stepped = list(steps)  # the resuming call's steps alone, before the uninterrupted run below
    monkeypatch.setenv("MAMLBOOK_CACHE", str(straight))
    whole = run(small=True, progress=False)
    _, _, uninterrupted = load_policy(study.folder(job))
    monkeypatch.setenv("MAMLBOOK_CACHE", str(moved))
    _, _, continued = load_policy(study.folder(job))
    assert continued.keys() == uninterrupted.keys()
    for name, value in continued.items():
        assert value.dtype == torch.float32 and torch.equal(value, uninterrupted[name]), name
    assert cost_free(resumed["runs"]) == cost_free(whole["runs"])
    with pytest.raises(ValueError, match="time_limit must be at least 0"):
        run(small=True, progress=False, time_limit=-1)
    return cut, stepped
