"""The inner loop: a few gradient steps from the meta-learned initialization on one task's support set.

`order` decides what the outer loop can differentiate:
  2  full MAML: each step's gradient keeps its graph, so the meta-gradient carries the
     Hessian term (I - alpha H);
  1  first-order MAML (FOMAML): gradients are treated as constants, so d theta'/d theta = I;
  0  no meta-gradient at all: adapted parameters are cut from theta (evaluation, fine-tuning).

Gradients come from a backend: plain `torch.autograd.grad` (the reference, one task at a time) or
`torch.func.grad` (which composes with `vmap` to adapt many tasks at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..functional import Params, forward
from ..losses import LossFn, get_loss
from .rules import SGD, InnerRule

LossOfParams = Callable[[Params], Tensor]
GradBackend = Callable[[LossOfParams, Params, bool], Params]

__all__ = [
    "SGD",
    "GradBackend",
    "InnerLoop",
    "InnerRule",
    "adapt",
    "autograd_grads",
    "check_order",
    "check_steps",
    "func_grads",
]


def autograd_grads(loss_of: LossOfParams, params: Params, create_graph: bool) -> Params:
    """Gradients with `torch.autograd.grad`; unused parameters get zeros, not None."""
    leaves = {k: p if p.requires_grad else p.detach().requires_grad_() for k, p in params.items()}
    with torch.enable_grad():
        loss = loss_of(leaves)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph, allow_unused=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(leaves.items(), grads, strict=True)}


def func_grads(loss_of: LossOfParams, params: Params, create_graph: bool) -> Params:
    """Gradients with `torch.func.grad`; an enclosing autograd graph sees through them."""
    return torch.func.grad(loss_of)(params)


def check_order(order: int) -> int:
    if order not in (0, 1, 2):
        raise ValueError(f"order must be 2 (MAML), 1 (first-order MAML) or 0 (no meta-gradient), got {order!r}")
    return order


def check_steps(steps: int, minimum: int = 1) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < minimum:
        raise ValueError(f"steps must be an integer >= {minimum}, got {steps!r}")
    return steps


@dataclass(frozen=True)
class InnerLoop:
    """The inner-loop settings, as one value that every execution strategy takes: a new setting is
    added here, not to each strategy's signature. Checked once when made, and frozen, so a strategy
    can pass it on (to a fallback, to worker threads) without anyone changing it underneath.

    `rule` replaces plain SGD at `inner_lr` (learned rates, ANIL's subset); `order` is as in `adapt`.

    >>> InnerLoop("ce", steps=5, inner_lr=0.4)
    InnerLoop(loss_fn='ce', steps=5, inner_lr=0.4, order=2, rule=None)
    >>> InnerLoop(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be an integer >= 1, got 0
    """

    loss_fn: str | LossFn = "mse"
    steps: int = 1
    inner_lr: float = 0.01
    order: int = 2
    rule: InnerRule | None = None

    def __post_init__(self) -> None:
        check_steps(self.steps)
        check_order(self.order)

    @property
    def update(self) -> InnerRule:
        """The rule each step applies: `rule`, or plain SGD at `inner_lr` (made only then, as it checks the rate)."""
        return self.rule if self.rule is not None else SGD(self.inner_lr)


def adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    loss_fn: str | LossFn = "mse",
    steps: int = 1,
    inner_lr: float = 0.01,
    order: int = 2,
    *,
    rule: InnerRule | None = None,
    grads: GradBackend = autograd_grads,
) -> Params:
    """Adapt `params` to one task with `steps` gradient steps on its support set.

    `support_x: [S, *x_shape]`, `support_y: [S, *y_shape]` (one task, no task dimension). Returns
    new parameters; `params` is never modified. `rule` replaces plain SGD (e.g. learned rates).
    """
    check_steps(steps)
    check_order(order)
    loss = get_loss(loss_fn)
    update = rule if rule is not None else SGD(inner_lr)
    current: Params = {k: v.detach() for k, v in params.items()} if order == 0 else dict(params)

    def support_loss(p: Params) -> Tensor:
        return loss(forward(model, p, support_x), support_y)

    for step in range(steps):
        g = grads(support_loss, current, order == 2)
        if order < 2:
            g = {k: v.detach() for k, v in g.items()}
        current = update(current, g, step)
        if order == 0:
            current = {k: v.detach() for k, v in current.items()}
    return current
