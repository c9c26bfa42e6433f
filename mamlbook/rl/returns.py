"""Returns, advantages and the linear feature baseline of rllab/MAML-RL, on masked `[..., H]` tensors.

Trajectories are stored padded to the horizon `H`: `mask[..., t]` is 1 where step t was taken.
Rewards after an episode's end are 0 and every quantity there is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

TIME_SCALE = 100.0  # t = step / 100 in the baseline's features, as rllab's LinearFeatureBaseline


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go `G_t = sum_k gamma^k r_{t+k}` within each episode: `[..., H]`."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalized advantage estimates (Schulman et al. 2016): `[..., H]`.

    `delta_t = r_t + gamma V_{t+1} - V_t` (V after the episode's end is 0, ended or cut off, as in
    rllab), `A_t = delta_t + gamma lam A_{t+1}`. With `lam = 1` this is `G_t - V_t`.
    """
    horizon = rewards.shape[-1]
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(horizon - 1, -1, -1):
        next_value = values[..., t + 1] * mask[..., t + 1] if t + 1 < horizon else torch.zeros_like(running)
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = (delta + gamma * lam * running) * mask[..., t]
        out[..., t] = running
    return out


def baseline_features(obs: Tensor) -> Tensor:
    """`[s, s^2, t, t^2, t^3, 1]` with t = step / 100 counted within each episode: `[..., H, 2*D + 4]`
    for `obs: [..., H, D]` (observations clipped to [-10, 10], as rllab)."""
    s = obs.clamp(-10, 10)
    t = torch.arange(obs.shape[-2], dtype=obs.dtype) / TIME_SCALE
    t = t.expand(*obs.shape[:-1])[..., None]
    return torch.cat([s, s * s, t, t**2, t**3, torch.ones_like(t)], dim=-1)


def fit_linear_baseline(obs: Tensor, targets: Tensor, mask: Tensor, ridge: float = 1e-5) -> Tensor:
    """Least squares of `targets` on the features, one fit per task, over the steps taken.

    `obs: [T, N, H, D]`, `targets`, `mask: [T, N, H]` -> fitted values `[T, N, H]`. Solves
    `(X^T X + ridge I) w = X^T y` per task (rllab's regularization, raised tenfold while not finite).
    """
    x = baseline_features(obs) * mask[..., None]
    t = x.shape[0]
    x = x.reshape(t, -1, x.shape[-1])
    y = (targets * mask).reshape(t, -1, 1)
    gram, rhs = x.transpose(1, 2) @ x, x.transpose(1, 2) @ y
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    for attempt in range(5):
        w = torch.linalg.solve(gram + ridge * 10**attempt * eye, rhs)
        if torch.isfinite(w).all():
            break
    return (baseline_features(obs) @ w[:, None]).squeeze(-1) * mask


def standardize(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero mean and unit standard deviation over each task's steps taken: `[T, ...]`."""
    dims = tuple(range(1, values.dim()))
    count = mask.sum(dims, keepdim=True).clamp_min(1)
    mean = (values * mask).sum(dims, keepdim=True) / count
    var = ((values - mean).pow(2) * mask).sum(dims, keepdim=True) / (count - 1).clamp_min(1)
    return (values - mean) / (var.sqrt() + eps) * mask


def advantages(
    obs: Tensor, rewards: Tensor, mask: Tensor, gamma: float = 0.99, lam: float = 1.0, normalize: bool = True
) -> Tensor:
    """The advantages MAML-RL uses: GAE on a per-task linear baseline fitted to the returns,
    standardized per task: `[T, N, H]`."""
    returns = discounted_returns(rewards, mask, gamma)
    values = fit_linear_baseline(obs, returns, mask)
    adv = gae(rewards, values, mask, gamma, lam)
    return standardize(adv, mask) if normalize else adv
