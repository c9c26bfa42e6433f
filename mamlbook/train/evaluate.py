"""Meta-test evaluation: how the query loss (and accuracy) falls over adaptation steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

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


def query_outputs(
    model: nn.Module, params: Mapping[str, Tensor], support_x: Tensor, query_x: Tensor, transductive: bool = True
) -> Tensor:
    """The model's outputs `[Q, ...]` for one task's queries, with all of them in one batch or one at a time.

    With batch norm on the batch's own statistics (Conv4), one batch of queries is *transductive*:
    each query's output depends on the other queries. `transductive=False` is Nichol et al.'s
    protocol (2018): each query goes through alone, in a batch of the support set plus that query,
    and only its own output is kept.
    """
    if transductive:
        return forward(model, params, query_x)
    outputs = [forward(model, params, torch.cat([support_x, query_x[j : j + 1]]))[-1:] for j in range(len(query_x))]
    return torch.cat(outputs)


def _scores(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn,
    steps: int,
    inner_lr: float,
    scored: Sequence[int],
    with_accuracy: bool,
    rule: InnerRule | None,
    init: Callable[[Mapping[str, Tensor], Tensor, Tensor], Mapping[str, Tensor]] | None,
    transductive: bool,
) -> tuple[Tensor, Tensor]:
    """Query loss and accuracy `[B, len(scored)]` after each number of inner steps in `scored`."""
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
                if step not in scored:
                    continue
                out = query_outputs(model, current, sx, qx, transductive)
            losses.append(loss(out, qy).detach())
            accs.append(accuracy(out, qy) if with_accuracy else torch.zeros(()))
        return torch.stack(losses), torch.stack(accs)

    if batched:
        return vmap(one_task)(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    pairs = [
        one_task(batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i]) for i in range(len(batch))
    ]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


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
    All queries of a task go through the network in one batch (see `query_accuracy`).
    """
    losses, accs = _scores(
        model, params, batch, loss_fn, steps, inner_lr, range(steps + 1), with_accuracy, rule, init, True
    )
    result = {"loss": losses}
    if with_accuracy:
        result["accuracy"] = accs
    return result


def query_accuracy(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    loss_fn: str | LossFn = "ce",
    steps: int = 10,
    inner_lr: float = 0.01,
    rule: InnerRule | None = None,
    transductive: bool = True,
    init: Callable[[Mapping[str, Tensor], Tensor, Tensor], Mapping[str, Tensor]] | None = None,
) -> Tensor:
    """Query accuracy `[B]` of every task after `steps` inner steps on its support set.

    `transductive=True` scores all queries of a task in one batch, as `adaptation_curve` does (the
    same numbers). `transductive=False` scores each query alone with the support set
    (`query_outputs`), so that with batch norm on batch statistics no query sees the others.
    """
    _, accs = _scores(model, params, batch, loss_fn, steps, inner_lr, (steps,), True, rule, init, transductive)
    return accs[:, 0]


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    v = values.detach().double().flatten()
    if v.numel() < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(1.96 * v.std(unbiased=True) / math.sqrt(v.numel()))
