"""Reptile (Nichol et al. 2018): move the initialization towards each task's adapted weights.

No query loss is differentiated: the meta-update is theta <- theta + epsilon * mean_i(theta'_i - theta),
with theta'_i a few plain SGD steps on task i. Written as a pseudo-gradient g = theta - mean_i theta'_i,
any optimizer can take that step (plain SGD with rate epsilon gives exactly Reptile; the Trainer
uses Adam, as learn2learn's and the authors' Omniglot runs do).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import vmap

from ..functional import Params, forward
from ..losses import LossFn, get_loss
from ..tasks import TaskBatch
from .inner import adapt, func_grads
from .rules import InnerRule


def reptile_pseudo_gradient(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn,
    steps: int,
    rule: InnerRule,
    vectorized: bool = False,
) -> tuple[Tensor, Params]:
    """(mean post-adaptation query loss, theta - mean_i theta'_i) over the tasks of `batch`.

    The query loss is only reported, never differentiated. `vectorized` adapts all tasks at once
    with vmap (models without batch norm); otherwise task by task.
    """
    loss = get_loss(loss_fn)
    theta = {k: v.detach() for k, v in params.items()}
    if vectorized:

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Params, Tensor]:
            adapted = adapt(model, theta, sx, sy, loss, steps, order=0, rule=rule, grads=func_grads)
            return adapted, loss(forward(model, adapted, qx), qy)

        adapted, query = vmap(one_task)(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        return query.mean().detach(), {k: theta[k] - adapted[k].mean(0) for k in theta}
    total = {k: torch.zeros_like(v) for k, v in theta.items()}
    losses = []
    for i in range(len(batch)):
        adapted = adapt(model, theta, batch.support_x[i], batch.support_y[i], loss, steps, order=0, rule=rule)
        for k in total:
            total[k] += adapted[k]
        with torch.no_grad():
            losses.append(loss(forward(model, adapted, batch.query_x[i]), batch.query_y[i]))
    return torch.stack(losses).mean(), {k: theta[k] - total[k] / len(batch) for k in theta}


def reptile_step(params: Mapping[str, Tensor], pseudo_gradient: Mapping[str, Tensor], step_size: float) -> Params:
    """theta + epsilon * mean_i(theta'_i - theta), the update of the paper (batched version)."""
    return {k: v.detach() - step_size * pseudo_gradient[k] for k, v in params.items()}
