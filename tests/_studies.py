"""Shared by the policy studies' tests (rl-paper, cheetah): a small study run once per module, and
runs compared without their timings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

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
