"""Meta-test evaluation: how the query loss (and accuracy) falls over adaptation steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.func import vmap

from ..engine.vmapped import has_batch_norm
from ..functional import forward
from ..losses import LossFn, get_loss
from ..meta import InnerRule, Shifted, adapt, autograd_grads, func_grads
from ..meta.inner import check_steps
from ..meta.mamlpp import at_step, has_step_batch_norm
from ..tasks import TaskBatch


def accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """Fraction correct: argmax for class logits `[N, C]`, sign for one binary logit `[N, 1]`."""
    if logits.shape[-1] == 1 and target.is_floating_point():
        return ((logits > 0).to(target.dtype) == target).float().mean()
    return (logits.argmax(dim=-1) == target).float().mean()


def adaptation_curve(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn = "mse",
    steps: int = 10,
    inner_lr: float = 0.01,
    with_accuracy: bool = False,
    rule: InnerRule | None = None,
    init: Callable[[Mapping[str, Tensor], Tensor, Tensor], Mapping[str, Tensor]] | None = None,
) -> dict[str, Tensor]:
    """Query loss of every task after 0, 1, ..., `steps` inner steps: `{"loss": [B, steps+1]}`.

    `init(params, support_x, support_y)`, where given, makes each task's starting point (ProtoMAML's
    prototype head, `meta.prototypes.prototype_head`); tasks then run one by one.

    Adaptation here never builds a meta-graph (order 0). With `with_accuracy`, adds "accuracy".
    `rule` replaces plain SGD (learned rates); step s runs as inner step s (per-step rates and BN).
    """
    check_steps(steps, minimum=0)
    loss = get_loss(loss_fn)
    # vmap cannot run batch norm that updates running statistics (MAML++'s per-step BN does).
    batched = init is None and not (has_batch_norm(model) or has_step_batch_norm(model))
    grads = func_grads if batched else autograd_grads

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
        start = params if init is None else init(params, sx, sy)
        current = {k: v.detach() for k, v in start.items()}
        losses, accs = [], []
        for step in range(steps + 1):
            with at_step(model, max(step - 1, 0)):
                if step:
                    shifted = None if rule is None else Shifted(rule, step - 1)
                    current = adapt(model, current, sx, sy, loss, 1, inner_lr, order=0, rule=shifted, grads=grads)
                out = forward(model, current, qx)
            losses.append(loss(out, qy).detach())
            accs.append(accuracy(out, qy) if with_accuracy else torch.zeros(()))
        return torch.stack(losses), torch.stack(accs)

    if batched:
        losses, accs = vmap(one_task)(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    else:
        pairs = [
            one_task(batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i])
            for i in range(len(batch))
        ]
        losses = torch.stack([p[0] for p in pairs])
        accs = torch.stack([p[1] for p in pairs])
    result = {"loss": losses}
    if with_accuracy:
        result["accuracy"] = accs
    return result


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    v = values.detach().double().flatten()
    if v.numel() < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(1.96 * v.std(unbiased=True) / math.sqrt(v.numel()))
