"""The MAML objective for one task: the query loss after adapting on the support set."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ..functional import forward
from ..losses import LossFn, get_loss
from .inner import GradBackend, InnerRule, adapt, autograd_grads


def task_query_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    loss_fn: str | LossFn = "mse",
    steps: int = 1,
    inner_lr: float = 0.01,
    order: int = 2,
    rule: InnerRule | None = None,
    grads: GradBackend = autograd_grads,
) -> Tensor:
    """L_query(theta'), theta' = adapt(theta, support): the quantity MAML minimizes, for one task.

    Inner and outer losses use disjoint data (support for adapting, query for scoring), which
    is what makes the objective measure generalization from K examples.
    """
    adapted = adapt(model, params, support_x, support_y, loss_fn, steps, inner_lr, order, rule=rule, grads=grads)
    return get_loss(loss_fn)(forward(model, adapted, query_x), query_y)
