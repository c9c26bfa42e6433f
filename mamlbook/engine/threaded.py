"""The loop, with tasks spread over CPU cores: each worker runs whole tasks on one thread.

On a CPU, a small convolution split across cores (torch's intra-op threads) spends much of its
time synchronizing. Tasks are independent, so a better split gives each core whole tasks,
forward and backward, with one intra-op thread each. Autograd allows concurrent backward passes
over separate graphs; `functional_call` swaps a module's attributes while it runs, so each worker
gets its own copy of the module (the parameters themselves are shared, never copied).

The meta-gradient is the loop's: each task's graph is built and differentiated exactly as there,
only on another thread. The per-task losses come out of one autograd function whose backward runs
the tasks' backward passes in the same workers (first derivatives only: nothing differentiates a
meta-gradient twice).
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

from ..losses import LossFn
from ..meta import InnerRule, task_query_loss
from ..meta.mamlpp import has_step_batch_norm
from ..meta.rules import learned_of
from ..tasks import TaskBatch
from .loop import loop_query_losses


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
    """Forward: per-task query losses `[B]` computed in worker threads. Backward: the same workers
    differentiate their own tasks' graphs and the results are summed."""

    @staticmethod
    def forward(ctx: Any, setup: dict[str, Any], *inputs: Tensor) -> Tensor:
        names, rates = setup["names"], setup["rates"]
        n = len(names)
        shares, models = setup["shares"], setup["models"]
        batch: TaskBatch = setup["batch"]

        def run(worker: int) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
            leaves = [p.detach().requires_grad_() for p in inputs[:n]]
            params = dict(zip(names, leaves, strict=True))
            losses = []
            with torch.enable_grad():
                for i in shares[worker]:
                    losses.append(
                        task_query_loss(
                            models[worker],
                            params,
                            batch.support_x[i],
                            batch.support_y[i],
                            batch.query_x[i],
                            batch.query_y[i],
                            setup["loss_fn"],
                            setup["steps"],
                            setup["inner_lr"],
                            setup["order"],
                            rule=setup["rule"],
                        )
                    )
            return losses, leaves, list(rates)

        with one_intra_op_thread(), ThreadPoolExecutor(len(shares)) as pool:
            results = list(pool.map(run, range(len(shares))))
        out = inputs[0].new_empty(len(batch))
        for share, (losses, _, _) in zip(shares, results, strict=True):
            for i, loss in zip(share, losses, strict=True):
                out[i] = loss.detach()
        ctx.results, ctx.shares = results, shares
        ctx.input_needs = [t.requires_grad for t in inputs]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        def run(worker: int) -> Sequence[Tensor | None]:
            losses, leaves, rates = ctx.results[worker]
            targets = [*leaves, *rates]
            weights = torch.stack([grad_out[i] for i in ctx.shares[worker]])
            total = (torch.stack(losses) * weights).sum()
            if not total.requires_grad:
                return [None] * len(targets)
            return torch.autograd.grad(total, targets, allow_unused=True)

        with one_intra_op_thread(), ThreadPoolExecutor(len(ctx.shares)) as pool:
            parts = list(pool.map(run, range(len(ctx.shares))))
        ctx.results = None  # free the graphs
        sums: list[Tensor | None] = []
        for column in zip(*parts, strict=True):
            present = [g for g in column if g is not None]
            sums.append(torch.stack(present).sum(0) if present else None)
        return (None, *(g if need else None for g, need in zip(sums, ctx.input_needs, strict=True)))


def threaded_query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn,
    steps: int,
    inner_lr: float,
    order: int,
    rule: InnerRule | None = None,
    workers: int | None = None,
) -> Tensor:
    """Per-task query losses `[B]`, the tasks shared among `workers` threads (default: one per core)."""
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if has_step_batch_norm(model):
        raise ValueError("per-step batch norm updates running statistics in place: run it with the loop strategy")
    if workers == 1 or len(batch) == 1 or batch.query_x.device.type != "cpu":
        return loop_query_losses(model, params, batch, loss_fn, steps, inner_lr, order, rule)
    shares = _shares(len(batch), workers)
    names = list(params)
    rates = list(learned_of(rule).values()) if rule is not None else []
    setup = {
        "names": names,
        "rates": rates,
        "shares": shares,
        "models": [model] + [copy.deepcopy(model) for _ in shares[1:]],
        "batch": batch,
        "loss_fn": loss_fn,
        "steps": steps,
        "inner_lr": inner_lr,
        "order": order,
        "rule": rule,
    }
    return _ThreadedTasks.apply(setup, *params.values(), *rates)
