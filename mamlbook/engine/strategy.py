"""Choosing how a meta-batch is executed, and the meta-loss and meta-gradient built on that choice."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ..functional import Params
from ..losses import LossFn
from ..meta import InnerRule
from ..meta.inner import check_order, check_steps
from ..tasks import TaskBatch
from .loop import loop_query_losses
from .vmapped import has_batch_norm, vmap_query_losses

QueryLosses = Callable[..., Tensor]

STRATEGIES: dict[str, QueryLosses] = {
    "loop": loop_query_losses,
    "vmap": vmap_query_losses,
}


def resolve_strategy(strategy: str, model: nn.Module) -> str:
    """The concrete strategy for `strategy`; "auto" picks vmap unless the model has batch norm."""
    if strategy == "auto":
        return "loop" if has_batch_norm(model) else "vmap"
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: auto, {', '.join(STRATEGIES)}")
    return strategy


def query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn = "mse",
    steps: int = 1,
    inner_lr: float = 0.01,
    order: int = 2,
    strategy: str = "loop",
    rule: InnerRule | None = None,
) -> Tensor:
    """Post-adaptation query loss of each task, `[B]`, by the chosen execution strategy."""
    check_steps(steps)
    check_order(order)
    run = STRATEGIES[resolve_strategy(strategy, model)]
    return run(model, params, batch, loss_fn, steps, inner_lr, order, rule)


def meta_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn = "mse",
    steps: int = 1,
    inner_lr: float = 0.01,
    order: int = 2,
    strategy: str = "loop",
    rule: InnerRule | None = None,
) -> Tensor:
    """The MAML objective: the mean over tasks of the post-adaptation query loss."""
    return query_losses(model, params, batch, loss_fn, steps, inner_lr, order, strategy, rule).mean()


def meta_gradient(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn = "mse",
    steps: int = 1,
    inner_lr: float = 0.01,
    order: int = 2,
    strategy: str = "loop",
    rule: InnerRule | None = None,
) -> tuple[Tensor, Params]:
    """The meta-loss and its gradient with respect to `params` (which need not require grad)."""
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    with torch.enable_grad():
        loss = meta_loss(model, leaves, batch, loss_fn, steps, inner_lr, order, strategy, rule)
        # order 0 cuts adapted parameters from theta: the meta-gradient is zero by definition.
        grads = (
            torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            if loss.requires_grad
            else [None] * len(leaves)
        )
    return loss.detach(), {
        k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), grads, strict=True)
    }
