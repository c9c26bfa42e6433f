"""MAML++ (Antoniou et al., "How to train your MAML", 2019), each fix a separate switch.

- MSL: the meta-loss is a weighted sum of the query loss after *every* inner step, with weights
  that start uniform and anneal towards the last step (gradients reach early steps directly);
- DA:  first-order meta-gradients for the first iterations, second-order afterwards;
- BNRS / BNWB: batch norm keeps running statistics (BNRS) and a scale and shift (BNWB) of its own
  for each inner step, because the features' distribution changes as the weights adapt;
- LSLR: learned per-layer, per-step inner rates (`rules.LSLR`);
- CA:  cosine annealing of the meta learning rate.

The pieces here are pure functions of the iteration, so a resumed run recomputes them exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from ..functional import forward
from ..losses import LossFn, get_loss
from ..tasks import TaskBatch
from .inner import GradBackend, adapt, autograd_grads, func_grads
from .rules import InnerRule, Shifted


# ----- MSL -----
def msl_weights(steps: int, progress: float, floor: float | None = None) -> Tensor:
    """Per-step loss weights `[steps]`: uniform at `progress` 0, the last step's by `progress` 1.

    The earlier steps' weights fall linearly from 1/steps to `floor` (default 0.03/steps, the
    authors' value) and the last step takes the rest, so the weights always sum to one.
    """
    floor = 0.03 / steps if floor is None else floor
    progress = min(max(progress, 0.0), 1.0)
    early = max((1.0 - progress) / steps, floor) if steps > 1 else 0.0
    weights = torch.full((steps,), early, dtype=torch.float64)
    weights[-1] = 1.0 - early * (steps - 1)
    return weights


# ----- DA -----
def derivative_order(iteration: int, first_order_iterations: int, order: int = 2) -> int:
    """1 while `iteration < first_order_iterations` (cheap, stable start), then `order`."""
    return 1 if iteration < first_order_iterations else order


# ----- CA -----
def cosine_lr(base_lr: float, iteration: int, horizon: int, min_lr: float = 0.0) -> float:
    """The meta learning rate at `iteration` under cosine annealing from `base_lr` to `min_lr`."""
    if horizon <= 0:
        return base_lr
    t = min(iteration, horizon) / horizon
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))


# ----- BNRS / BNWB -----
class StepBatchNorm(nn.Module):
    """Batch norm with a scale/shift (`per_step_weights`) and running statistics (`per_step_stats`)
    for each inner step; `step` says which row the next forward pass uses (clamped to the last).

    Normalization uses the batch's own statistics in training mode (as `Conv4` does); the per-step
    running statistics are collected then and used in eval mode. Weights `[steps, C]` or `[C]`.
    """

    def __init__(
        self,
        num_features: int,
        steps: int,
        per_step_weights: bool = True,
        per_step_stats: bool = True,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_features, self.steps, self.eps, self.momentum = num_features, steps, eps, momentum
        self.per_step_weights, self.per_step_stats = per_step_weights, per_step_stats
        shape = (steps, num_features) if per_step_weights else (num_features,)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        if per_step_stats:
            self.register_buffer("running_mean", torch.zeros(steps, num_features))
            self.register_buffer("running_var", torch.ones(steps, num_features))
        self.step = 0

    def forward(self, x: Tensor) -> Tensor:
        row = min(self.step, self.steps - 1)
        weight = self.weight[row] if self.per_step_weights else self.weight
        bias = self.bias[row] if self.per_step_weights else self.bias
        if not self.per_step_stats:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        # Row views of the buffers: batch_norm updates the step's own statistics in place.
        mean, var = self.running_mean[row], self.running_var[row]
        return F.batch_norm(x, mean, var, weight, bias, self.training, self.momentum, self.eps)


def has_step_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, StepBatchNorm) for m in model.modules())


def per_step_batch_norm(model: nn.Module, steps: int, weights: bool = True, stats: bool = True) -> nn.Module:
    """A copy of `model` whose batch-norm layers are `StepBatchNorm`s (started from their weights).

    Parameter names are kept, so `forward(model, params, x)` works unchanged; only the shapes of
    the batch-norm weights gain a leading `[steps]` when `weights`. The input model is untouched.
    """
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                replacement = StepBatchNorm(child.num_features, steps, weights, stats, child.eps, child.momentum or 0.1)
                ref = child.weight if child.weight is not None else torch.ones(child.num_features)
                replacement = replacement.to(device=ref.device, dtype=ref.dtype)
                with torch.no_grad():
                    if child.weight is not None:
                        replacement.weight.copy_(child.weight.expand_as(replacement.weight))
                        replacement.bias.copy_(child.bias.expand_as(replacement.bias))
                setattr(parent, name, replacement)
    return model


@contextmanager
def at_step(model: nn.Module, step: int) -> Iterator[None]:
    """Run forward passes of `model` as inner step `step` (a no-op without `StepBatchNorm`)."""
    layers = [m for m in model.modules() if isinstance(m, StepBatchNorm)]
    previous = [m.step for m in layers]
    for m in layers:
        m.step = step
    try:
        yield
    finally:
        for m, s in zip(layers, previous, strict=True):
            m.step = s


# ----- the multi-step objective -----
def multi_step_query_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    loss_fn: str | LossFn,
    steps: int,
    rule: InnerRule,
    order: int = 2,
    weights: Sequence[float] | None = None,
    grads: GradBackend = autograd_grads,
) -> Tensor:
    """sum_s w_s L_query(theta_s) for one task; `weights=None` scores the last step only (MAML).

    Both the support pass of step s and the query pass after it run as step s (per-step BN).
    """
    loss = get_loss(loss_fn)
    if weights is None:
        weights = [0.0] * (steps - 1) + [1.0]
    if len(weights) != steps:
        raise ValueError(f"need one loss weight per inner step ({steps}), got {len(weights)}")
    current = dict(params)
    total = None
    for step in range(steps):
        with at_step(model, step):
            current = adapt(
                model, current, support_x, support_y, loss, 1, order=order, rule=Shifted(rule, step), grads=grads
            )
            if weights[step] > 0:
                term = weights[step] * loss(forward(model, current, query_x), query_y)
                total = term if total is None else total + term
    return total


def multi_step_query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn,
    steps: int,
    rule: InnerRule,
    order: int = 2,
    weights: Sequence[float] | None = None,
    vectorized: bool = False,
) -> Tensor:
    """Per-task multi-step query losses `[B]`; `vectorized` uses vmap (models without batch norm)."""
    if vectorized:

        def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
            return multi_step_query_loss(
                model, params, sx, sy, qx, qy, loss_fn, steps, rule, order, weights, func_grads
            )

        return vmap(one_task)(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    return batch.per_task(
        lambda sx, sy, qx, qy: multi_step_query_loss(
            model, params, sx, sy, qx, qy, loss_fn, steps, rule, order, weights
        )
    )
