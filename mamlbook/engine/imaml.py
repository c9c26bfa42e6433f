"""Implicit MAML (Rajeswaran et al. 2019): the meta-gradient from the adapted parameters alone.

The inner problem gets a proximal term that keeps the adapted parameters near theta,

    phi*(theta) = argmin_phi  L_support(phi) + lam/2 ||phi - theta||^2,

and at its minimum the implicit function theorem gives d phi*/d theta = (I + H/lam)^-1, with H the
support loss's Hessian at phi*. So the meta-gradient is v solving (I + H/lam) v = grad L_query(phi*),
found by conjugate gradient with Hessian-vector products. Nothing of the inner trajectory is kept:
memory does not depend on the number of inner steps, which only need to bring phi near phi*.

All tasks run folded (see `engine.folded`): CG runs per task, with per-task step sizes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..meta import InnerLoop
from ..tasks import TaskBatch
from .chain import fold_input, trace_chain
from .folded import expand_params, folded_forward, per_task_loss


def _task_dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Per-task inner product `[B]` of two lists of `[B, ...]` tensors."""
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))


def _per_task(scale: Tensor, t: Tensor) -> Tensor:
    return scale.view(-1, *([1] * (t.dim() - 1))) * t


def conjugate_gradient(matvec, rhs: list[Tensor], iterations: int) -> list[Tensor]:
    """Solve `matvec(x) = rhs` for each task's block, starting from x = 0 (`rhs`: `[B, ...]` tensors)."""
    x = [torch.zeros_like(r) for r in rhs]
    residual = [r.clone() for r in rhs]
    direction = [r.clone() for r in rhs]
    rr = _task_dot(residual, residual)
    for _ in range(iterations):
        ad = matvec(direction)
        step = rr / _task_dot(direction, ad).clamp_min(torch.finfo(rr.dtype).tiny)
        x = [xi + _per_task(step, di) for xi, di in zip(x, direction, strict=True)]
        residual = [ri - _per_task(step, ai) for ri, ai in zip(residual, ad, strict=True)]
        rr_new = _task_dot(residual, residual)
        beta = rr_new / rr.clamp_min(torch.finfo(rr.dtype).tiny)
        direction = [ri + _per_task(beta, di) for ri, di in zip(residual, direction, strict=True)]
        rr = rr_new
    return x


def proximal_adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    inner: InnerLoop,
    lam: float,
) -> dict[str, Tensor]:
    """`inner.steps` of gradient descent on support loss + lam/2 ||phi - theta||^2 at `inner.inner_lr`,
    no graph kept (`inner.order` is for the backward): `[B, *shape]`."""
    tasks = support_x.shape[0]
    anchor = {k: v.detach() for k, v in expand_params(params, tasks).items()}
    sx = fold_input(support_x)
    phi = {k: v.clone() for k, v in anchor.items()}
    for _ in range(inner.steps):
        leaves = {k: v.requires_grad_() for k, v in phi.items()}
        with torch.enable_grad():
            loss = per_task_loss(inner.loss_fn, folded_forward(model, leaves, sx, tasks), support_y).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        phi = {
            k: (p - inner.inner_lr * ((0 if g is None else g) + lam * (p - anchor[k]))).detach()
            for (k, p), g in zip(leaves.items(), grads, strict=True)
        }
    return phi


class _Implicit(torch.autograd.Function):
    """theta -> phi*(theta); the backward applies (I + H/lam)^-1 by conjugate gradient."""

    @staticmethod
    def forward(ctx, config: dict, *theta: Tensor) -> tuple[Tensor, ...]:
        names = config["names"]
        theta_by_name = dict(zip(names, theta, strict=True))
        sx, sy = config["support_x"], config["support_y"]
        phi = proximal_adapt(config["model"], theta_by_name, sx, sy, config["inner"], config["lam"])
        ctx.config = config
        out = tuple(phi[k] for k in names)
        ctx.save_for_backward(*out)
        return out

    @staticmethod
    def backward(ctx, *grad_phi: Tensor):
        config = ctx.config
        phi = [p.detach().requires_grad_() for p in ctx.saved_tensors]
        rhs = [torch.zeros_like(p) if g is None else g for p, g in zip(phi, grad_phi, strict=True)]
        if config["inner"].order == 2:
            tasks = config["support_x"].shape[0]
            with torch.enable_grad():
                params = dict(zip(config["names"], phi, strict=True))
                out = folded_forward(config["model"], params, fold_input(config["support_x"]), tasks)
                loss = per_task_loss(config["inner"].loss_fn, out, config["support_y"]).sum()
                grads = torch.autograd.grad(loss, phi, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(phi, grads, strict=True)]
            lam = config["lam"]

            def matvec(v: list[Tensor]) -> list[Tensor]:
                hv = torch.autograd.grad(grads, phi, v, retain_graph=True, allow_unused=True)
                return [vi + (torch.zeros_like(vi) if h is None else h) / lam for vi, h in zip(v, hv, strict=True)]

            rhs = conjugate_gradient(matvec, rhs, config["cg_steps"])
        # theta was shared by all tasks, so its gradient is the sum of the tasks' gradients.
        return (None, *(r.sum(0) for r in rhs))


def imaml_query_losses(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: TaskBatch,
    inner: InnerLoop,
    *,
    lam: float = 1.0,
    cg_steps: int = 5,
) -> Tensor:
    """Per-task query losses `[B]` at the proximal solution; their gradient is iMAML's meta-gradient.

    `inner.order` 2: the implicit gradient (CG with `cg_steps` Hessian-vector products); 1: the
    first-order approximation (d phi / d theta = I); 0: no meta-gradient. `inner.rule` must be None.
    """
    if inner.rule is not None:
        raise ValueError("iMAML's inner loop is gradient descent on the proximal objective; it takes no rule")
    if not lam > 0:
        raise ValueError(f"lam must be positive, got {lam!r}")
    trace_chain(model)
    names = list(params)
    theta = [params[k] for k in names]
    config = {
        "model": model,
        "names": names,
        "support_x": batch.support_x,
        "support_y": batch.support_y,
        "inner": inner,
        "lam": float(lam),
        "cg_steps": cg_steps,
    }
    if inner.order == 0 or not any(t.requires_grad for t in theta):
        phi = proximal_adapt(model, params, batch.support_x, batch.support_y, inner, lam)
    else:
        phi = dict(zip(names, _Implicit.apply(config, *theta), strict=True))
    output = folded_forward(model, phi, fold_input(batch.query_x), len(batch))
    return per_task_loss(inner.loss_fn, output, batch.query_y)
