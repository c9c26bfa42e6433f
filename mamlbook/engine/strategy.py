"""Choosing how a meta-batch is executed, and the meta-loss and meta-gradient built on that choice."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ..functional import Params
from ..losses import LossFn
from ..meta import InnerLoop, InnerRule, Subset
from ..meta.mamlpp import has_step_batch_norm
from ..precision import check_lowers, reduced_precision
from ..tasks import TaskBatch
from .chain import is_foldable, trace_chain
from .fallback import Result, failure, with_fallback
from .folded import frozen_prefix
from .mlp_closed import is_mlp_chain
from .registry import STRATEGIES
from .verified import is_verified, probe, unverified_layers, warn_if_unverified, why_unverified
from .vmapped import has_batch_norm


def _refuses(model: nn.Module, strategy: str) -> bool:
    """Whether `strategy` raises on `model` itself (vmap with batch norm, folding a non-chain, the
    closed form on anything but a plain chain of Linear layers and activations)."""
    if strategy in ("closed", "closed-compiled"):
        return not is_mlp_chain(model)
    if strategy == "vmap":
        return has_batch_norm(model)
    if strategy in ("folded", "checkpointed"):
        return not is_foldable(model)
    if strategy == "threads":
        return has_step_batch_norm(model)
    return False


def available_strategies(model: nn.Module) -> list[str]:
    """The strategies that run on `model` and are verified to compute the loop's meta-gradient for
    every layer of it (`engine.verified`): vmap is wrong with batch, layer and instance norm."""
    return [s for s in STRATEGIES if not _refuses(model, s) and is_verified(model, s)]


def resolve_strategy(
    strategy: str, model: nn.Module, rule: InnerRule | None = None, *, batch: TaskBatch | None = None
) -> str:
    """The concrete strategy for `strategy`; "auto" picks the fastest right one (see `explain_auto`,
    which can probe an unverified model on a `batch`-shaped example). A strategy asked for by name runs,
    with an `UnverifiedStrategyWarning` (once per model structure) if it is not verified on `model`."""
    if strategy == "auto":
        return auto_strategy(model, rule=rule, batch=batch)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: auto, {', '.join(STRATEGIES)}")
    if not _refuses(model, strategy):  # a refusal raises its own clearer error
        warn_if_unverified(model, strategy, batch)
    return strategy


def _run(
    strategy: str, model: nn.Module, rule: InnerRule | None, batch: TaskBatch, compute: Callable[[str], Result]
) -> Result:
    """`compute` with the concrete strategy for `strategy`; under "auto", one that raises gives way to
    the loop (`engine.fallback`): auto never fails where the loop works."""
    name = resolve_strategy(strategy, model, rule, batch=batch)
    if strategy != "auto" or name == "loop":
        return compute(name)
    return with_fallback(model, name, compute)


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
    precision: str | None = None,
) -> Tensor:
    """Post-adaptation query loss of each task, `[B]`, by the chosen execution strategy; `precision`
    ("bf16", "fp16") runs the matrix products in reduced precision (`mamlbook.precision`)."""
    inner = InnerLoop(loss_fn, steps, inner_lr, order, rule)
    return _query_losses(model, params, batch, inner, strategy, precision)


def _query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    inner: InnerLoop,
    strategy: str = "loop",
    precision: str | None = None,
) -> Tensor:
    """`query_losses` for settings already gathered in an `InnerLoop`: `strategy` resolved, then run."""
    dtype = next(iter(params.values())).dtype
    check_lowers(precision, dtype)

    def compute(name: str) -> Tensor:
        with reduced_precision(precision, batch.query_x.device):
            return STRATEGIES[name](model, params, batch, inner).to(dtype)

    return _run(strategy, model, inner.rule, batch, compute)


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
    precision: str | None = None,
) -> Tensor:
    """The MAML objective: the mean over tasks of the post-adaptation query loss."""
    inner = InnerLoop(loss_fn, steps, inner_lr, order, rule)
    return _query_losses(model, params, batch, inner, strategy, precision).mean()


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
    precision: str | None = None,
) -> tuple[Tensor, Params]:
    """The meta-loss and its gradient with respect to `params` (which need not require grad).

    `chunk` runs the meta-batch `chunk` tasks at a time, with a backward after each, so only one
    chunk's graph is alive at once: peak memory falls with the chunk while the result stays the same.
    `precision` ("bf16", "fp16") runs the forward and the inner loop's matrix products in reduced
    precision; the parameters, inner updates and the meta-gradient stay in the parameters' dtype.
    """
    check_lowers(precision, next(iter(params.values())).dtype)
    inner = InnerLoop(loss_fn, steps, inner_lr, order, rule)
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    tasks = len(batch)
    size = tasks if chunk is None else max(1, int(chunk))
    total = torch.zeros((), dtype=next(iter(leaves.values())).dtype, device=batch.query_x.device)
    sums: list[Tensor | None] = [None] * len(leaves)

    def chunk_gradient(name: str, part: TaskBatch) -> tuple[Tensor, list[Tensor | None]]:
        with torch.enable_grad():
            with reduced_precision(precision, part.query_x.device):
                losses = STRATEGIES[name](model, leaves, part, inner)
            loss = losses.to(total.dtype).sum() / tasks
            # order 0 cuts adapted parameters from theta: the meta-gradient is zero by definition.
            grads = (
                torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                if loss.requires_grad
                else [None] * len(leaves)
            )
        return loss, list(grads)

    for start in range(0, tasks, size):
        part = batch if size >= tasks else batch[start : start + size]
        # The backward is inside the fallback too: a strategy may fail only when differentiated.
        loss, grads = _run(strategy, model, rule, part, lambda name, part=part: chunk_gradient(name, part))
        total = total + loss.detach()
        sums = [g if s is None else (s if g is None else s + g) for s, g in zip(sums, grads, strict=True)]
    return total, {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(leaves.items(), sums, strict=True)}


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def auto_strategy(
    model: nn.Module,
    device: torch.device | str | None = None,
    rule: InnerRule | None = None,
    *,
    batch: TaskBatch | None = None,
) -> str:
    """The fastest strategy that is right for `model` on `device`, by the benchmark (book/faster.md)."""
    return explain_auto(model, device, rule, batch=batch)[0]


def adapts_tail_only(model: nn.Module, rule: InnerRule | None) -> bool:
    """Whether `rule` leaves a leading part of a foldable `model` unadapted (ANIL's body)."""
    if not isinstance(rule, Subset) or not is_foldable(model):
        return False
    return frozen_prefix(trace_chain(model), dict(model.named_parameters()), rule.names) > 0


def explain_auto(
    model: nn.Module,
    device: torch.device | str | None = None,
    rule: InnerRule | None = None,
    *,
    batch: TaskBatch | None = None,
) -> tuple[str, str]:
    """What `strategy="auto"` picks for `model` on `device` (default: the model's), and why.

    The fastest strategy by the rules below is taken only if it is right for `model`: if every layer
    is on its verified list (`engine.verified`), or else if a float64 probe on a tiny meta-batch shaped
    like `batch` matches the loop (cached per model structure). Without `batch` there is nothing to
    probe with, and an unverified model gets the loop. With `batch`, a forward of the model's own is
    run once, and a `torch.autograd.Function` in it makes the model unverified (vmap cannot run one
    without `setup_context`, and no list vouches for its backward); without `batch` it goes unseen.
    A strategy that raised on a model of this structure under "auto" gives way to the loop, and the
    reason quotes its error (`engine.fallback`).

    - a rule that adapts only the last layers (ANIL): `folded`, which runs the shared body once per
      task as ordinary layers and the inner steps on the adapted tail alone;
    - a GPU: `folded` for a chain of supported modules (one grouped graph instead of B small ones,
      and right with batch norm), else `vmap` without batch norm, else `loop`;
    - the CPU: convolutions already fill the cores one task at a time, and grouped convolutions are
      slower there, so `loop` for convolutional models; `folded` for other foldable chains (1.6-1.8x
      faster than vmap on the sinusoid MLP at meta-batch 5 and 25, and right with batch norm);
      `vmap` for small models that do not fold and have no batch norm.
    """
    name, reason = _checked(model, device, rule, batch)
    failed = failure(model, name) if name != "loop" else None
    if failed is not None:
        return "loop", f"{reason}; but {name} raised on {type(model).__name__} ({failed}), so the loop runs it"
    return name, reason


def _checked(
    model: nn.Module, device: torch.device | str | None, rule: InnerRule | None, batch: TaskBatch | None
) -> tuple[str, str]:
    """The fastest strategy if it is verified or probed right on `model`, else the loop; and why."""
    name, reason = _fastest(model, device, rule)
    missing = unverified_layers(model, name, batch)
    if not missing:
        return name, reason
    why = why_unverified(missing, name)
    if batch is None:
        return "loop", f"{why}; no example batch to probe {name} with"
    verdict = probe(model, name, batch)
    if verdict.passed:
        return name, f"{verdict.describe()} ({why}); {reason}"
    return "loop", f"{why}; {verdict.describe()}"


def _fastest(model: nn.Module, device: torch.device | str | None, rule: InnerRule | None) -> tuple[str, str]:
    """The fastest strategy for `model` by the benchmark, before any check of its layers."""
    dev = torch.device(device) if device is not None else _device_of(model)
    if adapts_tail_only(model, rule):
        return "folded", "the rule adapts only the last layers: the shared body runs once per task, unfolded"
    foldable = is_foldable(model)
    batch_norm = has_batch_norm(model)
    if dev.type != "cpu" and foldable:
        return "folded", f"{dev.type}: all tasks in one grouped graph, exact with batch norm"
    if dev.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "loop", "cpu: convolutions fill the cores one task at a time; grouped convolutions are slower here"
    if foldable and batch_norm:
        return "folded", f"{dev.type}: batch norm rules vmap out (wrong second-order gradient); folding is exact"
    if foldable:
        return "folded", f"{dev.type}: all tasks in one batched graph per layer (faster than vmap here)"
    if not batch_norm:
        return "vmap", f"{dev.type}: small layers, not a foldable chain: one vectorized pass beats per-task calls"
    return "loop", "not foldable, and vmap's second-order gradient through batch norm is wrong"
