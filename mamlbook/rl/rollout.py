"""Sampling a meta-batch of trajectories from a batched environment (`BatchedNav2D` unless told) with a
policy given as parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .envs import HORIZON, BatchedNav2D
from .policies import sample
from .share import TaskShare


@dataclass(frozen=True)
class Trajectories:
    """`N` episodes of each of `T` tasks, padded to the horizon `H`.

    obs `[T, N, H, D]` (the state before each action), actions `[T, N, H, A]` (as sampled, not
    clipped), rewards `[T, N, H]`, mask `[T, N, H]` (1 where the step was taken), goals `[T, G]`
    (2D navigation: D = A = G = 2).
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
    share: TaskShare | None = None,
    make_env: Callable[..., Any] | None = None,
) -> Trajectories:
    """Run `trajectories` episodes per goal (`goals: [T, G]`) with `params` (shared, or batched `[T, ...]`).

    `make_env(goals, trajectories, horizon, generator, among)`: the batched environment
    (`registry.RLEnv.batched`; default `BatchedNav2D`), whose `reset()` may draw the episodes' starts
    from `generator` before the first action (for the tasks `among`, as `policies.sample` draws).

    `share` (a process's part of a meta-batch split over processes, `rl.parallel.TaskShare`): `goals`
    are the whole meta-batch's, and only the share's episodes are run (batched `params` are the share's).
    Each step draws the noise of every task and keeps the share's, and the generator is left where one
    process running all tasks leaves it: the loop stops when all of the meta-batch's episodes have ended,
    which the processes agree on (`share.max`, one all-reduce); a share that ended sooner draws the noise
    of the steps it skipped. Its steps after its own episodes ended hold zeros (masked out, as all such
    steps are)."""
    total = goals.shape[0]
    if share is not None:
        goals = goals[share.start : share.stop]
    among = None if share is None else (share.start, total)
    if make_env is None:
        env = BatchedNav2D(goals, trajectories, horizon)
    else:
        env = make_env(goals, trajectories, horizon, generator, among)
    obs, _ = env.reset()
    t, n = goals.shape[0], trajectories
    all_obs = torch.zeros(t, n, horizon, obs.shape[-1], dtype=goals.dtype)
    all_actions = torch.zeros(t, n, horizon, policy.log_std.shape[-1], dtype=goals.dtype)
    rewards = torch.zeros(t, n, horizon, dtype=goals.dtype)
    mask = torch.zeros(t, n, horizon, dtype=goals.dtype)
    params = {k: v.detach() for k, v in params.items()}
    taken = 0
    for step in range(horizon):
        action = sample(policy, params, obs, generator, among)
        taken = step + 1
        all_obs[:, :, step] = obs
        all_actions[:, :, step] = action
        obs, reward, _, _, info = env.step(action)
        rewards[:, :, step] = reward
        mask[:, :, step] = info["active"].to(goals.dtype)
        if bool(env.done.all()):
            break
    if share is not None:  # the noise of the steps other shares still took
        for _ in range(share.max(taken) - taken):
            torch.randn((total, n, all_actions.shape[-1]), generator=generator, dtype=action.dtype)
    return Trajectories(all_obs, all_actions, rewards, mask, goals)
