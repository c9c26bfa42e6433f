"""The running cheetah of Finn et al. (2017, section 5.3) as a resumable study: `mamlbook study cheetah`.

HalfCheetah with a goal velocity drawn from `[0, 2]` (`rl.cheetah`, which needs MuJoCo), at the
paper's settings where `reports.published` records them (`finn2017.cheetah.*`: tasks per meta-batch,
trajectories per task and step, horizon) and otherwise at the rl-paper study's (`rl_paper.TRAINING`:
TRPO with KL bound 0.01, a policy with two hidden layers of 100, gamma 0.99, GAE lambda 1). The
methods (`METHODS`), seed 0 (`SEEDS`):

- MAML: one inner step of the size the paper's text gives (`finn2017.nav2d.alpha`), with the
  surrogate meta-gradient of the paper and its code;
- the pretrained baseline: the same TRPO on a mixture of goal velocities, without an inner loop;
- the floor that learns nothing: the random initialization of the seed, not trained.

The budget: the study is planned to take `BUDGET_SECONDS` of wall time on two cores, MAML and the
pretrained baseline trained side by side (`jobs=2`, one thread each), validation and test included.
A MAML iteration samples twice as many episodes as a pretrained one and differentiates through the
inner step, so the two train for different numbers of iterations, planned from the measured seconds
per iteration (`ITERATIONS_MAML`, `ITERATIONS_PRETRAINED`; about as many episodes each): the
pretrained baseline for the paper's meta-iterations (`finn2017.cheetah.iterations`), MAML for fewer.
The result stores the iterations each run reached beside the paper's.

Everything else is the rl-paper study's (`rl_paper`, whose functions this module runs): a snapshot
every 25 iterations, scored by the mean return after one inner step on 40 validation goal velocities
drawn from their own seed; the last and the best snapshot tested after 0..3 inner steps on the 40
fixed test goal velocities (`rl.evaluate.test_goals(env="cheetah-vel")`), 20 trajectories per goal
and step, adapted by the training inner step (the pretrained baseline and the random initialization
by the same step); common random numbers; a time limit that stops a job at its next snapshot, to be
resumed by the next call; `reuse` of an earlier result file's finished jobs.

For the book's figure, each trained run also keeps velocity curves of its last snapshot (`CURVES`):
for three goal velocities, the mean forward velocity at each of the 200 time steps over 10
trajectories, before adaptation and after one and three inner steps. The velocity is the one the
reward is computed from: the root's forward displacement over a step divided by the step's duration.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..reports.published import published
from ..rl.cheetah import BatchedHalfCheetah, require
from ..rl.estimators import adapt
from ..rl.policies import batched
from ..rl.returns import advantages
from ..rl.rollout import rollout
from ..rl.trainer import load_policy
from . import rl_paper
from .base import TEST_SEED
from .records import significant
from .rl_paper_report import PRETRAINED, assemble, settings

PAPER: dict[str, int] = {
    name: int(published(f"finn2017.cheetah.{name}").value)
    for name in ("meta_batch", "trajectories", "horizon", "iterations")
}
ALPHA = published("finn2017.nav2d.alpha").value  # the inner step of all the paper's RL experiments (appendix A.2)

TRAINING: dict[str, Any] = {  # every setting of Nav2DConfig but the method's (iterations among them) and the seed
    **{name: value for name, value in rl_paper.TRAINING.items() if name != "iterations"},
    "env": "cheetah-vel",
    "meta_batch": PAPER["meta_batch"],
    "trajectories": PAPER["trajectories"],
    "horizon": PAPER["horizon"],
}

BUDGET_SECONDS = 7200  # wall seconds for the whole study, on two cores: MAML and the pretrained baseline side by side
# measured at 40 x 20 x 200 on one thread: 27.4 s per iteration (MAML), 9.1 s (pretrained), and 5.1 s per
# rollout of 40 goals x 20 trajectories x 200 steps (what validation and test are made of)
SECONDS_PER_ITERATION = {"MAML": 27.4, PRETRAINED: 9.1}
SECONDS_PER_ROLLOUT = 5.1
ITERATIONS_MAML = 225  # about 6,300 s by `planned_seconds`: the budget less a margin for the measurement's noise
ITERATIONS_PRETRAINED = PAPER["iterations"]  # the paper's; about 4,800 s by `planned_seconds`

METHODS: dict[str, dict[str, Any]] = {
    "MAML": {"estimator": "surrogate", "inner_steps": 1, "inner_lr": ALPHA, "iterations": ITERATIONS_MAML},
    PRETRAINED: {"estimator": "surrogate", "inner_steps": 0, "inner_lr": ALPHA, "iterations": ITERATIONS_PRETRAINED},
}
SEEDS = (0,)
SNAPSHOT_EVERY = rl_paper.SNAPSHOT_EVERY
CURVE_EVERY = rl_paper.CURVE_EVERY
VALIDATION = dict(rl_paper.VALIDATION)
TEST = {**rl_paper.TEST, "trajectories": 20}
CURVES: dict[str, Any] = {
    "goals": (0.5, 1.0, 1.5),
    "steps": (0, 1, 3),
    "trajectories": 10,
    "sampling_seed": TEST_SEED + 9,
}
SMALL: dict[str, Any] = {
    "training": {"meta_batch": 2, "trajectories": 2, "horizon": 20},
    "iterations": 4,
    "snapshot_every": 2,
    "curve_every": 1,
    "validation": {"goals": 3, "trajectories": 2},
    "test": {"goals": 3, "trajectories": 2, "steps": 2},
    "curves": {"trajectories": 2},
}


def planned_seconds(iterations: int, per_iteration: float, snapshot_every: int = SNAPSHOT_EVERY) -> float:
    """One job's wall seconds on one thread by the measurements: its iterations, the validation of each
    snapshot (two rollouts) and the test of its last and best snapshot (four rollouts each)."""
    snapshots = math.ceil(iterations / snapshot_every)
    return iterations * per_iteration + SECONDS_PER_ROLLOUT * (2 * snapshots + 2 * 4)


FLOOR_SECONDS = 6 * SECONDS_PER_ROLLOUT  # the random initialization's validation and test, before the jobs start


class CheetahStudy(rl_paper.Study):
    """The rl-paper study's jobs, snapshots and scoring, for the cheetah's plan; each method trains for its
    own iterations, and the rows are named by the method alone (one inner step size)."""

    NAME = "cheetah"
    GROUPS = (("MAML", PRETRAINED),)

    def __init__(self, small: bool = False, iterations: int | None = None, progress: bool = True) -> None:
        if iterations is not None and iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        self.small, self.progress = small, progress
        self.training = {**TRAINING, **(SMALL["training"] if small else {})}
        fixed = iterations if iterations is not None else SMALL["iterations"] if small else None
        self.methods = {name: {**m, "iterations": fixed or m["iterations"]} for name, m in METHODS.items()}
        self.snapshot_every = SMALL["snapshot_every"] if small else SNAPSHOT_EVERY
        self.curve_every = SMALL["curve_every"] if small else CURVE_EVERY
        self.seeds = SEEDS
        self.validation = {**VALIDATION, **(SMALL["validation"] if small else {})}
        self.test = {**TEST, **(SMALL["test"] if small else {})}
        self.curves = {**CURVES, **(SMALL["curves"] if small else {})}
        self.eval_lrs = sorted({m["inner_lr"] for m in self.methods.values() if m["inner_steps"]})

    @property
    def target(self) -> int:
        """The most iterations any method trains for (what the floor's scores are filed under)."""
        return max(m["iterations"] for m in self.methods.values())

    def baseline(self, name: str, lr: float) -> str:
        return name

    def described(self) -> dict[str, Any]:
        return {
            **settings(self),
            "curves": {**self.curves, "goals": list(self.curves["goals"]), "steps": list(self.curves["steps"])},
            "paper": dict(PAPER),
        }

    def floor(self, seed: int) -> list[dict[str, Any]]:
        """rl-paper's rows of the random initialization, which trains for no iterations and has no curves."""
        return [{**row, "paper_iterations": None, "curves": None} for row in super().floor(seed)]

    def _score(self, job: dict[str, Any], folder: Path, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """rl-paper's rows, with the paper's iterations and the velocity curves of the last snapshot."""
        rows = super()._score(job, folder, history)
        _, policy, _ = load_policy(folder)
        params = torch.load(folder / "snapshots" / f"{rows[0]['iterations']:05d}.pt", weights_only=True)
        for row in rows:
            row["paper_iterations"] = PAPER["iterations"]
            row["curves"] = self.velocity_curves(policy, params, row["inner_lr"])
        return rows

    def velocity_curves(self, policy: nn.Module, params, lr: float) -> dict[str, dict[str, list[float]]]:
        """`curves[goal][steps]`: the mean forward velocity at each time step toward each of the curves'
        goal velocities, after each of their numbers of inner steps of size `lr`."""
        goals = torch.tensor([[goal] for goal in self.curves["goals"]])
        generator = torch.Generator().manual_seed(self.curves["sampling_seed"])
        t = self.training
        velocity = forward_velocities(
            policy, params, goals, self.curves["steps"], self.curves["trajectories"], lr,
            t["gamma"], t["gae_lambda"], generator, t["horizon"],
        )  # fmt: skip
        return {
            f"{goal:g}": {str(steps): significant(velocity[steps][i].tolist()) for steps in self.curves["steps"]}
            for i, goal in enumerate(self.curves["goals"])
        }


class _Velocities(BatchedHalfCheetah):
    """`BatchedHalfCheetah` that keeps each step's forward velocity as its reward has it: the root's
    forward displacement over the step divided by the step's duration."""

    def reset(self):
        self.velocities: list[np.ndarray] = []
        return super().reset()

    def step(self, action: Tensor):
        before = self.x
        out = super().step(action)
        self.velocities.append((self.x - before) / self.dt)
        return out

    def mean_velocity(self) -> Tensor:
        """`[T, steps taken]`: each task's mean over its trajectories, step by step."""
        velocities = np.stack(self.velocities, -1).reshape(*self.shape, -1)
        return torch.from_numpy(velocities.mean(1))


def forward_velocities(
    policy: nn.Module,
    params,
    goals: Tensor,
    steps: tuple[int, ...] | list[int],
    trajectories: int,
    inner_lr: float,
    gamma: float,
    lam: float,
    generator: torch.Generator,
    horizon: int,
) -> dict[int, Tensor]:
    """`{s: [G, horizon]}` for each `s` in `steps`: the mean forward velocity at each time step over
    `trajectories` episodes per goal velocity (`goals: [G, 1]`) after `s` inner steps, each step taken
    on the episodes of the one before, as `rl.evaluate.adaptation_returns` takes them."""
    made: list[_Velocities] = []

    def make_env(*args: Any) -> _Velocities:
        made.append(_Velocities(*args))
        return made[-1]

    current = batched({k: v.detach() for k, v in params.items()}, goals.shape[0])
    out = {}
    for step in range(max(steps) + 1):
        traj = rollout(policy, current, goals, trajectories, generator, horizon, make_env=make_env)
        if step in steps:
            out[step] = made[-1].mean_velocity()
        if step < max(steps):
            adv = advantages(traj.obs, traj.rewards, traj.mask, gamma, lam)
            current = adapt(policy, current, traj, adv, inner_lr, "surrogate", create_graph=False)
    return out


def reading(seeds: int, confidence: float) -> str:
    """How to read the result's tables, comparisons and curves, for a study of `seeds` seeds."""
    if seeds == 1:
        interval = (
            "a bootstrap over the test goals alone, as there is one seed (the method it names: "
            "scipy.stats.bootstrap's BCa where SciPy is installed); it describes these trained policies on the "
            "distribution of goal velocities, not how far training again from another seed would move them"
        )
    else:
        interval = "a hierarchical bootstrap over seeds, then goals"
    return (
        "tables: the mean return over the test goal velocities after 0..steps inner steps, of each run's last "
        "snapshot and of its best (the highest mean return after one inner step on the validation goals), "
        f"averaged over seeds; comparisons: a minus b, paired over the test goals. Each {100 * confidence:g}% "
        f"interval is {interval}; one that excludes zero is decided. Curves: the mean forward velocity at each "
        "time step toward a fixed goal velocity, of each trained method's last snapshot, before adaptation "
        "and after inner steps of the training step size"
    )


def budget(study: CheetahStudy) -> dict[str, Any]:
    """The budget, the measurements it was planned from, and the wall seconds the plan comes to on two cores
    (the floor, then the two jobs side by side)."""
    jobs = [
        planned_seconds(method["iterations"], SECONDS_PER_ITERATION[name], study.snapshot_every)
        for name, method in study.methods.items()
    ]
    return {
        "seconds": BUDGET_SECONDS,
        "seconds_per_iteration": dict(SECONDS_PER_ITERATION),
        "seconds_per_rollout": SECONDS_PER_ROLLOUT,
        "planned_seconds": round(FLOOR_SECONDS + max(jobs), 1),
    }


def cheetah(
    small: bool = False,
    iterations: int | None = None,
    progress: bool = True,
    trained_only: bool = False,
    time_limit: float | None = None,
    jobs: int | None = None,
    reuse: str | Path | None = None,
    carry: str | Path | None = None,
) -> dict[str, Any]:
    """The cheetah study: the random initialization scored, then MAML and the pretrained baseline trained
    (or read from the cache), `jobs` at a time (default: 2, as the budget is planned; 1 for `small`).

    `iterations` replaces both methods' iterations. `trained_only`, `time_limit`, `reuse` and `carry` are
    `rl_paper.rl_paper`'s. Without MuJoCo, the ImportError of `rl.cheetah.require`, before any work.
    """
    require()
    jobs = (1 if small else 2) if jobs is None else jobs
    rl_paper.check_options(jobs, time_limit)
    study = CheetahStudy(small, iterations, progress)
    runs, missing, total = rl_paper.execute(study, iterations, trained_only, time_limit, jobs, reuse, carry)
    described = study.described()
    text = reading(len(study.seeds), described["bootstrap"]["confidence"])
    result = assemble(described, runs, missing, total, small, study.NAME, study.baseline, text)
    return {"budget": budget(study), **result}
