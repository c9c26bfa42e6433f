"""2D navigation (Finn et al. 2017, sec. 5.3; cbfinn/maml_rl's point environment), with the Gymnasium API.

A point starts at the origin and must reach a goal drawn uniformly from `[-0.5, 0.5]^2`, which it
does not observe. The observation is its position; the action is a velocity: the policy acts in
`[-1, 1]^2` (clipped there), scaled by 0.1, so a step moves at most 0.1 per coordinate. The reward
is the negative Euclidean distance to the goal after the move (not squared); an episode ends when
the point is within 0.01 of the goal in both coordinates (terminated) or after 100 steps (truncated).

`Nav2D` is one environment (a `gymnasium.Env` when Gymnasium is installed, the same API without
the base class when not); `BatchedNav2D` moves `[T tasks, N trajectories]` points at once as tensors,
so a whole meta-batch rolls out in one loop over time. Both share `nav_step`, so they agree exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

try:  # Gymnasium is optional: the environment keeps its API without it
    import gymnasium
    from gymnasium import spaces
except ImportError:  # pragma: no cover - exercised only where Gymnasium is absent
    gymnasium = None
    spaces = None

GOAL_LOW, GOAL_HIGH = -0.5, 0.5
MAX_SPEED = 0.1  # velocity per coordinate at action 1
HORIZON = 100
SUCCESS = 0.01  # per-coordinate distance at which an episode ends


def sample_goals(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """`n` goals, uniform in `[-0.5, 0.5]^2`: `[n, 2]`."""
    return torch.rand(n, 2, generator=generator, dtype=dtype) * (GOAL_HIGH - GOAL_LOW) + GOAL_LOW


def nav_step(state: Tensor, goal: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One move of points `state: [..., 2]` towards `goal: [..., 2]` (broadcast) by `action: [..., 2]`.

    Returns the new state `[..., 2]`, the reward `[...]` (minus the distance to the goal after the
    move) and whether the goal is reached `[...]` (within `SUCCESS` in each coordinate).
    """
    new = state + action.clamp(-1.0, 1.0) * MAX_SPEED
    offset = new - goal
    reward = -torch.linalg.vector_norm(offset, dim=-1)
    reached = (offset.abs() < SUCCESS).all(-1)
    return new, reward, reached


_Base: type = gymnasium.Env if gymnasium is not None else object


class Nav2D(_Base):
    """One 2D navigation task: `reset(seed=..., options={"goal": (x, y)})`, `step(action)`.

    Without a goal in `options` (or the constructor), `reset` draws one from the environment's own
    random generator, which `reset(seed=...)` fixes. Observations are float32 positions `[2]`.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, goal: tuple[float, float] | None = None, max_steps: int = HORIZON) -> None:
        self.fixed_goal = None if goal is None else np.asarray(goal, dtype=np.float32)
        self.max_steps = max_steps
        if spaces is not None:
            self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._rng: np.random.Generator | None = None
        self._state = torch.zeros(2)
        self._goal = torch.zeros(2)
        self._steps = 0

    @property
    def goal(self) -> np.ndarray:
        return self._goal.numpy().copy()

    def _generator(self, seed: int | None) -> np.random.Generator:
        if gymnasium is not None:
            super().reset(seed=seed)
            return self.np_random
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        return self._rng

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        rng = self._generator(seed)
        goal = (options or {}).get("goal")
        if goal is None:
            goal = self.fixed_goal
        if goal is None:
            goal = rng.uniform(GOAL_LOW, GOAL_HIGH, size=2)
        self._goal = torch.as_tensor(np.asarray(goal, dtype=np.float32))
        self._state = torch.zeros(2)
        self._steps = 0
        return self._state.numpy().copy(), {"goal": self.goal}

    def step(self, action):
        action = torch.as_tensor(np.asarray(action, dtype=np.float32))
        self._state, reward, reached = nav_step(self._state, self._goal, action)
        self._steps += 1
        terminated = bool(reached)
        truncated = not terminated and self._steps >= self.max_steps
        return self._state.numpy().copy(), float(reward), terminated, truncated, {"goal": self.goal}


class BatchedNav2D:
    """`N` copies of each of `T` tasks, stepped together as tensors.

    `goals: [T, 2]`; states, observations and actions are `[T, N, 2]`, rewards and flags `[T, N]`.
    An episode that has ended stays where it ended and earns 0; `info["active"]` says which
    episodes were still running when the step was taken (the step's mask). No automatic reset:
    one `reset()` per batch of episodes, as the meta-learner samples them.
    """

    def __init__(self, goals: Tensor, trajectories: int, max_steps: int = HORIZON) -> None:
        self.goals = goals
        self.trajectories = trajectories
        self.max_steps = max_steps
        self.reset()

    def reset(self) -> tuple[Tensor, dict[str, Any]]:
        t = self.goals.shape[0]
        self.state = torch.zeros(t, self.trajectories, 2, dtype=self.goals.dtype)
        self.done = torch.zeros(t, self.trajectories, dtype=torch.bool)
        self.steps = 0
        return self.state.clone(), {"goal": self.goals}

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        active = ~self.done
        new, reward, reached = nav_step(self.state, self.goals[:, None, :], action)
        self.state = torch.where(active[..., None], new, self.state)
        reward = torch.where(active, reward, torch.zeros_like(reward))
        terminated = active & reached
        self.steps += 1
        truncated = active & ~reached & (self.steps >= self.max_steps)
        self.done = self.done | terminated | truncated
        return self.state.clone(), reward, terminated, truncated, {"active": active}


def straight_line_returns(goals: Tensor, max_steps: int = HORIZON) -> Tensor:
    """The return of the analytic oracle, which knows the goal and heads straight for it at full speed
    (per coordinate, action = clip((goal - state) / 0.1, -1, 1)): `[G]` for `goals: [G, 2]`."""
    env = BatchedNav2D(goals, 1, max_steps)
    total = torch.zeros(goals.shape[0], 1, dtype=goals.dtype)
    for _ in range(max_steps):
        action = ((goals[:, None, :] - env.state) / MAX_SPEED).clamp(-1, 1)
        _, reward, *_ = env.step(action)
        total += reward
        if bool(env.done.all()):
            break
    return total[:, 0]
