"""All tasks at once: `torch.func.vmap` over the per-task objective, `torch.func.grad` inside.

Caution: vmap's batching rule for batch norm's backward gives a wrong second-order gradient
(functorch issue 534), so models with batch norm are refused here; see `engine.strategy`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torch.func import vmap

from ..meta import InnerLoop, func_grads
from ..tasks import TaskBatch
from .loop import one_task_loss


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules())


def vmap_query_losses(model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch, inner: InnerLoop) -> Tensor:
    """Per-task query losses `[B]`, all tasks in one vectorized pass."""
    if has_batch_norm(model):
        raise ValueError(
            f"strategy 'vmap' is not offered for {type(model).__name__}: it contains batch norm, whose "
            "second-order gradient torch.func.vmap computes wrongly; use strategy 'loop'"
        )

    def one_task(*task: Tensor) -> Tensor:
        return one_task_loss(model, params, inner, *task, grads=func_grads)

    return vmap(one_task)(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
