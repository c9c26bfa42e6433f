"""Meta-gradients computed by the libraries people use today, the way their documentation shows.

They serve as oracles in tests (same weights, same tasks, same numbers) and as the yardstick in
`mamlbook bench`. Imports are lazy: the peers are optional (`pip install mamlbook[compare]`).
"""

from __future__ import annotations

import contextlib
import copy
import io

import torch
from torch import nn

from ..functional import Params
from ..losses import LossFn, get_loss
from ..tasks import TaskBatch

PEERS = ("learn2learn", "higher", "torchopt")


def _require(name: str):
    try:
        # learn2learn imports gym, which prints a deprecation banner to stderr on import; executed
        # chapters would show it (and the book build treats cell stderr as a warning).
        with contextlib.redirect_stderr(io.StringIO()):
            return __import__(name)
    except ImportError as exc:
        raise ImportError(
            f"the comparison peer {name!r} is not installed ({exc}); run `make venv` or "
            "`pip install mamlbook[compare]` and scripts/install-learn2learn.sh"
        ) from None


def _grads_of(model: nn.Module) -> Params:
    return {
        k: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for k, p in model.named_parameters()
    }


def learn2learn_meta_gradient(
    model: nn.Module, batch: TaskBatch, loss_fn: str | LossFn, steps: int, inner_lr: float, order: int = 2
) -> tuple[float, Params]:
    """Mean query loss and its gradient by `l2l.algorithms.MAML`; `model.grad` is left populated."""
    l2l = _require("learn2learn")
    loss = get_loss(loss_fn)
    maml = l2l.algorithms.MAML(model, lr=inner_lr, first_order=order == 1)
    model.zero_grad(set_to_none=True)
    total = 0.0
    for i in range(len(batch)):
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(loss(learner(batch.support_x[i]), batch.support_y[i]))
        query = loss(learner(batch.query_x[i]), batch.query_y[i]) / len(batch)
        query.backward()
        total += query.item()
    return total, _grads_of(model)


def higher_meta_gradient(
    model: nn.Module, batch: TaskBatch, loss_fn: str | LossFn, steps: int, inner_lr: float, order: int = 2
) -> tuple[float, Params]:
    """Mean query loss and its gradient by `higher.innerloop_ctx`; `model.grad` is left populated."""
    higher = _require("higher")
    loss = get_loss(loss_fn)
    inner_opt = torch.optim.SGD(model.parameters(), lr=inner_lr)
    model.zero_grad(set_to_none=True)
    first_order = None if order == 2 else (lambda gs: [g.detach() for g in gs])
    total = 0.0
    for i in range(len(batch)):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(loss(fmodel(batch.support_x[i]), batch.support_y[i]), grad_callback=first_order)
            query = loss(fmodel(batch.query_x[i]), batch.query_y[i]) / len(batch)
            query.backward()
            total += query.item()
    return total, _grads_of(model)


def torchopt_meta_gradient(
    model: nn.Module, batch: TaskBatch, loss_fn: str | LossFn, steps: int, inner_lr: float, order: int = 2
) -> tuple[float, Params]:
    """Mean query loss and its gradient by `torchopt.MetaSGD`, as TorchOpt's MAML example runs it.

    The module's parameters are updated in place by the differentiable optimizer and restored per
    task; the query losses are averaged and differentiated once. Second order only: MetaSGD always
    differentiates through its steps.
    """
    if order != 2:
        raise ValueError("the torchopt peer computes second-order MAML only (MetaSGD differentiates its steps)")
    torchopt = _require("torchopt")
    loss = get_loss(loss_fn)
    inner_opt = torchopt.MetaSGD(model, lr=inner_lr)
    model.zero_grad(set_to_none=True)
    net_state = torchopt.extract_state_dict(model, by="reference", detach_buffers=True)
    opt_state = torchopt.extract_state_dict(inner_opt, by="reference")
    queries = []
    for i in range(len(batch)):
        for _ in range(steps):
            inner_opt.step(loss(model(batch.support_x[i]), batch.support_y[i]))
        queries.append(loss(model(batch.query_x[i]), batch.query_y[i]))
        torchopt.recover_state_dict(model, net_state)
        torchopt.recover_state_dict(inner_opt, opt_state)
    query = torch.stack(queries).mean()
    query.backward()
    return query.item(), _grads_of(model)


PEER_GRADIENTS = {
    "learn2learn": learn2learn_meta_gradient,
    "higher": higher_meta_gradient,
    "torchopt": torchopt_meta_gradient,
}


def model_with(model: nn.Module, params: Params) -> nn.Module:
    """A copy of `model` holding `params` as its own parameters, for libraries that want a module."""
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in clone.named_parameters():
            p.copy_(params[name])
    return clone
