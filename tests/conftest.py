"""Shared fixtures: small seeded meta-batches in float64, where gradient comparisons are meaningful."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator
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


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test, restored after (compiled and closed-form paths)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all tensors of two parameter dicts."""
    num = sum(((a[k] - b[k]) ** 2).sum() for k in b)
    den = sum((b[k] ** 2).sum() for k in b)
    return float((num / den).sqrt())


def image_batch(tasks: int = 2, n_way: int = 3, query: int = 2, seed: int = 0) -> mb.TaskBatch:
    """A seeded float64 batch of 16x16 one-channel image tasks, small enough for Conv4 in float64."""
    g = torch.Generator().manual_seed(seed)
    return mb.TaskBatch(
        torch.rand(tasks, n_way, 1, 16, 16, generator=g, dtype=torch.float64),
        torch.arange(n_way).repeat(tasks, 1),
        torch.rand(tasks, n_way * query, 1, 16, 16, generator=g, dtype=torch.float64),
        torch.randint(0, n_way, (tasks, n_way * query), generator=g),
    )


@contextlib.contextmanager
def serve_folder(folder: Path, handler: type[http.server.SimpleHTTPRequestHandler]) -> Iterator[str]:
    """`folder` served by `handler` on 127.0.0.1 (a free port) in a background thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
