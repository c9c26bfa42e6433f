"""MAML in plain PyTorch: the tutorial snippet of "Code in practice" (book/code.md), corrected.

No mamlbook machinery: `torch.autograd.grad` for the inner step and `torch.func.functional_call`
to run the module with the adapted weights. The snippet's three mistakes, and what replaces them:

1. `torch.autograd.grad(loss, params)` without `create_graph=True` makes the inner gradient a
   constant for the outer backward pass: first-order MAML, silently. Here `create_graph=True`.
2. The outer loss on the same data as the inner step. Here the inner steps use the support set and
   the outer loss the query set.
3. A meta-step per task (`zero_grad`, `backward`, `step` inside the task loop), so each task adapts
   from a different theta and no meta-batch is averaged. Here the query losses of all tasks are
   averaged and differentiated once, for one optimizer step.

A fourth, just as common: adapting by updating the module in place (`p.data -= lr * g`, or an
`optimizer.step()` in the inner loop). That cuts the graph from theta to the adapted weights; the
adapted weights here are new tensors in a dict, and the module's own parameters are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

if TYPE_CHECKING:
    from .problem import MetaInputs, Result


def maml_meta_loss(
    model: nn.Module,
    theta: dict[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    steps: int,
    inner_lr: float,
    create_graph: bool = True,
) -> Tensor:
    """Mean over tasks of the query loss after `steps` SGD steps on the support set. Inputs `[B, ...]`."""
    query_losses = []
    for sx, sy, qx, qy in zip(support_x, support_y, query_x, query_y, strict=True):
        fast = dict(theta)  # new tensors each step; the module's parameters are never updated
        for _ in range(steps):
            support_loss = loss_fn(functional_call(model, fast, (sx,)), sy)
            grads = torch.autograd.grad(support_loss, list(fast.values()), create_graph=create_graph)
            fast = {name: w - inner_lr * g for (name, w), g in zip(fast.items(), grads, strict=True)}
        query_losses.append(loss_fn(functional_call(model, fast, (qx,)), qy))
    return torch.stack(query_losses).mean()


LOSSES = {"mse": F.mse_loss, "ce": F.cross_entropy}


def _problem(inputs: MetaInputs):
    from .problem import torch_batch, torch_module, torch_weights

    theta = {k: v.requires_grad_() for k, v in torch_weights(inputs).items()}
    batch = torch_batch(inputs)
    return torch_module(inputs), theta, (batch.support_x, batch.support_y, batch.query_x, batch.query_y)


def torch_plain_meta_gradient(inputs: MetaInputs) -> Result:
    """The meta-loss and its gradient by `maml_meta_loss` and one `torch.autograd.grad`."""
    model, theta, arrays = _problem(inputs)
    loss = maml_meta_loss(
        model, theta, *arrays, LOSSES[inputs.loss], inputs.steps, inputs.inner_lr, create_graph=inputs.order == 2
    )
    grads = torch.autograd.grad(loss, list(theta.values()))
    return loss.item(), {k: g.numpy() for k, g in zip(theta, grads, strict=True)}


def torch_plain_step(inputs: MetaInputs) -> Callable[[], None]:
    """One meta-iteration as the corrected snippet trains: meta-loss, `backward`, `Adam.step`."""
    model, theta, arrays = _problem(inputs)
    optimizer = torch.optim.Adam(theta.values(), lr=1e-3)
    loss_fn = LOSSES[inputs.loss]

    def step() -> None:
        optimizer.zero_grad()
        loss = maml_meta_loss(
            model, theta, *arrays, loss_fn, inputs.steps, inputs.inner_lr, create_graph=inputs.order == 2
        )
        loss.backward()
        optimizer.step()

    return step
