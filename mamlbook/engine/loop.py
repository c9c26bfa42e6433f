"""The reference strategy: one task at a time with plain autograd."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ..losses import LossFn
from ..meta import InnerRule, task_query_loss
from ..tasks import TaskBatch


def loop_query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn,
    steps: int,
    inner_lr: float,
    order: int,
    rule: InnerRule | None = None,
) -> Tensor:
    """Per-task query losses `[B]`, computed task by task. Slow on wide hardware, but obviously right."""
    return batch.per_task(
        lambda sx, sy, qx, qy: task_query_loss(
            model, params, sx, sy, qx, qy, loss_fn, steps, inner_lr, order, rule=rule
        )
    )
