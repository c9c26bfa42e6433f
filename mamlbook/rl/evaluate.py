"""Meta-testing on 2D navigation or the running cheetah (`env`, a name in `registry.ENVS`): returns
after 0..K inner steps on fixed test goals, with 95% intervals, for MAML and the paper's baselines
(random init and pretrained, adapted by the same steps; for 2D navigation, an oracle).

The test goals (positions, or the cheetah's goal velocities) are drawn once from `TEST_SEED` (40, as
Finn et al.); each step samples 40
trajectories per goal with the current policy, reports their mean undiscounted return, and takes
one policy-gradient step of size `inner_lr` on them. Every method sees the same goals and the same
random-number stream (common random numbers), so differences between methods are not sampling luck
in the goals. The interval is over goals: mean +- 1.96 * std / sqrt(goals).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .estimators import adapt
from .policies import batched
from .registry import get_env
from .returns import advantages
from .rollout import rollout
from .trainer import Nav2DConfig, load_policy

TEST_SEED = 30_000  # the same fixed seed as the book's other meta-test sets (studies.base.TEST_SEED)
TEST_GOALS = 40
TEST_TRAJECTORIES = 40
ORACLE = "oracle (straight-line controller)"


def test_goals(n: int = TEST_GOALS, seed: int = TEST_SEED, env: str = "nav2d") -> Tensor:
    """The fixed meta-test goals of `env`: `[n, 2]` positions (2D navigation), `[n, 1]` velocities
    ("cheetah-vel")."""
    return get_env(env).sample_goals(n, torch.Generator().manual_seed(seed))


def adaptation_returns(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    goals: Tensor,
    steps: int = 3,
    trajectories: int = TEST_TRAJECTORIES,
    inner_lr: float = 0.1,
    gamma: float = 0.99,
    lam: float = 1.0,
    generator: torch.Generator | None = None,
    horizon: int | None = None,
    env: str = "nav2d",
) -> Tensor:
    """Mean return per goal after 0 to `steps` policy-gradient steps: `[steps + 1, G]` for `goals: [G, ...]`
    of `env` (`test_goals`), over episodes of `horizon` steps (default: the environment's)."""
    spec = get_env(env)
    horizon = spec.horizon if horizon is None else horizon
    current = batched({k: v.detach() for k, v in params.items()}, goals.shape[0])
    rows = []
    for step in range(steps + 1):
        traj = rollout(policy, current, goals, trajectories, generator, horizon, make_env=spec.batched)
        rows.append(traj.returns().mean(1))
        if step < steps:
            adv = advantages(traj.obs, traj.rewards, traj.mask, gamma, lam)
            current = adapt(policy, current, traj, adv, inner_lr, "surrogate", create_graph=False)
    return torch.stack(rows)


def summarize(returns: Tensor) -> dict[str, list[float]]:
    """`returns: [K + 1, G]` -> mean and 95% half-width over goals, per step."""
    g = returns.shape[1]
    mean = returns.mean(1)
    half = 1.96 * returns.std(1) / math.sqrt(g) if g > 1 else torch.full_like(mean, float("nan"))
    return {"mean": mean.tolist(), "ci95": half.tolist()}


def evaluate_methods(
    methods: Mapping[str, tuple[nn.Module, Mapping[str, Tensor]]],
    steps: int = 3,
    goals: Tensor | None = None,
    trajectories: int = TEST_TRAJECTORIES,
    inner_lr: float = 0.1,
    seed: int = TEST_SEED + 1,
    env: str = "nav2d",
) -> dict[str, Any]:
    """Returns after 0 to `steps` steps for each method (`name -> (policy, params)`) on `env`, plus the
    oracle where the environment has one (2D navigation)."""
    goals = test_goals(env=env) if goals is None else goals
    table: dict[str, Any] = {}
    for name, (policy, params) in methods.items():
        generator = torch.Generator().manual_seed(seed)
        returns = adaptation_returns(policy, params, goals, steps, trajectories, inner_lr, generator=generator, env=env)
        table[name] = {**summarize(returns), "per_goal": returns.tolist()}
    oracle_returns = get_env(env).oracle
    if oracle_returns is not None:
        oracle = oracle_returns(goals)
        stats = summarize(oracle[None].expand(steps + 1, -1))
        table[ORACLE] = {**stats, "per_goal": [oracle.tolist()]}
    return {
        "steps": list(range(steps + 1)),
        "goals": goals.tolist(),
        "trajectories": trajectories,
        "inner_lr": inner_lr,
        "methods": table,
    }


def random_init(config: Nav2DConfig) -> tuple[nn.Module, dict[str, Tensor]]:
    """The untrained policy of `config`'s seed (the "random initialization" baseline)."""
    policy = config.make_policy()
    return policy, {k: v.detach().clone() for k, v in policy.named_parameters()}


def evaluate_run(
    run: str | os.PathLike, steps: int = 3, pretrained: str | os.PathLike | None = None, **options: Any
) -> dict[str, Any]:
    """A MAML run folder against random init, the pretrained baseline (`pretrained`, or
    `RUN/pretrained` where it exists) and the oracle (2D navigation), on the run's environment."""
    config, policy, params = load_policy(run)
    run = Path(run)
    folder = run if run.is_dir() else run.parent
    methods: dict[str, tuple[nn.Module, Mapping[str, Tensor]]] = {f"MAML ({config.estimator})": (policy, params)}
    pre = Path(pretrained) if pretrained is not None else folder / "pretrained"
    if (pre / "checkpoint.pt").exists() or pre.is_file():
        _, pre_policy, pre_params = load_policy(pre)
        methods["pretrained"] = (pre_policy, pre_params)
    methods["random init"] = random_init(config)
    options.setdefault("inner_lr", config.inner_lr)
    options.setdefault("env", config.env)
    return evaluate_methods(methods, steps, **options)


def format_table(report: Mapping[str, Any]) -> str:
    """The returns table: one row per method, one column per number of inner steps."""
    steps = report["steps"]
    width = max(len(n) for n in report["methods"]) + 2
    head = "method".ljust(width) + "".join(f"{f'{s} steps':>16}" for s in steps)
    lines = [head, "-" * len(head)]
    for name, row in report["methods"].items():
        cells = "".join(f"{f'{m:.1f} +- {c:.1f}':>16}" for m, c in zip(row["mean"], row["ci95"], strict=True))
        lines.append(name.ljust(width) + cells)
    g = len(report["goals"])
    lines.append(
        f"mean return over {g} test goals, {report['trajectories']} trajectories per goal and step; 95% interval"
    )
    return "\n".join(lines)
