"""Shared fixtures: small seeded meta-batches in float64, where gradient comparisons are meaningful."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import mamlbook as mb

# `make test` exports MAMLBOOK_DATA; a bare `pytest` run gets the same offline data folder.
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "MAMLBOOK_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["MAMLBOOK_DATA"] = str(_SHARED_DATA)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def sine_batch64(gen: torch.Generator) -> mb.TaskBatch:
    return mb.Sinusoid(k_shot=5, k_query=7).sample(4, gen).to(dtype=torch.float64)


@pytest.fixture
def sine_model64() -> torch.nn.Module:
    torch.manual_seed(0)
    return mb.SineMLP().double()


def relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all tensors of two parameter dicts."""
    num = sum(((a[k] - b[k]) ** 2).sum() for k in b)
    den = sum((b[k] ** 2).sum() for k in b)
    return float((num / den).sqrt())
