"""The folded strategy with each inner step checkpointed: memory flat in the number of steps.

Second-order MAML keeps every inner step's graph for the outer backward, so memory grows with the
steps. Here each step (parameters in, parameters out) runs under `torch.utils.checkpoint`: its
activations are dropped after the forward and recomputed during the outer backward, one step at a
time. The price is one more forward and inner backward per step; the meta-gradient is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..meta import InnerLoop
from ..tasks import TaskBatch
from .chain import fold_input, trace_chain
from .folded import expand_params, folded_forward, per_task_loss


def checkpointed_query_losses(
    model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch, inner: InnerLoop
) -> Tensor:
    """Per-task query losses `[B]`; each inner step is recomputed in the backward instead of stored."""
    trace_chain(model)
    tasks = len(batch)
    loss_fn, order, update = inner.loss_fn, inner.order, inner.update
    sx = fold_input(batch.support_x)
    current = expand_params(params, tasks)
    if order == 0:
        current = {k: v.detach() for k, v in current.items()}
    names = list(current)

    def one_step(step: int, *values: Tensor) -> tuple[Tensor, ...]:
        leaves = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in zip(names, values, strict=True)}
        with torch.enable_grad():
            loss = per_task_loss(loss_fn, folded_forward(model, leaves, sx, tasks), batch.support_y).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=order == 2, allow_unused=True)
        g = {k: torch.zeros_like(leaves[k]) if v is None else v for k, v in zip(names, grads, strict=True)}
        if order < 2:
            g = {k: v.detach() for k, v in g.items()}
        updated = update(dict(zip(names, values, strict=True)), g, step)
        return tuple(updated[k] for k in names)

    for step in range(inner.steps):
        values = tuple(current[k] for k in names)
        if order == 0 or not any(v.requires_grad for v in values):
            out = one_step(step, *values)
            out = tuple(v.detach() for v in out) if order == 0 else out
        else:
            out = checkpoint(one_step, step, *values, use_reentrant=False)
        current = dict(zip(names, out, strict=True))
    output = folded_forward(model, current, fold_input(batch.query_x), tasks)
    return per_task_loss(loss_fn, output, batch.query_y)
