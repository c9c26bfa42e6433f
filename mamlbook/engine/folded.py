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

import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..functional import Params
from ..losses import LossFn, get_loss
from ..meta import SGD, InnerRule, Subset
from ..tasks import TaskBatch

# Modules that act on each channel (or element) separately: they run on the folded tensor unchanged.
_PER_CHANNEL = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.LeakyReLU, nn.GELU, nn.Identity, nn.MaxPool2d, nn.AvgPool2d)
_SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Flatten, *_PER_CHANNEL)


class NotFoldable(ValueError):
    """The model uses a module or function the folded strategy has no rule for."""


@dataclass(frozen=True)
class _Layer:
    name: str
    module: nn.Module


def _trace(model: nn.Module) -> list[_Layer]:
    """The model as a straight chain of supported modules, or `NotFoldable`."""
    if isinstance(model, _SUPPORTED):
        _check_module(type(model).__name__, model)
        return [_Layer("", model)]
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many kinds of errors on dynamic control flow
        raise NotFoldable(f"{type(model).__name__} cannot be traced by torch.fx: {exc}") from None
    modules = dict(model.named_modules())
    layers: list[_Layer] = []
    previous = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise NotFoldable(f"{type(model).__name__} takes more than one input")
            previous = node
        elif node.op == "call_module":
            module = modules[node.target]
            if not isinstance(module, _SUPPORTED):
                raise NotFoldable(f"the folded strategy has no rule for {type(module).__name__} ({node.target})")
            if list(node.args) != [previous] or node.kwargs:
                raise NotFoldable(f"{type(model).__name__} is not a chain of modules (at {node.target})")
            _check_module(node.target, module)
            layers.append(_Layer(node.target, module))
            previous = node
        elif node.op == "output":
            if node.args[0] is not previous:
                raise NotFoldable(f"{type(model).__name__} does not return its last module's output")
        else:
            raise NotFoldable(
                f"the folded strategy supports chains of {', '.join(t.__name__ for t in _SUPPORTED)}; "
                f"{type(model).__name__} calls {node.op} {node.target}"
            )
    return layers


def _check_module(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise NotFoldable(f"{name}: padding_mode {module.padding_mode!r} is not supported")
    if isinstance(module, nn.BatchNorm2d) and module.training and module.track_running_stats:
        # Running statistics would mix tasks and be updated in place; MAML models use batch statistics.
        raise NotFoldable(f"{name}: batch norm that tracks running statistics in training mode is not supported")
    if isinstance(module, nn.Flatten) and (module.start_dim != 1 or module.end_dim != -1):
        raise NotFoldable(f"{name}: only Flatten(start_dim=1, end_dim=-1) is supported")


_CHAINS: weakref.WeakKeyDictionary[nn.Module, list[_Layer]] = weakref.WeakKeyDictionary()


def trace_chain(model: nn.Module) -> list[_Layer]:
    """The traced chain of `model`, cached per model object (tracing costs milliseconds)."""
    if model not in _CHAINS:
        _CHAINS[model] = _trace(model)
    return _CHAINS[model]


def is_foldable(model: nn.Module) -> bool:
    try:
        trace_chain(model)
    except NotFoldable:
        return False
    return True


def fold_input(x: Tensor) -> Tensor:
    """`[B, N, C, H, W]` -> `[N, B*C, H, W]`; vectors `[B, N, F]` stay as they are."""
    if x.dim() == 5:
        b, n, c, h, w = x.shape
        return x.transpose(0, 1).reshape(n, b * c, h, w)
    if x.dim() == 3:
        return x
    raise ValueError(f"the folded strategy needs inputs [B, N, C, H, W] or [B, N, F], got shape {tuple(x.shape)}")


def _param(params: Mapping[str, Tensor], name: str, attr: str) -> Tensor | None:
    return params.get(f"{name}.{attr}" if name else attr)


def folded_forward(
    model: nn.Module, params: Mapping[str, Tensor], x: Tensor, tasks: int, layers: list[_Layer] | None = None
) -> Tensor:
    """Run `model` (or the part of its chain in `layers`) on all tasks at once with per-task `params`.

    `params`: `[B, *shape]` each; `x` is folded (see `fold_input`); the model's output is `[B, N, out]`.
    """
    for layer in trace_chain(model) if layers is None else layers:
        m, name = layer.module, layer.name
        if isinstance(m, nn.Conv2d):
            w = _param(params, name, "weight")
            b = _param(params, name, "bias")
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
            w = _param(params, name, "weight")
            b = _param(params, name, "bias")
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
            w = _param(params, name, "weight")
            b = _param(params, name, "bias")
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
    loss_fn: str | LossFn,
    steps: int,
    inner_lr: float,
    order: int,
    rule: InnerRule | None = None,
    adapt_names: Collection[str] | None = None,
    layers: list[_Layer] | None = None,
) -> Params:
    """Per-task adapted parameters `[B, *shape]` for all tasks at once (same semantics as `meta.adapt`).

    `support_x: [B, S, ...]`, or already folded features when `layers` is a tail of the chain.
    `adapt_names` restricts adaptation to those parameters (ANIL: the head); the others stay shared.
    """
    tasks = support_y.shape[0]
    update = rule if rule is not None else SGD(inner_lr)
    sx = fold_input(support_x) if layers is None else support_x
    current = expand_params(params, tasks)
    if order == 0:
        current = {k: v.detach() for k, v in current.items()}
    names = [k for k in current if adapt_names is None or k in adapt_names]
    for step in range(steps):
        leaves = dict(current)
        for k in names:
            if not leaves[k].requires_grad:
                leaves[k] = leaves[k].detach().requires_grad_()
        with torch.enable_grad():
            # Tasks are independent, so the gradient of the sum is each task's own gradient.
            out = folded_forward(model, leaves, sx, tasks, layers)
            loss = per_task_loss(loss_fn, out, support_y).sum()
            grads = torch.autograd.grad(loss, [leaves[k] for k in names], create_graph=order == 2, allow_unused=True)
        g = {k: torch.zeros_like(leaves[k]) if v is None else v for k, v in zip(names, grads, strict=True)}
        if order < 2:
            g = {k: v.detach() for k, v in g.items()}
        updated = update({k: current[k] for k in names}, g, step)
        if order == 0:
            updated = {k: v.detach() for k, v in updated.items()}
        current = {**current, **updated}
    return current


def frozen_prefix(layers: list[_Layer], params: Mapping[str, Tensor], adapted: Collection[str]) -> int:
    """How many leading layers hold no adapted parameter: their output is the same at every inner step."""
    for i, layer in enumerate(layers):
        prefix = f"{layer.name}." if layer.name else ""
        if any(k.startswith(prefix) and k[len(prefix) :].count(".") == 0 for k in adapted):
            return i
    return len(layers)


def folded_query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn,
    steps: int,
    inner_lr: float,
    order: int,
    rule: InnerRule | None = None,
) -> Tensor:
    """Per-task query losses `[B]` with every task folded into one graph.

    With a `Subset` rule (ANIL adapts the head only), the layers before the first adapted one run
    once on the support set and once on the query set, not once per inner step, and as one plain
    batch of all tasks' images (`engine.shared`), since every task shares their weights.
    """
    layers = trace_chain(model)
    tasks = len(batch)
    adapted = rule.names if isinstance(rule, Subset) else None
    first = 0 if adapted is None else frozen_prefix(layers, params, adapted)
    if first > 0:
        from .shared import shared_forward  # shared imports this module's layer helpers

        shared = {k: v.detach() for k, v in params.items()} if order == 0 else params
        sx = shared_forward(shared, batch.support_x, layers[:first])
        qx = shared_forward(shared, batch.query_x, layers[:first])
    else:
        sx, qx = fold_input(batch.support_x), fold_input(batch.query_x)
    tail = layers[first:]
    current = folded_adapt(model, params, sx, batch.support_y, loss_fn, steps, inner_lr, order, rule, adapted, tail)
    return per_task_loss(loss_fn, folded_forward(model, current, qx, tasks, tail), batch.query_y)
