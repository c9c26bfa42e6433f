"""The loop, with tasks spread over CPU cores: each worker runs whole tasks on one thread.

The idea: a small convolution split across cores (torch's intra-op threads) may spend time
synchronizing, while tasks are independent, so each core could run whole tasks, forward and
backward, with one intra-op thread each. Measured on the book's 2-core CPU it ties the loop in
time (book/faster.md); what it reliably buys is memory, about half the loop's peak.

Autograd allows concurrent backward passes over separate graphs; `functional_call` swaps a
module's attributes while it runs, so each worker gets its own copy of the module (the
parameters themselves are shared, never copied).

The meta-gradient is the loop's: each task's graph is built and differentiated exactly as there,
only on another thread, and right after its forward pass, so one task's graph per core is alive at
a time (the memory of learn2learn's loop, not of a meta-batch of graphs). The per-task losses come
out of one autograd function whose backward weighs the stored per-task gradients by the incoming
gradient: first derivatives only, as nothing differentiates a meta-gradient twice.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..meta import InnerLoop
from ..meta.mamlpp import has_step_batch_norm
from ..meta.rules import learned_of
from ..precision import autocast_state, entered
from ..tasks import TaskBatch
from .loop import loop_query_losses, one_task_loss


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def one_intra_op_thread():
    """Each worker owns a core: intra-op threads would only oversubscribe it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _shares(tasks: int, workers: int) -> list[list[int]]:
    """Task indices per worker, dealt round-robin so every worker gets a near-equal share."""
    return [list(range(w, tasks, workers)) for w in range(min(workers, tasks))]


class _ThreadedTasks(torch.autograd.Function):
    """Forward: per-task query losses `[B]`, each task's gradient taken right after its loss, in
    worker threads. Backward: the tasks' gradients weighted by the incoming gradient and summed."""

    @staticmethod
    def forward(ctx: Any, setup: dict[str, Any], *inputs: Tensor) -> Tensor:
        names = setup["names"]
        n = len(names)
        shares, models = setup["shares"], setup["models"]
        batch: TaskBatch = setup["batch"]
        differentiate = setup["differentiate"]

        def run(worker: int) -> list[tuple[int, Tensor, Sequence[Tensor | None]]]:
            torch.set_num_threads(1)  # OpenMP's thread count is per thread: set it in the worker
            leaves = [p.detach().requires_grad_() for p in inputs[:n]]  # the inner loop differentiates them
            targets = [*leaves, *setup["rates"]]
            params = dict(zip(names, leaves, strict=True))
            done = []
            for i in shares[worker]:
                # Autocast is per thread: the caller's reduced precision (mamlbook.precision) holds here too.
                with torch.enable_grad(), entered(setup["autocast"]):
                    task = (batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i])
                    loss = one_task_loss(models[worker], params, setup["inner"], *task)
                    # Differentiate now, while this task's graph is the only one alive on this core.
                    grads = (
                        torch.autograd.grad(loss, targets, allow_unused=True)
                        if differentiate and loss.requires_grad
                        else [None] * len(targets)
                    )
                done.append((i, loss.detach(), grads))
            return done

        with one_intra_op_thread(), ThreadPoolExecutor(len(shares)) as pool:
            results = [item for part in pool.map(run, range(len(shares))) for item in part]
        results.sort(key=lambda item: item[0])
        out = torch.stack([loss for _, loss, _ in results])
        per_input = []
        for column in zip(*(grads for _, _, grads in results), strict=True):
            present = [g for g in column if g is not None]
            per_input.append(
                torch.stack([g if g is not None else torch.zeros_like(present[0]) for g in column]) if present else None
            )
        ctx.per_task = per_input  # [B, *shape] per input: each task's gradient
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grads = [None if g is None else torch.tensordot(grad_out.to(g.dtype), g, dims=1) for g in ctx.per_task]
        ctx.per_task = None
        return (None, *grads)


def threaded_query_losses(
    model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch, inner: InnerLoop, *, workers: int | None = None
) -> Tensor:
    """Per-task query losses `[B]`, the tasks shared among `workers` threads (default: one per core)."""
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if has_step_batch_norm(model):
        raise ValueError("per-step batch norm updates running statistics in place: run it with the loop strategy")
    if workers == 1 or len(batch) == 1 or batch.query_x.device.type != "cpu":
        return loop_query_losses(model, params, batch, inner)
    shares = _shares(len(batch), workers)
    names = list(params)
    rates = list(learned_of(inner.rule).values()) if inner.rule is not None else []
    setup = {
        "names": names,
        "rates": rates,
        "shares": shares,
        "models": [model] + [copy.deepcopy(model) for _ in shares[1:]],
        "batch": batch,
        "inner": inner,
        "autocast": autocast_state(),
        # Taking each task's gradient during the forward pays only if someone will ask for it.
        "differentiate": torch.is_grad_enabled() and any(t.requires_grad for t in (*params.values(), *rates)),
    }
    return _ThreadedTasks.apply(setup, *params.values(), *rates)
