"""Choosing how a meta-batch is executed, and the meta-loss and meta-gradient built on that choice."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ..functional import Params
from ..losses import LossFn
from ..meta import InnerRule, Subset
from ..meta.inner import check_order, check_steps
from ..tasks import TaskBatch
from .checkpointed import checkpointed_query_losses
from .folded import folded_query_losses, frozen_prefix, is_foldable, trace_chain
from .loop import loop_query_losses
from .threaded import threaded_query_losses
from .vmapped import has_batch_norm, vmap_query_losses

QueryLosses = Callable[..., Tensor]

STRATEGIES: dict[str, QueryLosses] = {
    "loop": loop_query_losses,
    "vmap": vmap_query_losses,
    "folded": folded_query_losses,
    "checkpointed": checkpointed_query_losses,
    "threads": threaded_query_losses,
}


def available_strategies(model: nn.Module) -> list[str]:
    """The strategies that compute the right meta-gradient for `model` (vmap is wrong with batch norm)."""
    names = ["loop"]
    if not has_batch_norm(model):
        names.append("vmap")
    if is_foldable(model):
        names += ["folded", "checkpointed"]
    return [*names, "threads"]


def resolve_strategy(strategy: str, model: nn.Module, rule: InnerRule | None = None) -> str:
    """The concrete strategy for `strategy`; "auto" picks the fastest right one (see `auto_strategy`)."""
    if strategy == "auto":
        return auto_strategy(model, rule=rule)
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
    run = STRATEGIES[resolve_strategy(strategy, model, rule)]
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
    chunk: int | None = None,
) -> tuple[Tensor, Params]:
    """The meta-loss and its gradient with respect to `params` (which need not require grad).

    `chunk` runs the meta-batch `chunk` tasks at a time, with a backward after each, so only one
    chunk's graph is alive at once: peak memory falls with the chunk while the result stays the same.
    """
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    tasks = len(batch)
    size = tasks if chunk is None else max(1, int(chunk))
    total = torch.zeros((), dtype=next(iter(leaves.values())).dtype, device=batch.query_x.device)
    sums: list[Tensor | None] = [None] * len(leaves)
    for start in range(0, tasks, size):
        part = batch if size >= tasks else batch[start : start + size]
        with torch.enable_grad():
            loss = query_losses(model, leaves, part, loss_fn, steps, inner_lr, order, strategy, rule).sum() / tasks
            # order 0 cuts adapted parameters from theta: the meta-gradient is zero by definition.
            grads = (
                torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                if loss.requires_grad
                else [None] * len(leaves)
            )
        total = total + loss.detach()
        sums = [g if s is None else (s if g is None else s + g) for s, g in zip(sums, grads, strict=True)]
    return total, {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), sums, strict=True)}


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def auto_strategy(model: nn.Module, device: torch.device | str | None = None, rule: InnerRule | None = None) -> str:
    """The fastest strategy that is right for `model` on `device`, by the benchmark (book/faster.md)."""
    return explain_auto(model, device, rule)[0]


def adapts_tail_only(model: nn.Module, rule: InnerRule | None) -> bool:
    """Whether `rule` leaves a leading part of a foldable `model` unadapted (ANIL's body)."""
    if not isinstance(rule, Subset) or not is_foldable(model):
        return False
    return frozen_prefix(trace_chain(model), dict(model.named_parameters()), rule.names) > 0


def explain_auto(
    model: nn.Module, device: torch.device | str | None = None, rule: InnerRule | None = None
) -> tuple[str, str]:
    """What `strategy="auto"` picks for `model` on `device` (default: the model's), and why.

    - a rule that adapts only the last layers (ANIL): `folded`, which runs the shared body once per
      task as ordinary layers and the inner steps on the adapted tail alone;
    - a GPU: `folded` for a chain of supported modules (one grouped graph instead of B small ones,
      and right with batch norm), else `vmap` without batch norm, else `loop`;
    - the CPU: convolutions already fill the cores one task at a time, and grouped convolutions are
      slower there, so `loop` for convolutional models; `vmap` for small models without batch norm
      (folded ties with it there); `folded` for foldable ones with batch norm, where vmap is wrong.
    """
    dev = torch.device(device) if device is not None else _device_of(model)
    if adapts_tail_only(model, rule):
        return "folded", "the rule adapts only the last layers: the shared body runs once per task, unfolded"
    foldable = is_foldable(model)
    batch_norm = has_batch_norm(model)
    if dev.type != "cpu" and foldable:
        return "folded", f"{dev.type}: all tasks in one grouped graph, exact with batch norm"
    if dev.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "loop", "cpu: convolutions fill the cores one task at a time; grouped convolutions are slower here"
    if not batch_norm:
        return "vmap", f"{dev.type}: small layers, so one vectorized pass beats per-task calls"
    if foldable:
        return "folded", f"{dev.type}: batch norm rules vmap out (wrong second-order gradient); folding is exact"
    return "loop", "not foldable, and vmap's second-order gradient through batch norm is wrong"
