"""MLP chains in closed form: the inner-loop gradient written out as tensor expressions.

For a chain of `Linear` layers and element-wise activations (ReLU, Tanh, Identity), the gradient of
the support loss is a handful of batched matrix products, which this module writes out by hand for all
tasks at once (`[B, N, F]` activations, `[B, out, in]` per-task weights):

    dL/dW_l = g_l^T a_l,   dL/db_l = sum_n g_l,   g_{l-1} = act'(z_{l-1}) ⊙ (g_l W_l)

and the SGD step is fused into the product (`W - lr * g^T a` is one `baddbmm`). The inner gradient is
thus an ordinary differentiable expression of the parameters, not the result of `autograd.grad` with
`create_graph`: one plain backward pass through it gives the exact second-order meta-gradient, with no
double backward. ReLU's derivative is a 0/1 mask (its second derivative is zero almost everywhere) and
Tanh's is `1 - tanh^2`, an expression autograd differentiates once, so nothing is approximated; the
tests (tests/test_engine_closed.py) hold it to the loop's meta-gradient in float64 to rounding.

It knows the gradients of the losses `mse`, `ce` (integer class targets) and `bce`, and the rules
`SGD`, `MetaSGD`, `LSLR` and `Shifted`/`Subset` around them; anything else raises `NotClosedForm`,
naming what it has no closed form for.

`closed-compiled` runs the same expressions under `torch.compile`: `torch.func.grad` of the summed query
loss with respect to per-task copies of the parameters gives every task's meta-gradient from one compiled
graph, and the returned losses carry them back to autograd. Compiling takes seconds to minutes per model
structure, loss, step count and shape, and needs a C++ compiler; plain SGD, order 2 only (else eager).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional import Params
from ..losses import LossFn, get_loss
from ..meta import LSLR, SGD, InnerLoop, InnerRule, MetaSGD, Shifted, Subset
from ..tasks import TaskBatch
from .chain import NotFoldable, trace_chain
from .folded import per_task_loss

_ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Identity: "identity"}
SUPPORTED_LAYERS: frozenset[type[nn.Module]] = frozenset({nn.Linear, *_ACTIVATIONS})
_RULES = (SGD, MetaSGD, LSLR)
_LOSSES = {F.mse_loss: "mse", F.cross_entropy: "ce", F.binary_cross_entropy_with_logits: "bce"}


class NotClosedForm(ValueError):
    """The model, rule or loss is one the closed-form strategy has no written-out gradient for."""


@dataclass(frozen=True)
class Step:
    """One layer of the chain: a `Linear` (its parameter names) or an activation (`kind`)."""

    kind: str  # "linear", "relu" or "tanh" (Identity layers are dropped)
    weight: str = ""
    bias: str = ""


_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[Step, ...]] = weakref.WeakKeyDictionary()


def mlp_plan(model: nn.Module) -> tuple[Step, ...]:
    """`model` as the chain of steps this strategy runs, cached per model; `NotClosedForm` otherwise."""
    if model not in _PLANS:
        _PLANS[model] = _plan(model)
    return _PLANS[model]


def is_mlp_chain(model: nn.Module) -> bool:
    """Whether the closed strategy runs `model` (for `strategy._refuses`: its layer types alone do not say)."""
    try:
        mlp_plan(model)
    except NotClosedForm:
        return False
    return True


def _plan(model: nn.Module) -> tuple[Step, ...]:
    known = ", ".join(sorted(t.__name__ for t in SUPPORTED_LAYERS))
    try:
        layers = trace_chain(model)
    except NotFoldable as exc:
        raise NotClosedForm(f"the closed strategy runs chains of {known}; {type(model).__name__}: {exc}") from None
    steps: list[Step] = []
    for layer in layers:
        m, prefix = layer.module, f"{layer.name}." if layer.name else ""
        if type(m) is nn.Linear:
            steps.append(Step("linear", f"{prefix}weight", f"{prefix}bias" if m.bias is not None else ""))
        elif type(m) in _ACTIVATIONS:
            if not any(s.kind == "linear" for s in steps):
                raise NotClosedForm(f"the closed strategy needs a Linear first; {type(model).__name__} starts with {m}")
            if _ACTIVATIONS[type(m)] != "identity":
                steps.append(Step(_ACTIVATIONS[type(m)]))
        else:
            where = f" ({layer.name})" if layer.name else ""
            raise NotClosedForm(
                f"the closed strategy runs chains of {known}; {type(model).__name__} has {type(m).__name__}{where}"
            )
    return tuple(steps)


def check_rule(rule: InnerRule | None) -> None:
    """`NotClosedForm` unless `rule` is SGD, MetaSGD, LSLR, or Shifted/Subset of them."""
    inner = rule
    while isinstance(inner, (Shifted, Subset)):
        inner = inner.rule
    if inner is not None and type(inner) not in _RULES:
        names = ", ".join(t.__name__ for t in (*_RULES, Shifted, Subset))
        raise NotClosedForm(f"the closed strategy knows the inner rules {names}; got {type(inner).__name__}")


def loss_kind(loss_fn: str | LossFn) -> str:
    loss = get_loss(loss_fn)
    if loss not in _LOSSES:
        name = getattr(loss, "__name__", type(loss).__name__)
        raise NotClosedForm(f"the closed strategy knows the gradients of mse, ce and bce; got the loss {name}")
    return _LOSSES[loss]


# --- one inner step, written out ----------------------------------------------------------------


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """`x [B, N, in]` through weights shared (`w [out, in]`) or per task (`w [B, out, in]`)."""
    if w.dim() == 2:
        return F.linear(x, w, b)
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def forward(plan: tuple[Step, ...], params: Mapping[str, Tensor], x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The output `[B, N, out]` and what the backward needs: each Linear's input, each activation's output."""
    saved: list[Tensor] = []
    for step in plan:
        if step.kind == "linear":
            saved.append(x)
            x = _linear(x, params[step.weight], params.get(step.bias) if step.bias else None)
        else:
            x = torch.relu(x) if step.kind == "relu" else torch.tanh(x)
            saved.append(x)
    return x, saved


def output_error(kind: str, out: Tensor, target: Tensor) -> tuple[Tensor, float]:
    """`(e, c)` with `c * e` the gradient of the per-task mean loss with respect to `out [B, N, out]`."""
    n = out.shape[1]
    if kind == "mse":
        return out - target, 2.0 / (n * out.shape[2])
    if kind == "bce":
        return torch.sigmoid(out) - target, 1.0 / (n * out.shape[2])
    # ce: softmax minus the one-hot target, averaged over the N examples.
    return torch.softmax(out, -1) - target, 1.0 / n


class OuterUpdate(torch.autograd.Function):
    """`w + alpha * g^T a` for `g [B, N, out]`, `a [B, N, in]`, `w [out, in]` or `[B, out, in]`: one SGD
    step on a weight, with a backward that orders its products for speed.

    Autograd's own backward of `baddbmm` computes the gradient of `g^T` as a product with an `[out, N]`
    result, a shape that the CPU's batched GEMM runs 3-7x slower than its transpose `[N, out]`; here
    both input gradients are `[N, *]` products. The backward is itself made of differentiable ops, and
    out of place: with an in-place `mul_`, a graph compiled under `torch.func.grad` got wrong weight
    gradients (torch 2.14; tests/test_compiled_step.py).
    """

    @staticmethod
    def forward(w: Tensor, g: Tensor, a: Tensor, alpha: float) -> Tensor:
        return torch.baddbmm(w, g.transpose(1, 2), a, alpha=alpha)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        w, g, a, alpha = inputs
        ctx.save_for_backward(g, a)
        ctx.alpha, ctx.shared = alpha, w.dim() == 2

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        g, a = ctx.saved_tensors
        grad_w = grad_g = grad_a = None
        if ctx.needs_input_grad[0]:
            grad_w = grad.sum(0) if ctx.shared else grad
        if ctx.needs_input_grad[1]:
            grad_g = torch.bmm(a, grad.transpose(1, 2)) * ctx.alpha
        if ctx.needs_input_grad[2]:
            grad_a = torch.bmm(g, grad) * ctx.alpha
        return grad_w, grad_g, grad_a, None


def backward(
    plan: tuple[Step, ...],
    params: Mapping[str, Tensor],
    saved: list[Tensor],
    error: Tensor,
    scale: float,
    names: Collection[str],
    lr: float | None,
    outer=OuterUpdate.apply,
) -> Params:
    """The support-loss gradients `[B, *shape]` of the parameters in `names`, written out from the output
    error `scale * error`; with `lr`, the SGD-updated parameters instead (the step fused into the products)."""
    adapted = [i for i, s in enumerate(plan) if s.kind == "linear" and (s.weight in names or s.bias in names)]
    first = adapted[0] if adapted else len(plan)
    result: Params = {}
    g = error
    for i in range(len(plan) - 1, first - 1, -1):
        step = plan[i]
        if step.kind == "relu":
            g = torch.ops.aten.threshold_backward(g, saved[i], 0)
        elif step.kind == "tanh":
            g = torch.ops.aten.tanh_backward(g, saved[i])
        else:
            w = params[step.weight]
            if step.weight in names:
                if lr is None:
                    result[step.weight] = torch.bmm(g.transpose(1, 2), saved[i]).mul_(scale)
                else:
                    result[step.weight] = outer(w, g, saved[i], -lr * scale)
            if step.bias in names:
                if lr is None:
                    result[step.bias] = g.sum(1).mul_(scale)
                else:
                    result[step.bias] = torch.add(params[step.bias], g.sum(1), alpha=-lr * scale)
            if i > first:
                g = torch.matmul(g, w) if w.dim() == 2 else torch.bmm(g, w)
    return result


def _plain_outer(w: Tensor, g: Tensor, a: Tensor, alpha: float) -> Tensor:
    """`OuterUpdate` without its own backward, for torch.compile: under `torch.func.grad`, compiled
    autograd.Functions gave wrong weight gradients (torch 2.14, 1e0 off), and inductor picks its own layouts."""
    return torch.baddbmm(w, g.transpose(1, 2), a, alpha=alpha)


def _fused_lr(rule: InnerRule | None, inner_lr: float) -> float | None:
    """The rate of a plain SGD step, which can be fused into the gradient's products; None for other rules."""
    inner = rule.rule if isinstance(rule, Subset) else rule
    if inner is None:
        return inner_lr
    return inner.inner_lr if type(inner) is SGD else None


def _target(kind: str, y: Tensor, out_shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The support targets shaped like the output `[B, N, out]`: one-hot for ce."""
    if kind != "ce":
        return y.reshape(out_shape).to(dtype)
    if tuple(y.shape) != out_shape[:2] or y.is_floating_point():
        raise NotClosedForm(f"the closed strategy's ce needs integer class targets [B, N], got {tuple(y.shape)}")
    return F.one_hot(y, out_shape[2]).to(dtype)


def _inner_steps(
    plan: tuple[Step, ...],
    params: Mapping[str, Tensor],
    support_x: Tensor,
    target: Tensor,
    kind: str,
    steps: int,
    update: InnerRule,
    lr: float | None,
    order: int,
    names: Collection[str],
    outer=OuterUpdate.apply,
) -> Params:
    """`steps` closed-form inner steps from `params`; `lr` fuses a plain SGD step into the products."""
    current: Params = dict(params) if order > 0 else {k: v.detach() for k, v in params.items()}
    for step in range(steps):
        if order == 2:
            out, saved = forward(plan, current, support_x)
            error, scale = output_error(kind, out, target)
            result = backward(plan, current, saved, error, scale, names, lr, outer)
        else:  # orders 1 and 0 treat the inner gradient as a constant: computed without a graph
            with torch.no_grad():
                inputs = {k: v.detach() for k, v in current.items()}
                out, saved = forward(plan, inputs, support_x)
                error, scale = output_error(kind, out, target)
                result = backward(plan, inputs, saved, error, scale, names, None, outer)
        current = {**current, **(result if lr is not None else update(current, result, step))}
        if order == 0:
            current = {k: v.detach() for k, v in current.items()}
    return current


def closed_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    inner: InnerLoop,
) -> Params:
    """Adapted parameters of every task (`[B, *shape]`, or shared `[*shape]` if not adapted), as `meta.adapt`.

    `support_x: [B, S, in]`, `support_y`: `[B, S, out]` (or `[B, S]` class indices for ce).
    """
    plan, kind = _checked(model, params, inner, support_x)
    rule, order = inner.rule, inner.order
    names = rule.names if isinstance(rule, Subset) else params.keys()
    lr = _fused_lr(rule, inner.inner_lr) if order == 2 else None
    target = _target(kind, support_y, _output_shape(plan, params, support_x), support_x.dtype)
    return _inner_steps(plan, params, support_x, target, kind, inner.steps, inner.update, lr, order, names)


def _checked(
    model: nn.Module, params: Mapping[str, Tensor], inner: InnerLoop, x: Tensor
) -> tuple[tuple[Step, ...], str]:
    """The model's plan and the loss's kind, or `NotClosedForm` naming what is not supported."""
    plan = mlp_plan(model)
    check_rule(inner.rule)
    kind = loss_kind(inner.loss_fn)
    if x.dim() != 3:
        raise NotClosedForm(f"the closed strategy needs inputs [B, N, features], got shape {tuple(x.shape)}")
    return plan, kind


def _output_shape(plan: tuple[Step, ...], params: Mapping[str, Tensor], x: Tensor) -> tuple[int, int, int]:
    last = next(s for s in reversed(plan) if s.kind == "linear")
    return (x.shape[0], x.shape[1], params[last.weight].shape[-2])


def closed_query_losses(model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch, inner: InnerLoop) -> Tensor:
    """Per-task query losses `[B]`: closed-form inner steps on an MLP chain, all tasks at once."""
    adapted = closed_adapt(model, params, batch.support_x, batch.support_y, inner)
    out, _ = forward(mlp_plan(model), adapted, batch.query_x)
    return per_task_loss(inner.loss_fn, out, batch.query_y)


# --- the same, compiled ----------------------------------------------------------------------------

_COMPILED: dict[tuple, Callable] = {}


def _compiled_gradients(plan: tuple[Step, ...], kind: str, loss: LossFn, steps: int, lr: float) -> Callable:
    """`(per_task_params, sx, target, qx, qy) -> (per-task gradients, per-task losses)`, compiled once per setting.

    Tasks are independent, so the gradient of the summed loss with respect to per-task copies of the
    parameters is each task's own meta-gradient; `torch.func.grad` puts forward and backward into one graph.
    """
    key = (plan, kind, loss, steps, lr)
    if key not in _COMPILED:
        names = {n for s in plan if s.kind == "linear" for n in (s.weight, s.bias) if n}

        def total(per_task: Params, sx: Tensor, target: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
            adapted = _inner_steps(plan, per_task, sx, target, kind, steps, SGD(lr), lr, 2, names, _plain_outer)
            losses = per_task_loss(loss, forward(plan, adapted, qx)[0], qy)
            return losses.sum(), losses.detach()

        _COMPILED[key] = torch.compile(torch.func.grad(total, has_aux=True), fullgraph=True, dynamic=False)
    return _COMPILED[key]


class _PerTaskGradients(torch.autograd.Function):
    """Per-task losses `[B]` whose backward is the upstream-weighted sum of precomputed per-task gradients."""

    @staticmethod
    def forward(ctx, losses: Tensor, gradients: tuple[Tensor, ...], *params: Tensor) -> Tensor:
        ctx.gradients = gradients
        return losses.clone()

    @staticmethod
    def backward(ctx, upstream: Tensor) -> tuple[Tensor | None, ...]:
        return (None, None, *(torch.tensordot(upstream, g, dims=1) for g in ctx.gradients))


def compiled_closed_query_losses(
    model: nn.Module, params: Mapping[str, Tensor], batch: TaskBatch, inner: InnerLoop
) -> Tensor:
    """`closed_query_losses` with the second-order meta-gradient computed by one `torch.compile`d graph.

    The first call per (model structure, loss, steps, inner_lr, shapes) compiles for seconds to minutes
    (a C++ compiler is needed). Plain SGD only; orders 1 and 0 run the eager closed form (nothing to gain).
    """
    plan, kind = _checked(model, params, inner, batch.support_x)
    rule = inner.rule
    if rule is not None and type(rule) is not SGD:
        raise NotClosedForm(f"closed-compiled runs plain SGD only; use 'closed' for {type(rule).__name__}")
    lr = rule.inner_lr if rule is not None else inner.inner_lr
    names = [k for k, v in params.items() if v.requires_grad]
    if inner.order != 2 or not torch.is_grad_enabled() or not names:
        return closed_query_losses(model, params, batch, inner)
    tasks = len(batch)
    per_task = {k: v.detach().unsqueeze(0).expand(tasks, *v.shape).contiguous() for k, v in params.items()}
    sx = batch.support_x
    target = _target(kind, batch.support_y, _output_shape(plan, params, sx), sx.dtype)
    gradients, losses = _compiled_gradients(plan, kind, get_loss(inner.loss_fn), inner.steps, lr)(
        per_task, sx, target, batch.query_x, batch.query_y
    )
    return _PerTaskGradients.apply(losses, tuple(gradients[k] for k in names), *(params[k] for k in names))
