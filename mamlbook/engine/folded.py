"""All tasks in one graph, folded by hand: what `vmap` does, without its batching rules.

The task dimension is folded into the channel dimension for images and kept as a batch
dimension for vectors:

    images  [N, B*C, H, W]   a convolution with per-task weights is one grouped convolution
                              (groups=B), batch norm on these channels is batch norm per task;
    vectors [B, N, F]         a linear layer with per-task weights is one batched matmul.

Every op is an ordinary, natively differentiated op applied to a bigger tensor, so the second-order
meta-gradient is the loop's, to rounding (checked in float64 in tests/test_engine_folded.py), even
with batch norm, where `torch.func.vmap` is wrong (functorch issue 534).

A model is folded by tracing it with `torch.fx` into a chain of supported modules; a model that
uses other modules or free functions is refused with an error naming what is missing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import Params
from ..losses import LossFn, get_loss
from ..meta import InnerLoop, Subset
from ..tasks import TaskBatch
from .chain import Layer, NotFoldable, fold_input, layer_param, trace_chain
from .shared import shared_forward


def folded_forward(
    model: nn.Module, params: Mapping[str, Tensor], x: Tensor, tasks: int, layers: list[Layer] | None = None
) -> Tensor:
    """Run `model` (or the part of its chain in `layers`) on all tasks at once with per-task `params`.

    `params`: `[B, *shape]` each; `x` is folded (see `fold_input`); the model's output is `[B, N, out]`.
    """
    for layer in trace_chain(model) if layers is None else layers:
        m, name = layer.module, layer.name
        if isinstance(m, nn.Conv2d):
            w = layer_param(params, name, "weight")
            b = layer_param(params, name, "bias")
            x = F.conv2d(
                x,
                w.reshape(-1, *w.shape[2:]),
                None if b is None else b.reshape(-1),
                m.stride,
                m.padding,
                m.dilation,
                tasks * m.groups,
            )
        elif isinstance(m, nn.BatchNorm2d):
            w = layer_param(params, name, "weight")
            b = layer_param(params, name, "bias")
            use_batch_stats = m.training or not m.track_running_stats
            running_mean = None if use_batch_stats else m.running_mean.repeat(tasks)
            running_var = None if use_batch_stats else m.running_var.repeat(tasks)
            x = F.batch_norm(
                x,
                running_mean,
                running_var,
                None if w is None else w.reshape(-1),
                None if b is None else b.reshape(-1),
                training=use_batch_stats,
                eps=m.eps,
            )
        elif isinstance(m, nn.Linear):
            w = layer_param(params, name, "weight")
            b = layer_param(params, name, "bias")
            if x.dim() != 3:
                raise NotFoldable(f"{name}: Linear needs a Flatten before it")
            x = torch.bmm(x, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        elif isinstance(m, nn.Flatten):
            if x.dim() == 4:
                n = x.shape[0]
                x = x.reshape(n, tasks, -1).transpose(0, 1)
        else:
            x = m(x)
    return x


def per_task_loss(loss_fn: str | LossFn, output: Tensor, target: Tensor) -> Tensor:
    """`[B]`: the loss of each task, each reduced by its mean as the loop does."""
    loss = get_loss(loss_fn)
    b, n = output.shape[:2]
    if loss is F.cross_entropy:
        return F.cross_entropy(output.reshape(b * n, -1), target.reshape(b * n), reduction="none").view(b, n).mean(1)
    if loss is F.mse_loss or loss is F.binary_cross_entropy_with_logits:
        return loss(output, target.reshape(output.shape), reduction="none").reshape(b, -1).mean(1)
    return torch.stack([loss(output[i], target[i]) for i in range(b)])


def expand_params(params: Mapping[str, Tensor], tasks: int) -> Params:
    """Each parameter repeated per task as an expanded view `[B, *shape]` (no copy)."""
    return {k: v.unsqueeze(0).expand(tasks, *v.shape) for k, v in params.items()}


def folded_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    inner: InnerLoop,
    adapt_names: Collection[str] | None = None,
    layers: list[Layer] | None = None,
) -> Params:
    """Per-task adapted parameters `[B, *shape]` for all tasks at once (same semantics as `meta.adapt`).

    `support_x: [B, S, ...]`, or already folded features when `layers` is a tail of the chain.
    `adapt_names` restricts adaptation to those parameters (ANIL: the head); the others stay shared.
    """
    tasks = support_y.shape[0]
    order = inner.order
    update = inner.update
    sx = fold_input(support_x) if layers is None else support_x
    current = expand_params(params, tasks)
    if order == 0:
        current = {k: v.detach() for k, v in current.items()}
    names = [k for k in current if adapt_names is None or k in adapt_names]
    for step in range(inner.steps):
        leaves = dict(current)
        for k in names:
            if not leaves[k].requires_grad:
                leaves[k] = leaves[k].detach().requires_grad_()
        with torch.enable_grad():
            # Tasks are independent, so the gradient of the sum is each task's own gradient.
            out = folded_forward(model, leaves, sx, tasks, layers)
            loss = per_task_loss(inner.loss_fn, out, support_y).sum()
            grads = torch.autograd.grad(loss, [leaves[k] for k in names], create_graph=order == 2, allow_unused=True)
        g = {k: torch.zeros_like(leaves[k]) if v is None else v for k, v in zip(names, grads, strict=True)}
        if order < 2:
            g = {k: v.detach() for k, v in g.items()}
        updated = update({k: current[k] for k in names}, g, step)
        if order == 0:
            updated = {k: v.detach() for k, v in updated.items()}
        current = {**current, **updated}
    return current


def frozen_prefix(layers: list[Layer], params: Mapping[str, Tensor], adapted: Collection[str]) -> int:
    """How many leading layers hold no adapted parameter: their output is the same at every inner step."""
    for i, layer in enumerate(layers):
        prefix = f"{layer.name}." if layer.name else ""
        if any(k.startswith(prefix) and k[len(prefix) :].count(".") == 0 for k in adapted):
            return i
    return len(layers)


def folded_query_losses(model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch, inner: InnerLoop) -> Tensor:
    """Per-task query losses `[B]` with every task folded into one graph.

    With a `Subset` rule (ANIL adapts the head only), the layers before the first adapted one run
    once on the support set and once on the query set, not once per inner step, and as one plain
    batch of all tasks' images (`engine.shared`), since every task shares their weights.
    """
    layers = trace_chain(model)
    tasks = len(batch)
    adapted = inner.rule.names if isinstance(inner.rule, Subset) else None
    first = 0 if adapted is None else frozen_prefix(layers, params, adapted)
    if first > 0:
        shared = {k: v.detach() for k, v in params.items()} if inner.order == 0 else params
        sx = shared_forward(shared, batch.support_x, layers[:first])
        qx = shared_forward(shared, batch.query_x, layers[:first])
    else:
        sx, qx = fold_input(batch.support_x), fold_input(batch.query_x)
    tail = layers[first:]
    current = folded_adapt(model, params, sx, batch.support_y, inner, adapted, tail)
    return per_task_loss(inner.loss_fn, folded_forward(model, current, qx, tasks, tail), batch.query_y)
