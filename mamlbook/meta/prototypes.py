"""Prototypical networks (Snell et al. 2017): classify a query by the nearest class mean of embedded shots.

Also ProtoMAML's initialization (Triantafillou et al. 2020, Meta-Dataset, section 4): before MAML's inner
loop, the linear head is set from the task's prototypes, `W_k = 2 c_k`, `b_k = -|c_k|^2`, whose logits
`2 c_k.z - |c_k|^2 = -|z - c_k|^2 + |z|^2` are the prototype logits up to a per-query constant. The
head then starts at the prototype classifier for whatever labels the task gives its classes, so the
model is invariant to the order of the labels, and the inner steps refine it and the body.

A task's support images are embedded by the model's body, each class's embeddings are averaged into
a prototype, and a query's logits are minus its squared Euclidean distances to the prototypes. Meta-
training minimizes the query cross-entropy of those logits over tasks; there is no inner loop, so a
meta-iteration costs one forward and one backward pass of the body.

The embedding is `model.body` (Conv4 has one: everything but the linear head). Support and query
images of a task go through the body together, so batch norm on batch statistics normalizes them
with the same statistics, as Conv4's MAML evaluation does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..tasks import TaskBatch


def body_of(model: nn.Module) -> nn.Module:
    """The embedding network: `model.body`; a clear error for a model without one."""
    body = getattr(model, "body", None)
    if not isinstance(body, nn.Module):
        raise ValueError(
            f"prototypical networks embed with the model's `body` (all layers but the head); "
            f"{type(model).__name__} has none: give it a `body` submodule"
        )
    return body


def embed(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """`x: [M, ...]` -> `[M, D]` through `model.body` with the `body.*` entries of `params`."""
    body = body_of(model)
    own = {k.removeprefix("body."): v for k, v in params.items() if k.startswith("body.")}
    return functional_call(body, own, (x,)).flatten(1)


def prototypes(support: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """Class means of the embedded shots: `support: [S, D]`, `support_y: [S]` -> `[n_way, D]`."""
    onehot = F.one_hot(support_y, n_way).to(support.dtype)  # [S, N]
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        raise ValueError("every class needs at least one support example to have a prototype")
    return onehot.T @ support / counts.unsqueeze(1)


def prototype_logits(query: Tensor, centres: Tensor) -> Tensor:
    """Minus squared Euclidean distances: `query: [Q, D]`, `centres: [N, D]` -> `[Q, N]`."""
    return -(query.unsqueeze(1) - centres.unsqueeze(0)).pow(2).sum(-1)


def task_logits(
    model: nn.Module, params: Mapping[str, Tensor], support_x: Tensor, support_y: Tensor, query_x: Tensor
) -> Tensor:
    """One task's query logits `[Q, N]`: support and query embedded in one pass (shared batch statistics)."""
    features = embed(model, params, torch.cat([support_x, query_x]))
    support, query = features[: len(support_x)], features[len(support_x) :]
    n_way = int(support_y.max()) + 1
    return prototype_logits(query, prototypes(support, support_y, n_way))


def prototype_loss(model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch) -> Tensor:
    """Mean over the batch's tasks of the query cross-entropy of the prototype logits."""
    losses = [
        F.cross_entropy(
            task_logits(model, params, batch.support_x[i], batch.support_y[i], batch.query_x[i]), batch.query_y[i]
        )
        for i in range(len(batch))
    ]
    return torch.stack(losses).mean()


def prototype_accuracy(model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Per-task query loss and accuracy `([B], [B])`, without a graph."""
    losses, accuracies = [], []
    with torch.no_grad():
        for i in range(len(batch)):
            logits = task_logits(model, params, batch.support_x[i], batch.support_y[i], batch.query_x[i])
            losses.append(F.cross_entropy(logits, batch.query_y[i]))
            accuracies.append((logits.argmax(-1) == batch.query_y[i]).float().mean())
    return torch.stack(losses), torch.stack(accuracies)


def linear_head(model: nn.Module, params: Mapping[str, Tensor]) -> tuple[str, str]:
    """The head's weight and bias names (`head.weight`, `head.bias`); a clear error when `model.head` is
    not a linear layer on the body's features."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.bias is None or "head.weight" not in params:
        raise ValueError(
            f"ProtoMAML sets the model's `head` (a linear layer with a bias on the body's features) from "
            f"prototypes; {type(model).__name__} has no such head"
        )
    return "head.weight", "head.bias"


def prototype_head(model: nn.Module, params: Mapping[str, Tensor], support_x: Tensor, support_y: Tensor) -> dict:
    """`params` with the head set from the support set's prototypes (ProtoMAML): `head.weight = 2 C`,
    `head.bias = -|C|^2` for `C: [N, D]` the class means of the embedded shots (support alone, so batch
    statistics come from the shots, as in the inner loop). Differentiable in the body's parameters:
    the meta-gradient reaches the body through the prototypes too."""
    weight, bias = linear_head(model, params)
    n_way = int(support_y.max()) + 1
    if params[weight].shape[0] != n_way:
        raise ValueError(f"the head has {params[weight].shape[0]} outputs but the task has {n_way} classes")
    centres = prototypes(embed(model, params, support_x), support_y, n_way)
    return {**params, weight: 2 * centres, bias: -centres.pow(2).sum(-1)}
