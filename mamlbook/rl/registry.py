"""The environments MAML-RL trains on, by name: what the trainer and the meta-test need of each.

`ENVS["nav2d"]`: 2D navigation (`rl.envs`); `ENVS["cheetah-vel"]`: the running cheetah with a goal
velocity (`rl.cheetah`, which needs MuJoCo). `Nav2DConfig.env` names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import cheetah
from . import envs as nav2d


@dataclass(frozen=True)
class RLEnv:
    """One task family: its goals, its batched environment, the policy's sizes and the horizon.

    `sample_goals(n, generator, dtype)` -> `[n, G]`;
    `batched(goals, trajectories, horizon, generator, among)` -> an environment with the interface of
    `BatchedNav2D` (`rl.rollout`; the generator and `among` serve environments that draw random
    starts); `model`: the checkpoints' model name; `oracle(goals)` -> `[n]` returns of a controller that
    knows the goal, where there is one; `require()` raises an ImportError naming what to install, where
    the environment needs more than the core package."""

    name: str
    obs_dim: int
    act_dim: int
    horizon: int
    sample_goals: Callable[..., Tensor] = field(repr=False)
    batched: Callable[..., Any] = field(repr=False)
    model: str
    oracle: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)
    require: Callable[[], Any] | None = field(default=None, repr=False)

    def check(self) -> None:
        """Raise the ImportError of what the environment needs and is missing (nothing otherwise)."""
        if self.require is not None:
            self.require()


def _nav2d(
    goals: Tensor,
    trajectories: int,
    horizon: int,
    generator: torch.Generator | None = None,
    among: tuple[int, int] | None = None,
) -> nav2d.BatchedNav2D:
    return nav2d.BatchedNav2D(goals, trajectories, horizon)  # every episode starts at the origin


ENVS: dict[str, RLEnv] = {
    "nav2d": RLEnv(
        "nav2d", 2, 2, nav2d.HORIZON, nav2d.sample_goals, _nav2d, "nav2d-gaussian-mlp", nav2d.straight_line_returns
    ),
    "cheetah-vel": RLEnv(
        "cheetah-vel",
        cheetah.OBS_DIM,
        cheetah.ACT_DIM,
        cheetah.HORIZON,
        cheetah.sample_velocities,
        cheetah.BatchedHalfCheetah,
        "cheetah-vel-gaussian-mlp",
        require=cheetah.require,
    ),
}
"""The environments MAML-RL trains on, by the name `Nav2DConfig.env`, `mamlbook train` and `mamlbook eval`
take."""


def get_env(name: str) -> RLEnv:
    if name not in ENVS:
        raise ValueError(f"unknown environment {name!r}; choose one of {', '.join(ENVS)}")
    return ENVS[name]
