"""The reference strategy: one task at a time with plain autograd."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ..meta import InnerLoop, autograd_grads, task_query_loss
from ..meta.inner import GradBackend
from ..tasks import TaskBatch


def one_task_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    inner: InnerLoop,
    *task: Tensor,
    grads: GradBackend = autograd_grads,
) -> Tensor:
    """`meta.task_query_loss` of one task (`support_x, support_y, query_x, query_y`) with `inner`'s
    settings: the one place where the loop, vmap and the threads unpack them."""
    return task_query_loss(
        model, params, *task, inner.loss_fn, inner.steps, inner.inner_lr, inner.order, rule=inner.rule, grads=grads
    )


def loop_query_losses(model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch, inner: InnerLoop) -> Tensor:
    """Per-task query losses `[B]`, computed task by task. Slow on wide hardware, but obviously right."""
    return batch.per_task(lambda *task: one_task_loss(model, params, inner, *task))
