"""TRPO's local model of the MAML-RL objective, without autograd, for the two-hidden-layer policy.

TRPO needs, at the weights theta the meta-batch was built with, the outer loss, its gradient and
about ten products with the Hessian of the mean KL between the adapted policies before and after the
step, taken through the adaptation theta'_t = theta - alpha grad l_t(theta); then, in its line
search, the loss and the KL at a few trial weights. At theta the KL is minimal in theta'_t and its
gradient in each sample's (mean, log-std) is zero, so that Hessian is exactly

    sum_t (I - alpha H_t) G_t (I - alpha H_t),   G_t = J_t^T M J_t,

H_t the Hessian of task t's inner loss l_t at theta (pre-adaptation samples), J_t the Jacobian of
the per-sample mean and log-std at theta'_t (post-adaptation samples) and M the Gaussian's Fisher
information in (mean, log-std), 1/sigma^2 for the mean and 2 for the log-std: the Gauss-Newton form.
`local_model` takes it, and the gradient sum_t (I - alpha H_t) grad_t + (DiCE's score term), with
`analytic`'s products; `objective` gives `meta_objective`'s values by the same forward pass. Both
equal autograd's (`estimators.meta_objective`, `estimators.kl_hessian_product`) up to rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .analytic import Blocks, InnerLoss, Layout, Site, per_task, supports
from .estimators import ESTIMATORS, MetaBatch
from .outer import LocalModel
from .policies import LOG_2PI, gaussian_kl
from .rollout import Trajectories


def _check(policy: nn.Module, estimator: str, inner_steps: int) -> None:
    if not supports(policy):
        raise ValueError(f"{type(policy).__name__} is not a Gaussian MLP policy with two hidden ReLU layers")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if inner_steps not in (0, 1):
        raise ValueError(f"meta-training takes 0 or 1 inner steps, not {inner_steps}")


CHUNK_BYTES = 2**21
"""Tasks are taken a few at a time, so that each [tasks, samples, hidden] tensor of a product stays
about this size, in the processor's cache: the elementwise passes between the matrix products then
cost a fraction of what they cost from memory."""


def _chunks(batch: MetaBatch, hidden: int) -> list[tuple[int, int]]:
    """Task ranges `[lo, hi)` of at most `CHUNK_BYTES` per [tasks, samples, hidden] tensor."""
    tasks = batch.post.goals.shape[0]
    size = max(1, CHUNK_BYTES // (batch.post.mask[0].numel() * hidden * batch.post_adv.element_size()))
    return [(lo, min(lo + size, tasks)) for lo in range(0, tasks, size)]


def _tasks(batch: MetaBatch, lo: int, hi: int) -> MetaBatch:
    """The tasks `[lo, hi)` of `batch` (every field has the task dimension first)."""

    def part(x):
        if isinstance(x, Trajectories):
            return Trajectories(*(part(getattr(x, f.name)) for f in dataclasses.fields(x)))
        return x[lo:hi]

    return MetaBatch(*(part(getattr(batch, f.name)) for f in dataclasses.fields(batch)))


class _MetaBatch:
    """Tasks of a meta-batch (of `total` tasks) with their samples as `[T, S, ...]` (S = N * H), and
    the weights of their loss terms."""

    def __init__(self, batch: MetaBatch, total: int) -> None:
        self.batch = batch
        self.tasks, self.total = batch.post.goals.shape[0], total
        pre, post = batch.pre, batch.post
        # inner loss: -sum_s w_s log pi, w = A mask / steps taken (per task)
        self.pre_weight = self.samples(batch.pre_adv * pre.mask) / pre.mask.sum((1, 2)).clamp_min(1)[:, None]
        # outer loss and KL: each task's mean over its steps, then the mean over all tasks
        self.share = self.samples(post.mask) / post.mask.sum((1, 2)).clamp_min(1)[:, None] / total

    def samples(self, x: Tensor) -> Tensor:
        """`[T, N, H, ...]` -> `[T, N*H, ...]`"""
        return x.reshape(self.tasks, -1, *x.shape[3:])

    def score(self, pre_z: Tensor, log_std: Tensor) -> tuple[Tensor, Tensor]:
        """DiCE's pre-adaptation score term, summed over these tasks and divided by all (in the loss
        with a minus sign), from the pre-adaptation samples' standardized actions `pre_z: [T, S, A]`,
        and the weight of its gradient per sample, `[T, S, 1]` (times d log pi / d (mean, log-std))."""
        b = self.batch
        logp = (-0.5 * pre_z * pre_z - log_std - 0.5 * LOG_2PI).sum(-1).view_as(b.pre.mask)
        score = (((logp * b.pre.mask).sum(-1) - b.pre_logp_old) * b.score_weight[:, None]).sum() / self.total
        weight = -(self.samples(b.pre.mask) * b.score_weight[:, None] / self.total).unsqueeze(-1)
        return score, weight

    def post_terms(self, site: Site, log_std: Tensor) -> tuple[Tensor, Tensor]:
        """The post-adaptation samples' standardized actions `[T, S, A]` and their terms of the outer
        loss, share * ratio * A' `[T, S, 1]` (the loss is minus their sum)."""
        b = self.batch
        z = (self.samples(b.post.actions) - site.mean) * torch.exp(-log_std)
        ratio = torch.exp((-0.5 * z * z - log_std - 0.5 * LOG_2PI).sum(-1) - self.samples(b.old_logp))
        return z, (self.share * ratio * self.samples(b.post_adv)).unsqueeze(-1)


def _theta(layout: Layout, params: Mapping[str, Tensor]) -> Blocks:
    return layout.blocks(torch.cat([p.detach().reshape(-1) for p in params.values()]))


class _LocalModel:
    """`local_model` for some of the tasks: the loss and gradient summed over them, and their part of
    the KL-Hessian product."""

    def __init__(self, theta: Blocks, data: _MetaBatch, estimator: str, inner_lr: float, inner_steps: int) -> None:
        batch, tasks = data.batch, data.tasks
        self.tasks, self.inner_lr = tasks, inner_lr
        self.inner, adapted = None, theta
        if inner_steps:
            pre_site = Site(theta, data.samples(batch.pre.obs))
            self.inner = InnerLoss(pre_site, data.samples(batch.pre.actions), data.pre_weight, estimator)
            adapted = per_task(theta, tasks).plus(self.inner.gradient(), -inner_lr)
        self.post = Site(adapted, data.samples(batch.post.obs))
        log_std = adapted.ls.unsqueeze(-2)  # [1, A] or [T, 1, A]

        z, gain = data.post_terms(self.post, log_std)
        self.loss = -gain.sum()
        post_grad = Blocks(*self.post.vjp(-gain * z * torch.exp(-log_std)), (-gain * (z * z - 1)).sum(1))
        self.gradient = self.jacobian(post_grad).task_sum()
        if self.inner is not None and estimator == "dice":  # the pre-adaptation score term, (C - C_old) w
            score, weight = data.score(self.inner.z, theta.ls)
            self.loss = self.loss - score
            cotangent = weight * self.inner.score_mean
            score_grad = Blocks(*pre_site.vjp(cotangent), (weight * self.inner.score_ls).sum(1))
            self.gradient = self.gradient.plus(score_grad.task_sum())

        # the KL's Gauss-Newton matrix at theta'_t: M = share / sigma^2 (mean), 2 share (log-std)
        self.fisher_mean = data.share.unsqueeze(-1) * torch.exp(-2 * log_std)
        self.fisher_ls = 2 * data.share.sum(1, keepdim=True)

    def jacobian(self, v: Blocks) -> Blocks:
        """d theta'_t / d theta applied to (shared or per-task) `v`: (I - alpha H_t) v, per task."""
        if self.inner is None:
            return per_task(v, self.tasks)
        return per_task(v, self.tasks).plus(self.inner.hvp(v), -self.inner_lr)

    def product(self, v: Blocks) -> Blocks:
        """sum_t (I - alpha H_t) G_t (I - alpha H_t) v, for shared `v`."""
        u = self.jacobian(v)
        dmean, _ = self.post.jvp(u)
        w = Blocks(*self.post.vjp(self.fisher_mean * dmean), self.fisher_ls * u.ls)
        return self.jacobian(w).task_sum()


def _sum(blocks) -> Blocks:
    """The sum of `Blocks`."""
    total = None
    for b in blocks:
        total = b if total is None else total.plus(b)
    return total


def local_model(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    batch: MetaBatch,
    estimator: str,
    inner_lr: float,
    inner_steps: int = 1,
    damping: float = 0.0,
    total: int | None = None,
) -> LocalModel:
    """At `params`, the weights `batch` was built with: TRPO's outer loss (`meta_objective`, unclipped),
    its flat gradient, and `v -> (H + damping I) v`, H the Hessian of `meta_objective`'s KL. `total`:
    the batch is a share of a meta-batch of `total` tasks (`meta_objective`'s): all three are this
    share's parts of sums over tasks."""
    _check(policy, estimator, inner_steps)
    layout, total = Layout(params), batch.post.goals.shape[0] if total is None else total
    with torch.no_grad():
        theta = _theta(layout, params)
        parts = [
            _LocalModel(theta, _MetaBatch(_tasks(batch, lo, hi), total), estimator, inner_lr, inner_steps)
            for lo, hi in _chunks(batch, max(theta.w1.shape[-2], theta.w2.shape[-2]))
        ]
        loss = sum(part.loss for part in parts)
        gradient = layout.flat(_sum(part.gradient for part in parts))

    def product(v: Tensor) -> Tensor:
        with torch.no_grad():
            direction = layout.blocks(v)
            return layout.flat(_sum(part.product(direction) for part in parts)) + damping * v

    return LocalModel(loss.item(), gradient, product)


def objective(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    batch: MetaBatch,
    estimator: str,
    inner_lr: float,
    inner_steps: int = 1,
    total: int | None = None,
) -> tuple[Tensor, Tensor]:
    """`meta_objective`'s (unclipped) loss and mean KL at `params`, without gradients: TRPO's line search
    (`total` as `local_model`'s)."""
    _check(policy, estimator, inner_steps)
    layout, total = Layout(params), batch.post.goals.shape[0] if total is None else total
    loss, kl = 0.0, 0.0
    with torch.no_grad():
        theta = _theta(layout, params)
        for lo, hi in _chunks(batch, max(theta.w1.shape[-2], theta.w2.shape[-2])):
            data = _MetaBatch(_tasks(batch, lo, hi), total)
            part_loss, part_kl = _objective(theta, data, estimator, inner_lr, inner_steps)
            loss, kl = loss + part_loss, kl + part_kl
    return loss, kl


def _objective(theta: Blocks, data: _MetaBatch, estimator: str, inner_lr: float, inner_steps: int):
    batch, adapted = data.batch, theta
    if inner_steps:
        pre_site = Site(theta, data.samples(batch.pre.obs))
        pre_z = (data.samples(batch.pre.actions) - pre_site.mean) * torch.exp(-theta.ls)
        w = data.pre_weight.unsqueeze(-1)
        grad = Blocks(*pre_site.gradient(-w * pre_z * torch.exp(-theta.ls)), (-w * (pre_z * pre_z - 1)).sum(1))
        adapted = per_task(theta, data.tasks).plus(grad, -inner_lr)
    post_site = Site(adapted, data.samples(batch.post.obs))
    log_std = adapted.ls.unsqueeze(-2)
    _, gain = data.post_terms(post_site, log_std)
    loss = -gain.sum()
    if inner_steps and estimator == "dice":
        loss = loss - data.score(pre_z, theta.ls)[0]
    old_mean, old_log_std = data.samples(batch.old_mean), data.samples(batch.old_log_std)
    kl = gaussian_kl(old_mean, old_log_std, post_site.mean, log_std.expand_as(post_site.mean))
    return loss, (data.share * kl).sum()
