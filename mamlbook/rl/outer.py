"""Outer (meta) optimizers for MAML-RL as plug-ins: TRPO (Finn et al. 2017) and PPO-clip (ProMP).

Both take the meta-parameters (leaf tensors) and an `objective(params, create_graph, clip)` that
returns `(loss, kl)` (see `estimators.meta_objective`), and update the parameters in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Objective = Callable[..., tuple[Tensor, Tensor]]


def flat(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
    with_product: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Approximately solve `A x = b` for symmetric positive definite `A`, given as `matvec(v) = A v`.

    With `with_product`, also `A x`, accumulated from the products the iterations take (x is a sum of
    the search directions), so that it costs no further product.
    """
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= residual_tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        if with_product:
            ax = ax + alpha * ap
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return (x, ax) if with_product else x


def fisher_vector_product(kl: Tensor, params: list[Tensor], damping: float = 0.0) -> Callable[[Tensor], Tensor]:
    """`v -> (H + damping I) v` with H the Hessian of `kl` w.r.t. `params` (by double backward).

    At the weights the KL is measured from, H is the Fisher information of the (adapted) policies.
    """
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))

    def product(v: Tensor) -> Tensor:
        hv = torch.autograd.grad(grads @ v, params, retain_graph=True)
        return flat(hv) + damping * v

    return product


@dataclass(frozen=True)
class LocalModel:
    """What TRPO needs of the objective at the current weights: the loss, its flat gradient `[P]` and
    `product(v) = (H + damping I) v`, H the Hessian of the KL (e.g. `curvature.local_model`)."""

    loss: float
    gradient: Tensor
    product: Callable[[Tensor], Tensor]


def _assign(params: list[Tensor], vector: Tensor) -> None:
    with torch.no_grad():
        start = 0
        for p in params:
            p.copy_(vector[start : start + p.numel()].view_as(p))
            start += p.numel()


@dataclass
class TRPO:
    """A natural-gradient step of KL <= `max_kl`, by conjugate gradient, then a backtracking line search
    that accepts the first step that lowers the loss and keeps the KL within the bound."""

    max_kl: float = 0.01
    cg_iters: int = 10
    damping: float = 1e-5
    backtrack: float = 0.8
    max_backtracks: int = 15

    def step(
        self,
        params: Mapping[str, Tensor],
        objective: Objective,
        curvature: Callable[[float], Callable[[Tensor], Tensor]] | None = None,
        local: Callable[[float], LocalModel] | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, float]:
        """One TRPO step. `local(damping)`, where given, returns the loss, gradient and KL-Hessian-vector
        product at the current weights (`LocalModel`), and `objective` serves the line search alone;
        else the gradient is autograd's, and the product `curvature(damping)` (e.g.
        `estimators.kl_hessian_product`) or, without it, the double backward of the objective's KL.

        `reduce(v)`, in a meta-batch split over processes (`rl.parallel`): the sum of `v` over them. The
        objective's loss and autograd's gradient are then this process's share, summed in one `reduce`
        of [loss, gradient] (and the double backward's products, one each); `local`, `curvature` and
        the objective's values without a graph (the line search) are the whole meta-batch's already."""
        leaves = list(params.values())
        if local is not None:
            model = local(self.damping)
            loss_before, g = model.loss, model.gradient
            direction, product = conjugate_gradient(model.product, -g, self.cg_iters, with_product=True)
            curvature = direction @ product
        else:
            loss, kl = objective(params, create_graph=True)
            g = flat(torch.autograd.grad(loss, leaves, retain_graph=curvature is None))
            loss_before = loss.item()
            if reduce is not None:  # this process's share of the loss and gradient: the sums, in one
                summed = reduce(torch.cat([loss.detach().reshape(1).to(g.dtype), g]))
                loss_before, g = summed[0].item(), summed[1:]
            if curvature is not None:
                fvp = curvature(self.damping)
            elif reduce is None:
                fvp = fisher_vector_product(kl, leaves, self.damping)
            else:
                share = fisher_vector_product(kl, leaves)
                fvp = lambda v: reduce(share(v)) + self.damping * v  # noqa: E731
            direction = conjugate_gradient(fvp, -g, self.cg_iters)
            curvature = direction @ fvp(direction)
            del fvp, kl, loss
        old = flat([p.detach() for p in leaves]).clone()
        info = {"loss_before": loss_before, "grad_norm": g.norm().item(), "accepted": 0.0}
        if not (torch.isfinite(curvature) and curvature > 0 and torch.isfinite(direction).all()):
            info.update(loss_after=loss_before, kl=0.0, backtracks=-1.0)
            return info
        full = math.sqrt(2 * self.max_kl / curvature.item()) * direction
        for k in range(self.max_backtracks):
            _assign(leaves, old + self.backtrack**k * full)
            new_loss, new_kl = objective(params, create_graph=False)
            new_loss, new_kl = new_loss.item(), new_kl.item()
            if math.isfinite(new_loss) and new_kl <= self.max_kl and new_loss < info["loss_before"]:
                info.update(loss_after=new_loss, kl=new_kl, backtracks=float(k), accepted=1.0)
                return info
        _assign(leaves, old)  # no step met both conditions: keep the weights
        info.update(loss_after=info["loss_before"], kl=0.0, backtracks=-1.0)
        return info

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class PPO:
    """ProMP's outer step: `epochs` Adam steps on the clipped surrogate of the adapted policies."""

    lr: float = 1e-3
    epochs: int = 5
    clip: float = 0.2
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False)

    def _optimizer(self, params: Mapping[str, Tensor]) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(list(params.values()), lr=self.lr)
        return self.optimizer

    def step(
        self, params: Mapping[str, Tensor], objective: Objective, curvature=None, local=None, reduce=None
    ) -> dict[str, float]:
        """`epochs` Adam steps; `reduce` as `TRPO.step`'s: each epoch's loss and gradient are this
        process's share, summed in one `reduce` before Adam's step (the last evaluation is the whole's)."""
        optimizer = self._optimizer(params)
        first = None
        leaves = list(params.values())
        for _ in range(self.epochs):
            optimizer.zero_grad(set_to_none=True)
            loss, kl = objective(params, create_graph=True, clip=self.clip)
            loss.backward()
            if reduce is not None:
                grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in leaves]
                summed = reduce(torch.cat([loss.detach().reshape(1).to(grads[0].dtype), flat(grads)]))
                loss = summed[0]
                with torch.no_grad():
                    for p, piece in zip(leaves, summed[1:].split([p.numel() for p in leaves]), strict=True):
                        p.grad = piece.view_as(p).clone()
            optimizer.step()
            first = loss.item() if first is None else first
        with torch.enable_grad():
            loss, kl = objective(params, create_graph=False, clip=self.clip)
        return {"loss_before": first, "loss_after": loss.item(), "kl": kl.item(), "accepted": 1.0}

    def state_dict(self) -> dict[str, Any]:
        return {} if self.optimizer is None else self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any], params: Mapping[str, Tensor] | None = None) -> None:
        if state and params is not None:
            self._optimizer(params).load_state_dict(state)


OUTER = {"trpo": TRPO, "ppo": PPO}
