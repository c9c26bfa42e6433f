"""The meta-gradient of MAML-RL, and the estimators that do or do not make it unbiased.

MAML for policies (Finn et al. 2017) maximizes, over the initial weights theta,

    F(theta) = E_{tau ~ pi_theta} [ J(theta'(theta, tau)) ],   theta' = theta + alpha * g_hat(theta, tau),

where tau are the pre-adaptation trajectories of a task, `g_hat` the policy-gradient estimate they
give (the gradient of the surrogate mean_t log pi_theta(a_t|s_t) A_t, a function of theta and tau),
and J(theta') the expected return of the adapted policy. Its gradient has two parts:

    grad F = E[ (I + alpha d g_hat / d theta)^T grad J(theta') ]   (through the adapted weights)
           + E[ J(theta') grad_theta log pi_theta(tau) ]             (tau's distribution moves with theta)

The estimators, chosen by `estimator`:

- "surrogate": what public implementations do: adapt with the surrogate (advantages constant) and
  differentiate the post-adaptation objective through theta'. It keeps the first part and drops the
  second, so its meta-gradient is biased (Foerster et al. 2018; Rothfuss et al. 2019).
- "dice": DiCE (Foerster et al. 2018) applied to the whole two-level stochastic computation graph:
  the post-adaptation objective is multiplied by the magic box exp(C - stop_grad(C)) of C, the
  cumulative log-probability of the task's pre-adaptation trajectories (on which theta' depends),
  so the second part appears, weighted by the post-adaptation return (minus a baseline that does not
  depend on tau). Every derivative of the magic-boxed objective is unbiased: it estimates grad F
  exactly in expectation (`rl.bandit` checks it against a closed form). Applying the magic box in the
  inner objective alone, as the usual "DiCE-MAML" does, replaces J(theta') by its linearization
  around theta: unbiased for the Hessian of the expected inner return, but not for grad F, with a
  bias of order alpha^2 / N (`rl.bandit` measures it; in one step it coincides with LVC).
- "lvc": ProMP's low-variance curvature estimator (Rothfuss et al. 2019): the inner objective
  mean_t (pi_theta / stop_grad(pi_theta))(a_t|s_t) A_t, whose Hessian adds the per-step terms
  grad log pi grad log pi^T A_t that the surrogate drops (no cross-step terms: lower variance,
  some bias).

The post-adaptation objective is the same for all three, a likelihood-ratio surrogate of the adapted
policies on post-adaptation trajectories (clipped for PPO), with the KL between the adapted policies
before and after the outer step as TRPO's trust region.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..functional import Params
from .policies import batched, distribution, gaussian_kl, gaussian_log_prob, is_batched, log_prob
from .returns import advantages, discounted_returns
from .rollout import Trajectories
from .share import TaskShare

ESTIMATORS = ("surrogate", "dice", "lvc")


def magic_box(x: Tensor) -> Tensor:
    """DiCE's magic box: 1 in value, with d/dx box(x) = box(x) (so n-th derivatives keep score terms)."""
    return torch.exp(x - x.detach())


def _check(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def _per_task_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over each task's steps taken: `[T]` for `[T, N, H]`."""
    return (values * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)


def inner_loss(
    policy: nn.Module, params: Mapping[str, Tensor], traj: Trajectories, adv: Tensor, estimator: str = "surrogate"
) -> Tensor:
    """The inner (adaptation) loss of each task, `[T]`: minus the mean over steps of
    log pi(a|s) A ("surrogate", "dice") or pi(a|s) / stop_grad(pi(a|s)) A ("lvc")."""
    _check(estimator)
    logp = log_prob(policy, params, traj.obs, traj.actions)
    weight = magic_box(logp) if estimator == "lvc" else logp
    return -_per_task_mean(weight * adv, traj.mask)


def adapt(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    traj: Trajectories,
    adv: Tensor,
    inner_lr: float,
    estimator: str = "surrogate",
    create_graph: bool = True,
) -> Params:
    """One policy-gradient step per task: `[T, ...]` adapted weights from shared (or batched) `params`.

    With `create_graph`, the step stays differentiable w.r.t. `params` (MAML's second-order term);
    without, the result is detached (sampling, evaluation).
    """
    tasks = traj.goals.shape[0]
    if create_graph:
        start = dict(params) if is_batched(policy, params) else batched(params, tasks)
    else:
        source = params if is_batched(policy, params) else batched(params, tasks)
        start = {k: v.detach().clone().requires_grad_(True) for k, v in source.items()}
    with torch.enable_grad():
        loss = inner_loss(policy, start, traj, adv, estimator).sum()
        grads = torch.autograd.grad(loss, list(start.values()), create_graph=create_graph)
    adapted = {k: v - inner_lr * g for (k, v), g in zip(start.items(), grads, strict=True)}
    return adapted if create_graph else {k: v.detach() for k, v in adapted.items()}


@dataclass(frozen=True)
class MetaBatch:
    """What one outer step needs of a meta-batch, computed once with the weights before the step.

    pre, post: the trajectories before and after adaptation (post is pre when there is no inner
    step); pre_adv `[T, N, H]` the inner advantages (standardized per task); post_adv `[T, N, H]` the
    outer advantages (centered per task, one scale for the batch); old_mean, old_log_std
    `[T, N, H, A]` and old_logp `[T, N, H]` the adapted policies at the post states before the step;
    pre_logp_old `[T, N]` each pre-adaptation trajectory's log-probability; score_weight `[T]` the
    weight of the pre-adaptation score term ("dice"): the task's post-adaptation return minus a
    baseline that does not depend on its pre-adaptation trajectories, in the units of post_adv.
    """

    pre: Trajectories
    pre_adv: Tensor
    post: Trajectories
    post_adv: Tensor
    old_mean: Tensor
    old_log_std: Tensor
    old_logp: Tensor
    pre_logp_old: Tensor
    score_weight: Tensor


def leave_one_out_baseline(goals: Tensor, values: Tensor, ridge: float = 1e-6) -> Tensor:
    """For each task, `values` of the other tasks regressed on [1, |goal|], predicted at its goal: `[T]`.

    A baseline for task i must not depend on task i's own samples; the other tasks' are independent.
    """
    t = goals.shape[0]
    if t < 3:
        return torch.zeros_like(values)
    x = torch.stack([torch.ones_like(values), torch.linalg.vector_norm(goals, dim=-1)], dim=-1)
    out = torch.empty_like(values)
    eye = torch.eye(2, dtype=values.dtype)
    for i in range(t):
        keep = torch.arange(t) != i
        xs, ys = x[keep], values[keep]
        w = torch.linalg.solve(xs.T @ xs + ridge * eye, xs.T @ ys)
        out[i] = x[i] @ w
    return out


def build_meta_batch(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    adapted: Mapping[str, Tensor] | None,
    pre: Trajectories,
    post: Trajectories | None,
    gamma: float = 0.99,
    lam: float = 1.0,
    share: TaskShare | None = None,
) -> MetaBatch:
    """Advantages, old log-probabilities and score weights for the outer step (no gradients).

    With `share` (`rl.parallel.TaskShare`), the trajectories are a process's share of a meta-batch split
    over processes: all is per task but the outer advantages' scale (the batch's sum of squares and
    count of steps) and DiCE's baseline (each task's return regressed on the others' goals and returns),
    which the processes combine in one all-reduce (`share.gather`)."""
    with torch.no_grad():
        pre_adv = advantages(pre.obs, pre.rewards, pre.mask, gamma, lam)
        if post is None:  # no inner step: the outer objective is on the pre-adaptation trajectories
            post, adapted = pre, params
        raw = advantages(post.obs, post.rewards, post.mask, gamma, lam, normalize=False)
        m = post.mask
        count = m.sum((1, 2), keepdim=True).clamp_min(1)
        centered = (raw - (raw * m).sum((1, 2), keepdim=True) / count) * m
        # J(theta') per task, in the units of the post term (per step, divided by the batch's scale)
        post_return = discounted_returns(post.rewards, m, gamma)[..., 0].mean(1)
        goals, returns, squares, steps = post.goals, post_return, centered.pow(2).sum(), m.sum()
        if share is not None:  # every task's goal and return, and the sums over the meta-batch
            per_task, sums = share.gather(torch.cat([goals, returns[:, None]], 1), torch.stack([squares, steps]))
            goals, returns, (squares, steps) = per_task[:, :-1], per_task[:, -1], sums
        scale = (squares / steps.clamp_min(2)).sqrt() + 1e-8
        post_adv = centered / scale
        mean, log_std = distribution(policy, {k: v.detach() for k, v in adapted.items()}, post.obs)
        old_logp = gaussian_log_prob(mean, log_std, post.actions)
        pre_logp = log_prob(policy, {k: v.detach() for k, v in params.items()}, pre.obs, pre.actions)
        pre_logp_old = (pre_logp * pre.mask).sum(-1)
        length = m.sum(-1).mean(1).clamp_min(1)
        baseline = leave_one_out_baseline(goals, returns)
        if share is not None:
            baseline = baseline[share.start : share.stop]
        score_weight = (post_return - baseline) / (length * scale)
    return MetaBatch(pre, pre_adv, post, post_adv, mean, log_std, old_logp, pre_logp_old, score_weight)


def meta_objective(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    batch: MetaBatch,
    estimator: str,
    inner_lr: float,
    inner_steps: int = 1,
    clip: float | None = None,
    create_graph: bool = True,
    total: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The outer loss (to minimize) and the mean KL of the adapted policies, as functions of `params`.

    `total`: the batch is a share of a meta-batch of `total` tasks (split over processes): the sums
    over its tasks divided by `total`, this share's part of the meta-batch's means.

    Loss: minus the mean over tasks of the post-adaptation surrogate mean_t ratio_t A'_t (PPO's
    clipped form with `clip`), plus, for "dice", the pre-adaptation score term (C - C_old) * w per
    task (with the magic box's first derivative; PPO clips each trajectory's ratio). Its value at the
    weights the batch was built with is the same for all estimators; only the gradient differs.
    """
    _check(estimator)
    if inner_steps not in (0, 1):
        raise ValueError(f"meta-training takes 0 or 1 inner steps, not {inner_steps}")
    post = batch.post
    if inner_steps:
        adapted = adapt(policy, params, batch.pre, batch.pre_adv, inner_lr, estimator, create_graph=create_graph)
    else:
        adapted = dict(params)
    mean, log_std = distribution(policy, adapted, post.obs)
    ratio = torch.exp(gaussian_log_prob(mean, log_std, post.actions) - batch.old_logp)
    gain = ratio * batch.post_adv
    if clip is not None:
        gain = torch.minimum(gain, ratio.clamp(1 - clip, 1 + clip) * batch.post_adv)
    loss = -_per_task_mean(gain, post.mask)
    if estimator == "dice" and inner_steps:
        pre = batch.pre
        traj_logp = (log_prob(policy, params, pre.obs, pre.actions) * pre.mask).sum(-1)
        w = batch.score_weight[:, None]
        if clip is None:  # log(magic box): the same first derivative, and no overflow in a line search
            score = ((traj_logp - batch.pre_logp_old) * w).sum(-1)
        else:
            rho = torch.exp(traj_logp - batch.pre_logp_old)
            score = (torch.minimum(rho * w, rho.clamp(1 - clip, 1 + clip) * w) - w).sum(-1)
        loss = loss - score
    kl = _per_task_mean(gaussian_kl(batch.old_mean, batch.old_log_std, mean, log_std), post.mask)
    if total is not None:
        return loss.sum() / total, kl.sum() / total
    return loss.mean(), kl.mean()


def kl_hessian_product(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    batch: MetaBatch,
    estimator: str,
    inner_lr: float,
    inner_steps: int = 1,
    damping: float = 0.0,
    total: int | None = None,
):
    """`v -> (H + damping I) v`, H the Hessian w.r.t. `params` (flat) of `meta_objective`'s KL, at the
    weights the batch was built with, without differentiating three times. `total`: as `meta_objective`'s
    (this share's part of H; the damping is then best added once, after the processes' sum).

    There the KL is minimal in the adapted weights (its gradient in theta' is 0), so
    H = mean_t J_t^T F_t J_t with F_t the Hessian of task t's KL in its adapted weights (the Fisher
    information) and J_t = d theta'_t / d theta = I - alpha H_in_t, H_in_t the (symmetric) Hessian of
    the inner loss: two Hessian-vector products of the inner loss and one of the KL per product,
    instead of the double backward through the adaptation (`outer.fisher_vector_product`).
    """
    leaves = list(params.values())
    shapes = [p.shape for p in leaves]
    tasks = batch.post.goals.shape[0]
    post = batch.post
    if inner_steps:
        start = {
            k: v.detach().unsqueeze(0).expand(tasks, *v.shape).clone().requires_grad_(True) for k, v in params.items()
        }
        inner = inner_loss(policy, start, batch.pre, batch.pre_adv, estimator).sum()
        inner_grads = torch.autograd.grad(inner, list(start.values()), create_graph=True)
        with torch.no_grad():
            adapted = {
                k: (v - inner_lr * g).detach().requires_grad_(True)
                for (k, v), g in zip(start.items(), inner_grads, strict=True)
            }
    else:
        adapted = {
            k: v.detach().unsqueeze(0).expand(tasks, *v.shape).clone().requires_grad_(True) for k, v in params.items()
        }
    mean, log_std = distribution(policy, adapted, post.obs)
    kl = _per_task_mean(gaussian_kl(batch.old_mean, batch.old_log_std, mean, log_std), post.mask)
    kl = kl.mean() if total is None else kl.sum() / total
    kl_grads = torch.autograd.grad(kl, list(adapted.values()), create_graph=True)

    def split(v: Tensor) -> list[Tensor]:
        """flat `[T, P]` -> per-parameter `[T, ...]`"""
        out, at = [], 0
        for s in shapes:
            n = s.numel()
            out.append(v[:, at : at + n].reshape(tasks, *s))
            at += n
        return out

    def per_task_flat(tensors) -> Tensor:
        return torch.cat([t.reshape(tasks, -1) for t in tensors], dim=1)

    def jacobian(v: Tensor) -> Tensor:
        """`[T, P]` -> J_t v_t, `[T, P]`"""
        if not inner_steps:
            return v
        dot = sum((g * u).sum() for g, u in zip(inner_grads, split(v), strict=True))
        hv = torch.autograd.grad(dot, list(start.values()), retain_graph=True)
        return v - inner_lr * per_task_flat(hv)

    def product(v: Tensor) -> Tensor:
        u = jacobian(v.unsqueeze(0).expand(tasks, -1))
        dot = sum((g * w).sum() for g, w in zip(kl_grads, split(u), strict=True))
        fu = per_task_flat(torch.autograd.grad(dot, list(adapted.values()), retain_graph=True))
        return jacobian(fu).sum(0) + damping * v

    return product
