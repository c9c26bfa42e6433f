"""Two public MAML-TRPO meta-updates, re-implemented on our 2D navigation, to time beside ours.

Each anchor takes the episodes our trainer samples (`sample_episodes`: the same goals, rollouts and
sampling-time adaptation as `Nav2DTrainer.step()`, from the same generator) and the same
2-100-100-2 Gaussian policy (`rl.policies`), and performs one TRPO meta-update as the peer's code
does: its order of operations, what it computes once and what it recomputes, its advantages, its
damping, conjugate gradient and line-search rule. Only the meta-update differs from ours, so
`bench.nav2d.compare_nav2d_step` can time them in the same loop. Their code is cited, not copied:

- "pytorch-maml-rl": `PytorchMamlRlUpdate`, after `MAMLTRPO.step` and `surrogate_loss` in
  maml_rl/metalearners/maml_trpo.py, `conjugate_gradient` in maml_rl/utils/optimization.py,
  `weighted_mean`/`weighted_normalize` in maml_rl/utils/torch_utils.py, `reinforce_loss` and the
  sampler's advantages (maml_rl/samplers/multi_task_sampler.py, maml_rl/episode.py,
  maml_rl/baseline.py) of tristandeleu/pytorch-maml-rl at commit
  21d4ba1ccd300a403928e6db553c9529bcc3fbdf (31 August 2020), with configs/maml/2d-navigation.yaml's
  TRPO settings (max-kl 0.01, 10 CG iterations, damping 1e-5, 15 backtracks of 0.8), ours too.
- "learn2learn": `Learn2LearnUpdate`, after `main`'s TRPO step, `meta_surrogate_loss`,
  `fast_adapt_a2c`, `maml_a2c_loss` and `compute_advantages` in examples/rl/maml_trpo.py of
  learnables/learn2learn at commit db5cee3795490071282bbdfa81179ef732349196 (4 July 2023; the file
  last changed in 6d113f84386f13afc548ba2cd99a2a0e02935a23), and the cherry helpers it calls
  (`trpo.hessian_vector_product`, `trpo.conjugate_gradient`, `trpo.policy_loss`,
  `a2c.policy_loss`, `td.discount`, `pg.generalized_advantage`, `normalize`,
  `models.robotics.LinearValue`) of learnables/cherry at commit
  80e78f8bb53c2e6bb8eece0ba74122e5d6d6216f (27 February 2021; the same arithmetic at
  b0a9eeecea0de69d17467d91bab72c4a675bf004, 2025).

What each computes in one meta-iteration, and what it recomputes:

- pytorch-maml-rl: one pass over the tasks builds, per task, the adaptation with `create_graph` and
  the surrogate loss and KL of the adapted policy (its old policy is that pass's own output, detached,
  so the ratio is 1 and the KL 0 there); the gradient of the mean loss; the KL's gradient with
  `create_graph`, once; then every Hessian-vector product (10 in conjugate gradient, 1 more for the
  step's length) is one backward through that retained double graph: the KL and the adaptation are
  not recomputed per product. Each line-search trial adapts again, first order (no graph), and
  evaluates loss and KL without gradients, against the old policies of the first pass.
- learn2learn: the sampling loop adapts each task's clone first order; those clones are the old
  policies. `meta_surrogate_loss` then loops over the tasks: clone the policy, refit the linear
  baseline and recompute the advantages of the task's pre-adaptation episodes, adapt with
  `create_graph`, refit the baseline on its post-adaptation episodes, and evaluate the old policy,
  the KL and the surrogate. The KL's gradient (`create_graph`) is taken once and every product is a
  backward through it, as above. Each line-search trial is a whole `meta_surrogate_loss` again on a
  copy of the policy: baseline fits, advantages, and the adaptation with `create_graph` (a graph
  that is built and not used).

What differs from the peers' runs: the episodes are ours (`rl.envs` and `rl.rollout`, not the peers'
samplers and environments), adapted for sampling our way; the policy is ours (ReLU, 100-100, as
learn2learn's; pytorch-maml-rl's 2D-navigation config has tanh, 64-64; no clamp of the log-std at
log 1e-6: the same while the std stays above 1e-6); the settings are the bench's (discount 0.99
where learn2learn's script has 0.95). What is hard-coded in learn2learn's script stays: backtracking
by 0.5 from a meta step of 1.0, damping 1e-5, cherry's conjugate-gradient constants. Tensors keep the
episodes' dtype: pytorch-maml-rl's conjugate gradient makes its solution float32 (`.float()`), a
no-op in its float32 runs, which we leave out; cherry's baseline builds its time feature in float32,
which we build in the states' dtype.

Checked once against the peers' own code at those commits (run outside the package on the same
float64 episodes and weights, episodes of unequal lengths included; their code is not a
dependency): learn2learn's direction, step and updated weights agree to 2e-15 (with cherry's time
feature in float64), pytorch-maml-rl's to 2e-15 with 3 conjugate-gradient steps (with 10, its
rounding, amplified by the nearly singular KL Hessian of a tiny batch, leaves up to 4e-7), and the
sampler's advantages to 3e-13.

Where they compute another quantity than ours (`rl.trainer` with `estimator="surrogate"`, what both
peers estimate; tests/test_nav2d_anchors.py measures each difference):

- pytorch-maml-rl normalizes both advantages per task with the mean of the episodes' means and the
  population standard deviation (ours: inner ones per task with the sample standard deviation,
  outer ones centered per task and scaled by one deviation for the batch); it averages over each
  episode's steps, then over episodes (ours: over a task's steps; the same when all episodes have
  the same length). Its TRPO step is ours otherwise; its line search takes KL(new || old) < max_kl,
  ours KL(old || new) <= max_kl.
- learn2learn averages the log-probabilities and the KL over the two action dimensions instead of
  summing them: its inner step is half ours for the same step size, its gradient and KL Hessian
  are half ours (so its direction is ours with twice the damping, and the same max_kl allows sqrt(2)
  times the step). Its advantages come from cherry's linear baseline fitted to the task's steps laid
  end to end (the time feature counts steps across episodes), GAE whose value at each episode's last
  step is the value of the state it ends in, and one standardization per task (sample standard
  deviation). cherry's conjugate gradient adds 1e-8 to each p'Ap, and its residual `r` and search
  direction `p` are the same tensor in the first iteration (`p = r`, then `r -= ...` in place), so
  its second direction is (1 + beta) r, not r + beta p: its iterates are not conjugate gradient's.
  Its line search tries steps 0.5^k and takes the first whose loss is below the old one and whose
  KL(new || old), averaged over the action dimensions, is below max_kl.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..functional import Params, params_of
from ..rl.envs import nav_step, sample_goals
from ..rl.estimators import adapt
from ..rl.policies import distribution, gaussian_kl, gaussian_log_prob
from ..rl.returns import advantages as rl_advantages
from ..rl.rollout import Trajectories, rollout
from ..rl.trainer import Nav2DConfig

__all__ = [
    "ANCHORS",
    "AnchorTrainer",
    "Episodes",
    "Learn2LearnUpdate",
    "PytorchMamlRlUpdate",
    "cherry_conjugate_gradient",
    "deleu_conjugate_gradient",
    "sample_episodes",
]

Matvec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Episodes:
    """A meta-batch as `Nav2DTrainer.step()` samples it: goals `[T, 2]`, the pre-adaptation episodes,
    the adapted weights they were sampled with (`[T, ...]`, detached) and the post-adaptation episodes."""

    goals: Tensor
    pre: Trajectories
    adapted: Params
    post: Trajectories


def sample_episodes(
    policy: nn.Module, params: Mapping[str, Tensor], config: Nav2DConfig, generator: torch.Generator
) -> Episodes:
    """What `Nav2DTrainer.step()` samples before its outer step, in the same order from `generator`."""
    c = config
    goals = sample_goals(c.meta_batch, generator, params["log_std"].dtype)
    pre = rollout(policy, params, goals, c.trajectories, generator, c.horizon)
    pre_adv = rl_advantages(pre.obs, pre.rewards, pre.mask, c.gamma, c.gae_lambda)
    adapted = adapt(policy, params, pre, pre_adv, c.inner_lr, c.estimator, create_graph=False)
    post = rollout(policy, adapted, goals, c.trajectories, generator, c.horizon)
    return Episodes(goals, pre, adapted, post)


def _flat(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _assign(leaves: list[Tensor], vector: Tensor) -> None:
    with torch.no_grad():
        at = 0
        for p in leaves:
            p.copy_(vector[at : at + p.numel()].view_as(p))
            at += p.numel()


def _log_prob_per_dim(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """log N per action dimension, `[..., A]` (a `torch.distributions.Normal`'s `log_prob`)."""
    return gaussian_log_prob(mean.unsqueeze(-1), log_std.unsqueeze(-1), actions.unsqueeze(-1))


def _kl_per_dim(mean0: Tensor, log_std0: Tensor, mean1: Tensor, log_std1: Tensor) -> Tensor:
    """KL(N0 || N1) per action dimension, `[..., A]` (`kl_divergence` of two `Normal`s)."""
    return gaussian_kl(mean0.unsqueeze(-1), log_std0.unsqueeze(-1), mean1.unsqueeze(-1), log_std1.unsqueeze(-1))


# ----- pytorch-maml-rl -----


def deleu_conjugate_gradient(matvec: Matvec, b: Tensor, cg_iters: int = 10, residual_tol: float = 1e-10) -> Tensor:
    """pytorch-maml-rl's `conjugate_gradient` (maml_rl/utils/optimization.py): textbook conjugate
    gradient from x = 0, the residual tested after each iteration; x in b's dtype (see the module)."""
    p = b.clone().detach()
    r = b.clone().detach()
    x = torch.zeros_like(b)
    rdotr = torch.dot(r, r)
    for _ in range(cg_iters):
        z = matvec(p).detach()
        v = rdotr / torch.dot(p, z)
        x += v * p
        r -= v * z
        newrdotr = torch.dot(r, r)
        p = r + (newrdotr / rdotr) * p
        rdotr = newrdotr
        if rdotr.item() < residual_tol:
            break
    return x.detach()


def _weighted_mean(values: Tensor, mask: Tensor) -> Tensor:
    """`weighted_mean` of maml_rl/utils/torch_utils.py: each episode's mean over its steps, `[..., N]`."""
    return (values * mask).sum(-1) / mask.sum(-1)


def _weighted_normalize(values: Tensor, mask: Tensor, epsilon: float = 1e-8) -> Tensor:
    """`weighted_normalize` per task, `[T, N, H]`: minus the mean of the episodes' means, divided by
    the root of the mean over episodes of each episode's mean square (plus epsilon)."""
    center = _weighted_mean(values, mask).mean(-1)[:, None, None]
    out = (values - center) * mask
    std = torch.sqrt(_weighted_mean(out**2, mask).mean(-1))[:, None, None]
    return out / (std + epsilon)


class PytorchMamlRlUpdate:
    """One meta-update of tristandeleu/pytorch-maml-rl's `MAMLTRPO.step` (see the module docstring).

    `update(params, episodes)` changes the leaves of `params` in place and returns the step's
    statistics; `direction` (the conjugate-gradient solution) and `full_step` (the step at line-search
    size 1) are kept afterwards, both as added to the weights. `advantages=(pre, post)` (`[T, N, H]`)
    replaces the sampler's, and `conjugate_gradient` the peer's, for tests.
    """

    name = "pytorch-maml-rl"

    def __init__(
        self,
        policy: nn.Module,
        config: Nav2DConfig,
        conjugate_gradient: Callable[..., Tensor] = deleu_conjugate_gradient,
    ) -> None:
        self.policy = policy
        self.fast_lr = config.inner_lr
        self.gamma = config.gamma
        self.gae_lambda = config.gae_lambda
        self.max_kl = config.max_kl
        self.cg_iters = config.cg_iters
        self.cg_damping = config.cg_damping
        self.ls_max_steps = config.max_backtracks
        self.ls_backtrack_ratio = config.backtrack
        self.conjugate_gradient = conjugate_gradient
        self.direction: Tensor | None = None
        self.full_step: Tensor | None = None

    def advantages(self, traj: Trajectories) -> Tensor:
        """The sampler's (`create_episodes`): the linear feature baseline fitted per task to the
        discounted returns, GAE, `weighted_normalize`. `rl.returns` fits the same baseline (features
        [s, s^2, t, t^2, t^3, 1], ridge 1e-5 raised tenfold while not finite) and the same GAE."""
        raw = rl_advantages(traj.obs, traj.rewards, traj.mask, self.gamma, self.gae_lambda, normalize=False)
        return _weighted_normalize(raw, traj.mask)

    def _adapt(self, params: Mapping[str, Tensor], pre: Trajectories, adv: Tensor, i: int, first_order: bool):
        """`adapt`: `reinforce_loss` on the task's pre-adaptation episodes, one `update_params` step."""
        mean, log_std = distribution(self.policy, params, pre.obs[i])
        log_probs = gaussian_log_prob(mean, log_std, pre.actions[i])
        loss = (-_weighted_mean(log_probs * adv[i], pre.mask[i])).mean()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        return {name: p - self.fast_lr * g for (name, p), g in zip(params.items(), grads, strict=True)}

    def _surrogate_loss(self, params, episodes: Episodes, advantages, i: int, old_pi=None):
        """`surrogate_loss` of task i: (loss, KL, old policy)."""
        pre, post = episodes.pre, episodes.post
        adapted = self._adapt(params, pre, advantages[0], i, first_order=old_pi is not None)
        with torch.set_grad_enabled(old_pi is None):
            mean, log_std = distribution(self.policy, adapted, post.obs[i])
            if old_pi is None:
                old_pi = (mean.detach(), log_std.detach())
            actions = post.actions[i]
            log_ratio = gaussian_log_prob(mean, log_std, actions) - gaussian_log_prob(*old_pi, actions)
            ratio = torch.exp(log_ratio)
            losses = -_weighted_mean(ratio * advantages[1][i], post.mask[i])
            kls = _weighted_mean(gaussian_kl(mean, log_std, *old_pi), post.mask[i])
        return losses.mean(), kls.mean(), old_pi

    def _hessian_vector_product(self, kl: Tensor, leaves: list[Tensor]):
        flat_grad_kl = _flat(torch.autograd.grad(kl, leaves, create_graph=True))

        def product(vector: Tensor, retain_graph: bool = True) -> Tensor:
            grad2s = torch.autograd.grad(torch.dot(flat_grad_kl, vector), leaves, retain_graph=retain_graph)
            return _flat(grad2s) + self.cg_damping * vector

        return product

    def __call__(self, params: Mapping[str, Tensor], episodes: Episodes, advantages=None) -> dict[str, float]:
        if advantages is None:
            advantages = (self.advantages(episodes.pre), self.advantages(episodes.post))
        leaves = list(params.values())
        tasks = episodes.goals.shape[0]
        old_losses, old_kls, old_pis = zip(
            *[self._surrogate_loss(params, episodes, advantages, i) for i in range(tasks)], strict=True
        )
        old_loss = sum(old_losses) / tasks
        grads = _flat(torch.autograd.grad(old_loss, leaves, retain_graph=True))
        old_kl = sum(old_kls) / tasks
        hessian_vector_product = self._hessian_vector_product(old_kl, leaves)
        stepdir = self.conjugate_gradient(hessian_vector_product, grads, self.cg_iters)
        shs = 0.5 * torch.dot(stepdir, hessian_vector_product(stepdir, retain_graph=False))
        lagrange_multiplier = torch.sqrt(shs / self.max_kl)
        step = stepdir / lagrange_multiplier
        self.direction, self.full_step = -stepdir, -step.detach()
        old_params = _flat([p.detach() for p in leaves]).clone()
        info = {"loss_before": old_loss.item(), "grad_norm": grads.norm().item(), "accepted": 0.0}
        step_size = 1.0
        for k in range(self.ls_max_steps):
            _assign(leaves, old_params - step_size * step)
            losses, kls, _ = zip(
                *[self._surrogate_loss(params, episodes, advantages, i, old_pi) for i, old_pi in enumerate(old_pis)],
                strict=True,
            )
            improve = (sum(losses) / tasks) - old_loss
            kl = sum(kls) / tasks
            if improve.item() < 0.0 and kl.item() < self.max_kl:
                info.update(loss_after=(sum(losses) / tasks).item(), kl=kl.item(), backtracks=float(k), accepted=1.0)
                return info
            step_size *= self.ls_backtrack_ratio
        _assign(leaves, old_params)
        info.update(loss_after=info["loss_before"], kl=0.0, backtracks=-1.0)
        return info


# ----- learn2learn (examples/rl/maml_trpo.py, with cherry) -----


def cherry_conjugate_gradient(
    matvec: Matvec, b: Tensor, num_iterations: int = 10, tol: float = 1e-10, eps: float = 1e-8
) -> Tensor:
    """cherry's `trpo.conjugate_gradient`, as it computes: `eps` added to each p'Ap, the residual
    tested after each iteration, and the residual and the first search direction one tensor, so that
    the in-place update of the residual also changes that direction (see the module docstring)."""
    x = torch.zeros_like(b)
    r = b.clone()  # cherry takes b itself; learn2learn does not use it afterwards
    p = r
    r_dot_old = torch.dot(r, r)
    for _ in range(num_iterations):
        ap = matvec(p)
        alpha = r_dot_old / (torch.dot(p, ap) + eps)
        x += alpha * p
        r -= alpha * ap
        r_dot_new = torch.dot(r, r)
        p = r + (r_dot_new / r_dot_old) * p
        r_dot_old = r_dot_new
        if r_dot_new.item() < tol:
            break
    return x


@dataclass(frozen=True)
class _Replay:
    """One task's episodes as cherry's `ExperienceReplay` holds them after `Runner.run`: the steps
    taken, episode after episode, `[S, ...]`; rewards and dones `[S, 1]`."""

    state: Tensor
    action: Tensor
    reward: Tensor
    done: Tensor
    next_state: Tensor


def _replay(traj: Trajectories, i: int) -> _Replay:
    taken = traj.mask[i] > 0
    last = taken & ~torch.cat([taken[:, 1:], torch.zeros_like(taken[:, :1])], dim=1)
    next_state, _, _ = nav_step(traj.obs[i], traj.goals[i], traj.actions[i])
    return _Replay(
        traj.obs[i][taken],
        traj.actions[i][taken],
        traj.rewards[i][taken][:, None],
        last[taken].to(traj.rewards.dtype)[:, None],
        next_state[taken],
    )


def _discount(gamma: float, rewards: Tensor, dones: Tensor) -> Tensor:
    """cherry's `td.discount` (bootstrap 0): the running return is carried as an `[S, 1]` tensor."""
    running = torch.zeros_like(rewards)
    discounted = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[0])):
        running = running * (1.0 - dones[t])
        running = rewards[t] + gamma * running
        discounted[t] += running[0]
    return discounted


def _linear_value_features(states: Tensor) -> Tensor:
    """cherry's `LinearValue._features`: [s, s^2, t, t^2, t^3, 1], t = row index / 100."""
    length = states.shape[0]
    ones = torch.ones(length, 1, dtype=states.dtype)
    steps = torch.arange(length, dtype=states.dtype).view(-1, 1) / 100.0
    return torch.cat([states, states**2, steps, steps**2, steps**3, ones], dim=1)


def _l2l_advantages(replay: _Replay, gamma: float, tau: float, reg: float = 1e-5) -> Tensor:
    """`compute_advantages` then `ch.normalize`: `[S, 1]`."""
    returns = _discount(gamma, replay.reward, replay.done)
    features = _linear_value_features(replay.state)
    coeffs = torch.linalg.solve(
        features.T @ features + reg * torch.eye(features.shape[1], dtype=features.dtype), features.T @ returns
    )
    values = features @ coeffs
    next_values = _linear_value_features(replay.next_state) @ coeffs
    bootstraps = values * (1.0 - replay.done) + next_values * replay.done
    next_value = torch.zeros(1, 1, dtype=values.dtype)
    shifted = torch.cat((bootstraps[1:], next_value), dim=0)
    td_errors = replay.reward + gamma * (1.0 - replay.done) * shifted - bootstraps
    adv = _discount(tau * gamma, td_errors, replay.done)
    return (adv - adv.mean()) / (adv.std() + 1e-8)


class Learn2LearnUpdate:
    """One meta-update of learn2learn's examples/rl/maml_trpo.py (see the module docstring).

    `update(params, episodes)` changes the leaves of `params` in place and returns the step's
    statistics; `direction` and `full_step` are kept as in `PytorchMamlRlUpdate`. For tests:
    `advantages=(pre, post)` (`[T, N, H]`) replaces `compute_advantages` + `normalize`; `adapt_lr`,
    `damping` and `conjugate_gradient` replace the script's (the config's step size, cherry's 1e-5
    and cherry's conjugate gradient).
    """

    name = "learn2learn"

    def __init__(
        self,
        policy: nn.Module,
        config: Nav2DConfig,
        adapt_lr: float | None = None,
        damping: float = 1e-5,
        conjugate_gradient: Callable[..., Tensor] = cherry_conjugate_gradient,
    ) -> None:
        self.policy = policy
        self.adapt_lr = config.inner_lr if adapt_lr is None else adapt_lr
        self.gamma = config.gamma
        self.tau = config.gae_lambda
        self.max_kl = config.max_kl
        self.cg_iters = config.cg_iters  # cherry's default, 10
        self.ls_max_steps = config.max_backtracks  # the script's 15
        self.backtrack_factor = 0.5  # the script's
        self.meta_lr = 1.0  # the script's
        self.damping = damping
        self.conjugate_gradient = conjugate_gradient
        self.direction: Tensor | None = None
        self.full_step: Tensor | None = None

    def _log_prob(self, params: Mapping[str, Tensor], states: Tensor, actions: Tensor) -> Tensor:
        """`DiagNormalPolicy.log_prob`: the mean over the action dimensions, `[S, 1]`."""
        mean, log_std = distribution(self.policy, params, states)
        return _log_prob_per_dim(mean, log_std, actions).mean(dim=1, keepdim=True)

    def _fast_adapt(self, params: Mapping[str, Tensor], train: _Replay, adv: Tensor | None, first_order: bool):
        """`fast_adapt_a2c`: `maml_a2c_loss` (advantages recomputed), one `maml_update` step."""
        second_order = not first_order
        log_probs = self._log_prob(params, train.state, train.action)
        if adv is None:
            adv = _l2l_advantages(train, self.gamma, self.tau).detach()
        loss = -torch.mean(log_probs * adv)
        gradients = torch.autograd.grad(
            loss, list(params.values()), retain_graph=second_order, create_graph=second_order
        )
        return {name: p + (-self.adapt_lr * g) for (name, p), g in zip(params.items(), gradients, strict=True)}

    def _meta_surrogate_loss(self, params, replays, old_policies, advantages) -> tuple[Tensor, Tensor]:
        mean_loss: Any = 0.0
        mean_kl: Any = 0.0
        for i, ((train, valid), old_policy) in enumerate(zip(replays, old_policies, strict=True)):
            new_policy = {name: p.clone() for name, p in params.items()}  # l2l.clone_module
            new_policy = self._fast_adapt(new_policy, train, advantages[0][i], first_order=False)
            old_mean, old_log_std = distribution(self.policy, old_policy, valid.state)
            new_mean, new_log_std = distribution(self.policy, new_policy, valid.state)
            kl = _kl_per_dim(new_mean, new_log_std, old_mean, old_log_std).mean()
            mean_kl += kl
            adv = advantages[1][i]
            if adv is None:
                adv = _l2l_advantages(valid, self.gamma, self.tau).detach()
            old_log_probs = _log_prob_per_dim(old_mean, old_log_std, valid.action).mean(dim=1, keepdim=True).detach()
            new_log_probs = _log_prob_per_dim(new_mean, new_log_std, valid.action).mean(dim=1, keepdim=True)
            mean_loss += -torch.mean(torch.exp(new_log_probs - old_log_probs) * adv)
        mean_kl /= len(replays)
        mean_loss /= len(replays)
        return mean_loss, mean_kl

    def _hessian_vector_product(self, loss: Tensor, leaves: list[Tensor]) -> Matvec:
        """cherry's `trpo.hessian_vector_product`: the gradient with `create_graph` once, then one
        backward through it per product."""
        grad_loss = _flat(torch.autograd.grad(loss, leaves, create_graph=True, retain_graph=True))

        def hvp(other: Tensor) -> Tensor:
            hessian_prod = _flat(torch.autograd.grad(torch.dot(grad_loss, other), leaves, retain_graph=True))
            return hessian_prod + self.damping * other

        return hvp

    def __call__(self, params: Mapping[str, Tensor], episodes: Episodes, advantages=None) -> dict[str, float]:
        tasks = episodes.goals.shape[0]
        replays = [(_replay(episodes.pre, i), _replay(episodes.post, i)) for i in range(tasks)]
        if advantages is None:
            flat_adv: tuple[list, list] = ([None] * tasks, [None] * tasks)
        else:
            flat_adv = tuple(
                [adv[i][traj.mask[i] > 0][:, None] for i in range(tasks)]
                for adv, traj in zip(advantages, (episodes.pre, episodes.post), strict=True)
            )
        # the sampling loop: each task's clone adapted first order, kept as its old policy
        old_policies = []
        for i, (train, _) in enumerate(replays):
            clone = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}  # deepcopy
            adapted = self._fast_adapt(clone, train, flat_adv[0][i], first_order=True)
            old_policies.append({name: p.detach() for name, p in adapted.items()})

        leaves = list(params.values())
        old_loss, old_kl = self._meta_surrogate_loss(params, replays, old_policies, flat_adv)
        grad = _flat([g.detach() for g in torch.autograd.grad(old_loss, leaves, retain_graph=True)])
        fvp = self._hessian_vector_product(old_kl, leaves)
        step = self.conjugate_gradient(fvp, grad, self.cg_iters)
        shs = 0.5 * torch.dot(step, fvp(step))
        lagrange_multiplier = torch.sqrt(shs / self.max_kl)
        self.direction, self.full_step = -step.detach(), -(step / lagrange_multiplier).detach()
        step = (step / lagrange_multiplier).detach()
        info = {"loss_before": old_loss.item(), "grad_norm": grad.norm().item(), "accepted": 0.0}
        del old_kl, fvp, grad
        old_loss = old_loss.detach()

        sizes = [p.numel() for p in leaves]
        updates = [u.view_as(p) for u, p in zip(step.split(sizes), leaves, strict=True)]
        for ls_step in range(self.ls_max_steps):
            stepsize = self.backtrack_factor**ls_step * self.meta_lr
            clone = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}  # deepcopy
            with torch.no_grad():
                for p, u in zip(clone.values(), updates, strict=True):
                    p.add_(u, alpha=-stepsize)
            new_loss, kl = self._meta_surrogate_loss(clone, replays, old_policies, flat_adv)
            if new_loss < old_loss and kl < self.max_kl:
                with torch.no_grad():
                    for p, u in zip(leaves, updates, strict=True):
                        p.add_(u, alpha=-stepsize)
                info.update(loss_after=new_loss.item(), kl=kl.item(), backtracks=float(ls_step), accepted=1.0)
                return info
        info.update(loss_after=info["loss_before"], kl=0.0, backtracks=-1.0)
        return info


ANCHORS: dict[str, type] = {"pytorch-maml-rl": PytorchMamlRlUpdate, "learn2learn": Learn2LearnUpdate}


class AnchorTrainer:
    """`Nav2DTrainer`'s loop with a peer's meta-update: the same policy, initial weights, generator
    and sampling (`sample_episodes`) for the same config, so that the first meta-batch is ours."""

    def __init__(self, name: str, config: Nav2DConfig) -> None:
        if name not in ANCHORS:
            raise ValueError(f"unknown anchor {name!r}; choose one of {', '.join(ANCHORS)}")
        if config.inner_steps != 1 or config.outer != "trpo":
            raise ValueError("the anchors are MAML-TRPO with one inner step")
        self.name = name
        self.config = config
        self.policy = config.make_policy()
        self.params: Params = params_of(self.policy)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.update = ANCHORS[name](self.policy, config)
        self.iteration = 0

    def step(self) -> dict[str, Any]:
        started = time.perf_counter()
        episodes = sample_episodes(self.policy, self.params, self.config, self.generator)
        info = self.update(self.params, episodes)
        for name, value in self.params.items():
            if not torch.isfinite(value).all():
                raise FloatingPointError(f"parameter {name!r} is not finite after iteration {self.iteration + 1}")
        self.iteration += 1
        return {
            "iteration": self.iteration,
            "pre_return": episodes.pre.returns().mean().item(),
            "post_return": episodes.post.returns().mean().item(),
            "std": self.params["log_std"].exp().mean().item(),
            **{k: float(v) for k, v in info.items()},
            "seconds": round(time.perf_counter() - started, 3),
        }
