"""Sampling a meta-batch of trajectories from `BatchedNav2D` with a policy given as parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .envs import HORIZON, BatchedNav2D
from .policies import sample


@dataclass(frozen=True)
class Trajectories:
    """`N` episodes of each of `T` tasks, padded to the horizon `H`.

    obs `[T, N, H, 2]` (the state before each action), actions `[T, N, H, 2]` (as sampled, not
    clipped), rewards `[T, N, H]`, mask `[T, N, H]` (1 where the step was taken), goals `[T, 2]`.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    goals: Tensor

    def returns(self) -> Tensor:
        """Undiscounted return of each episode: `[T, N]`."""
        return self.rewards.sum(-1)

    def lengths(self) -> Tensor:
        return self.mask.sum(-1)


def rollout(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    goals: Tensor,
    trajectories: int,
    generator: torch.Generator | None = None,
    horizon: int = HORIZON,
) -> Trajectories:
    """Run `trajectories` episodes per goal (`goals: [T, 2]`) with `params` (shared, or batched `[T, ...]`)."""
    env = BatchedNav2D(goals, trajectories, horizon)
    obs, _ = env.reset()
    t, n = goals.shape[0], trajectories
    all_obs = torch.zeros(t, n, horizon, 2, dtype=goals.dtype)
    all_actions = torch.zeros(t, n, horizon, 2, dtype=goals.dtype)
    rewards = torch.zeros(t, n, horizon, dtype=goals.dtype)
    mask = torch.zeros(t, n, horizon, dtype=goals.dtype)
    params = {k: v.detach() for k, v in params.items()}
    for step in range(horizon):
        action = sample(policy, params, obs, generator)
        all_obs[:, :, step] = obs
        all_actions[:, :, step] = action
        obs, reward, _, _, info = env.step(action)
        rewards[:, :, step] = reward
        mask[:, :, step] = info["active"].to(goals.dtype)
        if bool(env.done.all()):
            break
    return Trajectories(all_obs, all_actions, rewards, mask, goals)
