"""Derivatives of the two-hidden-layer Gaussian MLP policy over many samples, by hand.

What TRPO's local model needs (`rl.curvature`): per task, Jacobian-vector and vector-Jacobian
products of the policy's mean at fixed weights over every sample (`Site`), and products with the
Hessian of the inner (adaptation) loss (`InnerLoss`). autograd takes them by double backward, with some
18 products of a [samples, H1] by an [H1, H2] matrix per KL-Hessian product and many elementwise passes
over [tasks, samples, H] tensors; here a KL-Hessian product takes six such matrix products, and what
does not change from one product to the next is computed once.

Of the network's layers only the middle one is wide: the first sees 2 inputs and the last gives 2
outputs. So, per sample s with masks d1, d2 of the ReLUs, inputs x = [obs, 1] and a direction
v = (V1, V2, V3):

- the first layer's part of the mean's derivative is q_s V1 x_s with q_s = W3 diag(d2) W2 diag(d1)
  `[A, H1]`, kept for every sample (`Site.q_t`); its transpose gives the first layer's gradient;
- the second-order part of the inner loss's Hessian, sum_s e_s . d^2 mean_s [v] (e_s = d l / d mean_s),
  is bilinear in neighbouring layers' weights (ReLUs are piecewise linear); all its terms but two
  reduce to sums over s of e_sa x_sc d2_s d1_s^T, kept per task (`InnerLoss.moments`), and the two
  others share the middle layer's products with the Gauss-Newton part.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .policies import GaussianMLPPolicy

LAYERS = ("mean.0", "mean.2", "mean.4")


def supports(policy: nn.Module) -> bool:
    """Whether `policy` is the Gaussian MLP with two hidden ReLU layers this module differentiates."""
    if not isinstance(policy, GaussianMLPPolicy):
        return False
    return [type(m) for m in policy.mean] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]


class Blocks(NamedTuple):
    """Weights, a direction or a gradient, by layer, each weight with its bias as the last column:
    w1 `[..., H1, I+1]`, w2 `[..., H2, H1+1]`, w3 `[..., A, H2+1]`, ls `[..., A]` (the log-std);
    `...` is empty (shared) or `[T]` (one per task)."""

    w1: Tensor
    w2: Tensor
    w3: Tensor
    ls: Tensor

    def plus(self, other: Blocks, scale: float = 1.0) -> Blocks:
        return Blocks(*(a + scale * b for a, b in zip(self, other, strict=True)))

    def task_sum(self) -> Blocks:
        return Blocks(*(b.sum(0) for b in self))


class Layout:
    """Flat vectors in the order of `params` <-> `Blocks`."""

    def __init__(self, params: Mapping[str, Tensor]) -> None:
        self.names = list(params)
        self.shapes = [tuple(params[k].shape) for k in self.names]

    def blocks(self, flat: Tensor) -> Blocks:
        """`[..., P]` -> `Blocks` with leading `...`."""
        lead = flat.shape[:-1]
        pieces, at = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = int(torch.Size(shape).numel())
            pieces[name] = flat[..., at : at + n].reshape(*lead, *shape)
            at += n
        layers = [torch.cat([pieces[f"{k}.weight"], pieces[f"{k}.bias"].unsqueeze(-1)], -1) for k in LAYERS]
        return Blocks(*layers, pieces["log_std"])

    def flat(self, blocks: Blocks) -> Tensor:
        lead = blocks.ls.shape[:-1]
        pieces = {"log_std": blocks.ls}
        for k, w in zip(LAYERS, blocks[:3], strict=True):
            pieces[f"{k}.weight"], pieces[f"{k}.bias"] = w[..., :-1], w[..., -1]
        return torch.cat([pieces[n].reshape(*lead, -1) for n in self.names], -1)


def _weight(w: Tensor) -> Tensor:
    """The weight without its bias column."""
    return w[..., :-1]


def _step(z: Tensor) -> Tensor:
    """The ReLU's derivative, 1 where z > 0 (as autograd takes it), in z's dtype (no bool temporary)."""
    return torch.gt(z, 0, out=torch.empty_like(z))


class Site:
    """The network at fixed weights (shared or per task) on fixed observations `obs: [T, S, I]`, with
    what its Jacobian-vector and vector-Jacobian products need."""

    def __init__(self, weights: Blocks, obs: Tensor) -> None:
        self.weights = weights
        t, s, _ = obs.shape
        self.x = torch.cat([obs, obs.new_ones(t, s, 1)], -1)  # [T, S, I+1]
        z1 = self.x @ weights.w1.mT
        self.d1 = _step(z1)
        self.h1 = z1.clamp_min_(0)  # [T, S, H1]: biases are added apart (a product with K = H1 is faster)
        z2 = (self.h1 @ _weight(weights.w2).mT).add_(weights.w2[..., -1].unsqueeze(-2))
        self.d2 = _step(z2)
        self.h2 = z2.clamp_min_(0)  # [T, S, H2]
        self.mean = (self.h2 @ _weight(weights.w3).mT).add_(weights.w3[..., -1].unsqueeze(-2))  # [T, S, A]

    @cached_property
    def x_t(self) -> Tensor:
        """The inputs, transposed: `[T, I+1, S]`."""
        return self.x.mT.contiguous()

    @cached_property
    def q_t(self) -> Tensor:
        """q_t[t, a, :, s] = d mean_a / d z1 at sample s, (W3 diag(d2) W2 diag(d1))^T: `[T, A, H1, S]`,
        the layout in which both products with it (`jvp`, `vjp`) are fast."""
        t, s, _ = self.x.shape
        w2, w3 = _weight(self.weights.w2).mT, _weight(self.weights.w3)
        q_t = self.x.new_empty(t, w3.shape[-2], w2.shape[-2], s)
        for a in range(w3.shape[-2]):  # (W2^T diag(W3_a)) d2^T: no [T, S, H2] temporary per action
            torch.matmul(w2 * w3[..., a, :].unsqueeze(-2), self.d2.mT, out=q_t[:, a])
        return q_t.mul_(_step(self.weights.w1 @ self.x_t).unsqueeze(-3))  # d1, transposed

    @cached_property
    def _scratch(self) -> tuple[Tensor, Tensor]:
        """Room for the [T, S, H2] products of `jvp` and `vjp`, reused: a fresh one costs its page faults."""
        return torch.empty_like(self.h2), torch.empty_like(self.h2)

    def gradient(self, cotangent: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What `vjp(cotangent)` gives, by plain backpropagation: one matrix product more, and no `q_t`
        (for a single use)."""
        w3 = _weight(self.weights.w3)
        delta2 = (cotangent @ w3.expand(cotangent.shape[0], *w3.shape[-2:])).mul_(self.d2)
        delta1 = (delta2 @ _weight(self.weights.w2)).mul_(self.d1)
        return tuple(
            torch.cat([delta.mT @ inputs, delta.sum(-2).unsqueeze(-1)], -1)
            for delta, inputs in ((delta1, self.x[..., :-1]), (delta2, self.h1), (cotangent, self.h2))
        )

    def jvp(self, v: Blocks) -> tuple[Tensor, Tensor]:
        """The mean's derivative along `v` (its log-std part aside), `[T, S, A]`, and the middle
        layer's masked product d2 * (h1 V2^T) `[T, S, H2]` (the second-order terms use it too; it is
        overwritten by the next `jvp`)."""
        first = ((v.w1.mT.unsqueeze(-3) @ self.q_t) * self.x_t.unsqueeze(-3)).sum(-2)  # [T, A, S]
        middle = torch.matmul(self.h1, _weight(v.w2).mT, out=self._scratch[0])
        middle.add_(v.w2[..., -1].unsqueeze(-2)).mul_(self.d2)
        dmean = (middle @ _weight(self.weights.w3).mT).add_(self.h2 @ _weight(v.w3).mT)
        dmean.add_(first.mT).add_(v.w3[..., -1].unsqueeze(-2))
        return dmean, middle

    def vjp(self, cotangent: Tensor, extra: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per task, sum over samples of J^T c for the mean's cotangent `c: [T, S, A]`: the three layers'
        gradients `[T, ...]`. `extra = (e, V)` adds e V `[T, S, H2]` to the cotangent of the middle
        layer's output (before its ReLU), and not to the first layer's."""
        w3 = _weight(self.weights.w3)
        w3 = w3.expand(cotangent.shape[0], *w3.shape[-2:])  # a batched product: far faster than one of K=A
        if extra is not None:
            cotangent_and_e, w3 = torch.cat([cotangent, extra[0]], -1), torch.cat([w3, extra[1]], -2)
        delta2 = torch.matmul(cotangent if extra is None else cotangent_and_e, w3, out=self._scratch[1]).mul_(self.d2)
        g3 = torch.cat([cotangent.mT @ self.h2, cotangent.sum(-2).unsqueeze(-1)], -1)
        g2 = torch.cat([delta2.mT @ self.h1, delta2.sum(-2).unsqueeze(-1)], -1)
        outer = cotangent.mT.unsqueeze(-2) * self.x_t.unsqueeze(-3)  # [T, A, I+1, S]
        g1 = (outer @ self.q_t.mT).sum(-3).mT
        return g1, g2, g3


def per_task(blocks: Blocks, tasks: int) -> Blocks:
    """Shared blocks as `[T, ...]` views."""
    if blocks.ls.dim() == 2:
        return blocks
    return Blocks(*(b.expand(tasks, *b.shape) for b in blocks))


class InnerLoss:
    """Task t's inner loss l_t = -sum_s w_s f(log pi(a_s | obs_s)) at the pre-adaptation site (shared
    weights), f the identity ("surrogate", "dice") or the magic box ("lvc"): its gradient and its
    Hessian-vector products, one per task."""

    def __init__(self, site: Site, actions: Tensor, weight: Tensor, estimator: str) -> None:
        self.site = site
        inv_std = torch.exp(-site.weights.ls)  # [A]
        z = (actions - site.mean) * inv_std  # [T, S, A]
        w = weight.unsqueeze(-1)  # [T, S, 1]
        self.z, self.weight = z, w
        self.score_mean, self.score_ls = z * inv_std, z * z - 1  # d log pi / d (mean, log-std)
        self.cotangent = -w * self.score_mean  # d l / d mean
        # d^2 l / d (mean_a, log-std_a)^2, per sample and action dimension (no cross terms in a)
        self.mean_mean = w * inv_std**2
        self.mean_ls = 2 * w * z * inv_std
        self.ls_ls = 2 * w * z * z
        # the magic box adds -w grad log pi grad log pi^T (in all of (mean, log-std))
        self.box_weight = w if estimator == "lvc" else None
        # moments[t, c, a, k, j] = sum_s x_sc e_sa d2_sk d1_sj, e the cotangent; a task at a time,
        # which keeps the temporary small
        t, s, actions = z.shape
        inputs, hidden2, hidden1 = site.x.shape[-1], site.d2.shape[-1], site.d1.shape[-1]
        xe = (site.x.unsqueeze(-1) * self.cotangent.unsqueeze(-2)).view(t, s, -1, 1)  # [T, S, (I+1)*A, 1]
        self.moments = z.new_empty(t, inputs * actions * hidden2, hidden1)
        for task in range(t):
            lhs = (xe[task] * site.d2[task].unsqueeze(-2)).view(s, -1)
            torch.mm(lhs.mT, site.d1[task], out=self.moments[task])
        self.moments = self.moments.view(t, inputs, actions, hidden2, hidden1)

    def gradient(self) -> Blocks:
        """grad l_t(theta), per task."""
        g1, g2, g3 = self.site.vjp(self.cotangent)
        return Blocks(g1, g2, g3, (-self.weight * self.score_ls).sum(1))

    def hvp(self, v: Blocks) -> Blocks:
        """H_t v_t for shared or per-task `v`, per task."""
        site = self.site
        tasks = site.x.shape[0]
        dmean, middle = site.jvp(v)
        dls = v.ls.unsqueeze(-2)  # [1, A] or [T, 1, A]
        c_mean = self.mean_mean * dmean + self.mean_ls * dls
        c_ls = self.mean_ls * dmean + self.ls_ls * dls
        if self.box_weight is not None:
            along = (self.score_mean * dmean + self.score_ls * dls).sum(-1, keepdim=True) * self.box_weight
            c_mean = c_mean - along * self.score_mean
            c_ls = c_ls - along * self.score_ls
        v = per_task(v, tasks)
        w2, w3 = _weight(site.weights.w2), _weight(site.weights.w3)  # [H2, H1], [A, H2]
        v1, v2, v3 = v.w1, _weight(v.w2), _weight(v.w3)
        # Gauss-Newton part, with d(delta2)[v] = d2 * (e V3) (the last layer's second-order term) riding along
        g1, g2, g3 = site.vjp(c_mean, (self.cotangent, v3))
        # second-order terms: e . d^2 mean[v] through (W3, W2), (W3, W1), (W2, W1)
        g3_second = self.cotangent.mT @ middle  # d(h2)[v] by V2, on e
        along_first = (self.moments * v1.mT[:, :, None, None, :]).sum(1)  # d(h1)[v] by V1, with e: [T, A, H2, H1]
        g3_second = g3_second + (w2 * along_first).sum(-1)
        g2_second = (w3.unsqueeze(-1) * along_first).sum(1)
        cross = w3.unsqueeze(-1) * v2.unsqueeze(-3) + v3.unsqueeze(-1) * w2  # [T, A, H2, H1]
        g1_second = (self.moments * cross.unsqueeze(1)).sum((2, 3)).mT
        g1 = g1 + g1_second
        g2 = torch.cat([g2[..., :-1] + g2_second, g2[..., -1:]], -1)
        g3 = torch.cat([g3[..., :-1] + g3_second, g3[..., -1:]], -1)
        return Blocks(g1, g2, g3, c_ls.sum(1))
