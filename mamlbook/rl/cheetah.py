"""The running cheetah (Finn et al. 2017, sec. 5.3): HalfCheetah with a goal velocity it must learn.

The body and its dynamics are Gymnasium's `HalfCheetah-v5` (MuJoCo): a planar cheetah, 6 actuated
joints, actions clipped to `[-1, 1]^6`, each action held for 5 physics steps of 0.01 s (dt = 0.05 s),
observations the 8 positions other than the forward one and the 9 velocities (17). Each task draws a
goal velocity uniformly from `[0, 2]`, which the policy does not observe; the reward per step is

    r = -|v - goal| - 0.05 ||clip(a, -1, 1)||^2

with `v` the forward velocity of the root over the step (Gymnasium's `info["x_velocity"]`). Episodes
last 200 steps and never end sooner.

The reward reimplements `HalfCheetahEnvRand` of the authors' rllab fork (cbfinn/maml_rl,
`rllab/envs/mujoco/half_cheetah_env_rand.py`): goals from `uniform(0.0, 2.0)`, `run_cost = |v - goal|`
and `ctrl_cost = 1e-1 * 0.5 * sum(square(clip(action)))`, so the control cost's coefficient is 0.05
(Gymnasium's own HalfCheetah reward takes 0.1). Three details follow Gymnasium, not rllab: rllab's
`v` is the torso's centre-of-mass velocity where this is the root's position difference over the step
(as pytorch-maml-rl's `HalfCheetahVelEnv`); its observation appends the torso's centre of mass (20
numbers where this has 17); its reset noise is normal with scale 0.01 on positions where Gymnasium's
is uniform in +-0.1 (both: normal with scale 0.1 on velocities).

`BatchedHalfCheetah` steps `[T tasks, N trajectories]` cheetahs, one `mujoco.MjData` each, with the
same calls `gymnasium.make("HalfCheetah-v5")` makes, so it gives the same observations and rewards on
the same actions (`tests/test_cheetah.py`); the reset noise comes from a `torch.Generator`, so a run's
randomness stays in one place. (`mujoco.rollout` steps a batch in C and is a little faster, but each
call starts the constraint solver without the last step's warm start, which it does not return; the
contacts amplify that rounding-sized difference until the trajectories part from Gymnasium's within
an episode.) `HalfCheetahVel` is one task with the Gymnasium API. MuJoCo and
Gymnasium are optional: `pip install "mamlbook[mujoco]"`; without them this module imports, and what
needs them raises an ImportError that says so.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

try:  # Gymnasium is optional: without it `HalfCheetahVel` cannot be built (see `require`)
    import gymnasium
except ImportError:  # pragma: no cover - exercised only where Gymnasium is absent
    gymnasium = None

GOAL_LOW, GOAL_HIGH = 0.0, 2.0
HORIZON = 200
CTRL_COST = 0.05  # rllab's 1e-1 * 0.5 (cbfinn/maml_rl, half_cheetah_env_rand.py)
OBS_DIM, ACT_DIM = 17, 6
RESET_NOISE = 0.1  # Gymnasium's HalfCheetah-v5 default
GYM_ID = "HalfCheetah-v5"
EXTRA = 'pip install "mamlbook[mujoco]"'


def require() -> Any:
    """The `mujoco` module, or an ImportError that names the extra to install."""
    try:
        import gymnasium.envs.mujoco  # noqa: F401
        import mujoco
    except ImportError as error:
        raise ImportError(f"the cheetah-vel task needs MuJoCo and Gymnasium ({error}): {EXTRA}") from None
    return mujoco


def sample_velocities(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """`n` goal velocities, uniform in `[0, 2]`: `[n, 1]`."""
    return torch.rand(n, 1, generator=generator, dtype=dtype) * (GOAL_HIGH - GOAL_LOW) + GOAL_LOW


def velocity_reward(x_velocity: np.ndarray, goal: np.ndarray, action: np.ndarray) -> np.ndarray:
    """`-|x_velocity - goal| - 0.05 ||clip(action, -1, 1)||^2`, the action's dimension last (float64)."""
    clipped = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return -np.abs(np.asarray(x_velocity) - np.asarray(goal)) - CTRL_COST * np.sum(np.square(clipped), axis=-1)


@cache
def _body() -> tuple[Any, np.ndarray, np.ndarray, float, int]:
    """HalfCheetah-v5's MuJoCo model as Gymnasium builds it, its initial qpos and qvel, dt and frame skip."""
    require()
    env = gymnasium.make(GYM_ID).unwrapped
    return env.model, env.init_qpos.copy(), env.init_qvel.copy(), float(env.dt), int(env.frame_skip)


class BatchedHalfCheetah:
    """`N` cheetahs for each of `T` goal velocities (`goals: [T, 1]`), stepped together.

    Observations and actions are `[T, N, 17]` and `[T, N, 6]` tensors (in `goals`' dtype; MuJoCo
    computes in float64), rewards and flags `[T, N]`. No episode ends before `max_steps`, when all are
    truncated; `info["active"]` is the step's mask (all ones before then), as `BatchedNav2D`'s.

    `reset()` starts the episodes (the constructor does not) with noise drawn from `generator`,
    positions then velocities, for every task; `among = (start, total)`: `goals` are tasks `start` to
    `start + T` of `total`, the noise of all `total` is drawn and theirs kept (a process's share of a
    meta-batch, `rl.rollout`).
    """

    def __init__(
        self,
        goals: Tensor,
        trajectories: int,
        max_steps: int = HORIZON,
        generator: torch.Generator | None = None,
        among: tuple[int, int] | None = None,
    ) -> None:
        self.mujoco = require()
        self.model, self.init_qpos, self.init_qvel, self.dt, self.frame_skip = _body()
        self.goals = goals
        self.trajectories = trajectories
        self.max_steps = max_steps
        self.generator = generator
        self.among = among
        self.data = [self.mujoco.MjData(self.model) for _ in range(goals.shape[0] * trajectories)]
        self.steps = 0
        self.done = torch.ones(self.shape, dtype=torch.bool)  # until `reset()`

    @property
    def shape(self) -> tuple[int, int]:
        return self.goals.shape[0], self.trajectories

    def _noise(self) -> tuple[np.ndarray, np.ndarray]:
        t, n = self.shape
        start, total = (0, t) if self.among is None else self.among
        dims = dict(generator=self.generator, dtype=torch.float64)
        position = torch.rand(total, n, self.model.nq, **dims)[start : start + t]
        velocity = torch.randn(total, n, self.model.nv, **dims)[start : start + t]
        position = (position * (2 * RESET_NOISE) - RESET_NOISE).reshape(t * n, -1).numpy()
        return position, (velocity * RESET_NOISE).reshape(t * n, -1).numpy()

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Start every episode at `qpos: [T*N, 9]`, `qvel: [T*N, 9]`, as Gymnasium's reset does."""
        mj = self.mujoco
        for data, p, v in zip(self.data, qpos, qvel, strict=True):
            mj.mj_resetData(self.model, data)
            data.qpos[:] = p
            data.qvel[:] = v
            mj.mj_forward(self.model, data)
        self.steps = 0
        self.done = torch.zeros(self.shape, dtype=torch.bool)

    def observe(self) -> Tensor:
        """The observations `[T, N, 17]`: positions without the forward one, then velocities."""
        qpos = np.stack([d.qpos for d in self.data])
        qvel = np.stack([d.qvel for d in self.data])
        self.x = qpos[:, 0]  # the forward positions, for the next step's velocity
        obs = np.concatenate([qpos[:, 1:], qvel], -1).reshape(*self.shape, -1)
        return torch.from_numpy(obs).to(self.goals.dtype)

    def reset(self) -> tuple[Tensor, dict[str, Any]]:
        position, velocity = self._noise()
        self.set_state(self.init_qpos + position, self.init_qvel + velocity)
        return self.observe(), {"goal": self.goals}

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        mj, model, skip = self.mujoco, self.model, self.frame_skip
        active = ~self.done
        actions = action.detach().to(torch.float64).reshape(len(self.data), -1).numpy()
        before = self.x
        for data, a in zip(self.data, actions, strict=True):
            data.ctrl[:] = a  # MuJoCo clips it to the actuators' range [-1, 1]
            mj.mj_step(model, data, nstep=skip)
        obs = self.observe()
        goal = self.goals.detach().to(torch.float64).repeat_interleave(self.trajectories, 0)[:, 0].numpy()
        reward = velocity_reward((self.x - before) / self.dt, goal, actions).reshape(self.shape)
        reward = torch.from_numpy(reward).to(self.goals.dtype) * active
        self.steps += 1
        truncated = active & (self.steps >= self.max_steps)
        self.done = self.done | truncated
        return obs, reward, torch.zeros_like(truncated), truncated, {"active": active}


_Base: type = gymnasium.Wrapper if gymnasium is not None else object


class HalfCheetahVel(_Base):
    """One cheetah-vel task with the Gymnasium API: `HalfCheetah-v5` with the goal-velocity reward.

    `reset(seed=..., options={"goal": v})`; without a goal (here or in the constructor) `reset` draws
    one from the environment's random generator. `info` keeps Gymnasium's entries and adds `goal`.
    Episodes are truncated after `max_steps`.
    """

    def __init__(self, goal: float | None = None, max_steps: int = HORIZON) -> None:
        require()
        super().__init__(gymnasium.make(GYM_ID, max_episode_steps=max_steps))
        self.fixed_goal = goal
        self.goal = GOAL_LOW if goal is None else float(goal)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        goal = options.pop("goal", None)
        obs, info = self.env.reset(seed=seed, options=options or None)
        if goal is None:
            goal = self.fixed_goal
        if goal is None:
            goal = self.np_random.uniform(GOAL_LOW, GOAL_HIGH)
        self.goal = float(goal)
        return obs, {**info, "goal": self.goal}

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        reward = float(velocity_reward(info["x_velocity"], self.goal, action))
        return obs, reward, terminated, truncated, {**info, "goal": self.goal}
