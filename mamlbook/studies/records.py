"""The typed result of every study: what `mamlbook study NAME` writes and what the chapters read.

One dataclass per study, with a format version. `run_study` returns one, `save_result` writes it,
`load_result` reads it back, and a missing, renamed or unknown field is a `RecordError` naming the
file and the field, so a chapter never looks a number up by guessing a key.

Per-task scores (`per_task`) are the query scores of every test task, in the order of the study's
fixed test tasks: the same tasks for every method and seed, which is what a paired comparison
(`mamlbook.reports.paired_difference`) needs. Files written before the studies kept them have none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..records import Machine, Record

__all__ = [
    "BanditEstimate",
    "BetterOmniglotResult",
    "BetterResult",
    "BetterRun",
    "CheetahResult",
    "CheetahRun",
    "MedicalCell",
    "PairedInterval",
    "MedicalResult",
    "MedicalRun",
    "MethodSummary",
    "KeptWeights",
    "OmniglotRun",
    "OmniglotPrototypesResult",
    "PrecisionResult",
    "PrototypesMethod",
    "PrototypesMissing",
    "PrototypesRun",
    "PooledOmniglot",
    "RLCurve",
    "RLEvaluation",
    "RLPaperCell",
    "RLPaperComparison",
    "RLPaperResult",
    "RLPaperRun",
    "RLResult",
    "SeedMean",
    "RESULT_TYPES",
    "StudyResult",
    "SweepGrid",
    "SweepResult",
    "significant",
]


@dataclass(frozen=True, kw_only=True)
class StudyResult(Record):
    """What every study's result states about how it was produced."""

    study: str
    small: bool
    command: str
    mamlbook_version: str
    machine: Machine
    created: str
    seconds: float


# ---------------------------------------------------------------------------------------------
# sweep: inner and outer hyperparameter grids on the sinusoid


@dataclass(frozen=True)
class SweepGrid:
    """One grid: rows are `y_values`, columns `x_values`; a diverged cell's loss is None."""

    x: str
    x_values: list[float]
    y: str
    y_values: list[int]
    loss: list[list[float | None]]
    ci95: list[list[float | None]]
    seconds: list[list[float]]

    def loss_or_inf(self) -> list[list[float]]:
        """The losses with diverged cells as infinity, for argmin and plots."""
        return [[math.inf if v is None else v for v in row] for row in self.loss]


@dataclass(frozen=True)
class SweepSettings:
    task: str
    k_shot: int
    iterations: int
    test_tasks: int
    seed: int
    fixed: dict[str, dict[str, float]]


@dataclass(frozen=True, kw_only=True)
class SweepResult(StudyResult):
    settings: SweepSettings
    grids: dict[str, SweepGrid]


# ---------------------------------------------------------------------------------------------
# better: MAML and its successors on the sinusoid


@dataclass(frozen=True)
class BetterSettings:
    task: str
    k_shot: int
    meta_batch: int
    inner_steps: int
    inner_lr: float
    iterations: int
    eval_every: int
    eval_tasks: int
    seeds: list[int]
    sweep_seeds: list[int]
    inner_lrs: list[float]
    inner_steps_grid: list[int]
    test_tasks: int
    test_seed: int
    not_applicable: list[str]


@dataclass(frozen=True)
class BetterRun:
    """One trained model: its test loss (None when it diverged) and validation curve."""

    group: str
    label: str
    seed: int
    algorithm: str
    inner_lr: float
    inner_steps: int
    key: str
    test_loss: float | None
    test_ci95: float | None
    test_loss_pre: float | None
    val_curve: list[list[float | None]]  # [iteration, validation MSE]; None where training had diverged
    rates: dict[str, list[float]]
    seconds: float
    per_task: list[float] | None = None


@dataclass(frozen=True, kw_only=True)
class BetterResult(StudyResult):
    settings: BetterSettings
    trained: int
    runs: list[BetterRun]


# ---------------------------------------------------------------------------------------------
# better-omniglot: MAML++ and its ablations on Omniglot


@dataclass(frozen=True)
class OmniglotRun:
    group: str
    label: str
    seed: int
    algorithm: str
    algorithm_options: dict[str, Any]
    inner_steps: int
    device: str
    key: str
    test_steps: int
    accuracy: float
    accuracy_ci95: float
    accuracy_10: float
    accuracy_10_ci95: float
    accuracy_by_step: list[float]
    val_curve: list[list[float]]
    train_seconds: float
    seconds_this_session: float
    trained_on: str | None = None
    piece: str | None = None
    per_task: list[float] | None = None


@dataclass(frozen=True)
class MissingRun:
    """A planned run not trained yet; `key` names its cache folder (pooled results drop it)."""

    group: str
    label: str
    seed: int
    key: str | None = None
    piece: str | None = None
    error: str | None = None  # the run was started and failed: the error, so a rerun knows why


@dataclass(frozen=True)
class MethodSummary:
    """A method over its seeds: the mean, each seed's mean, and the two kinds of 95% half-width."""

    seeds: list[int]
    inner_steps: int
    accuracy: float
    accuracy_by_seed: list[float]
    accuracy_seed_ci95: float | None
    accuracy_task_ci95: float
    accuracy_10: float
    accuracy_10_by_seed: list[float]
    accuracy_10_seed_ci95: float | None
    accuracy_10_task_ci95: float
    train_seconds: float | None
    runs: int


@dataclass(frozen=True)
class BetterOmniglotSettings:
    preset: str
    device: str
    full: bool
    jobs: int
    iterations: int
    meta_batch: int
    test_tasks: int
    test_steps: int
    seeds: list[int]
    seeded_methods: list[str]
    ablation: dict[str, dict[str, Any]]
    data: str
    confirm: bool = False


@dataclass(frozen=True, kw_only=True)
class BetterOmniglotResult(StudyResult):
    settings: BetterOmniglotSettings
    runs: list[OmniglotRun]
    missing: list[MissingRun]
    methods: dict[str, MethodSummary]
    ablation: dict[str, MethodSummary]
    confirm: dict[str, MethodSummary] = field(default_factory=dict)


@dataclass(frozen=True)
class PooledRun:
    """One (group, label, seed) over its replicates on several devices, averaged."""

    group: str
    label: str
    seed: int
    inner_steps: int
    accuracy: float
    accuracy_ci95: float
    accuracy_10: float
    accuracy_10_ci95: float
    train_seconds: float | None
    replicates: int
    devices: list[str]


@dataclass(frozen=True)
class Replicate:
    """The same configuration and seed trained on two devices: what rounding alone does."""

    group: str
    label: str
    seed: int
    accuracy: dict[str, float]
    difference: float


@dataclass(frozen=True)
class PooledOmniglot:
    """Several better-omniglot results read as one (`better_omniglot.pool`); seeds stay the unit."""

    runs: list[PooledRun]
    methods: dict[str, MethodSummary]
    ablation: dict[str, MethodSummary]
    replicates: list[Replicate]
    missing: list[MissingRun]


# ---------------------------------------------------------------------------------------------
# medical: few-shot blood-cell classification on PBC


@dataclass(frozen=True)
class MedicalSettings:
    n_way: int
    k_query: int
    shots: list[int]
    sizes: list[int]
    seeds: list[int]
    budget: dict[str, int]
    convergence: str
    meta_batch: int
    inner_lr: float
    inner_steps: int
    eval_every: int
    eval_tasks: int
    hidden: int
    test_tasks: int
    test_steps: int
    test_seed: int
    pretrain: dict[str, Any]
    head: dict[str, Any]
    scratch: dict[str, Any]
    splits: dict[str, Any]
    data: dict[str, Any]


@dataclass(frozen=True)
class MedicalRun:
    """One trained model (or one no-learning method) scored on one cell's shared test tasks."""

    method: str
    size: int
    split: int
    k_shot: int
    seed: int
    accuracy: float
    accuracy_ci95: float
    headline_step: int
    steps: list[int]
    accuracy_by_step: list[float]
    ci95_by_step: list[float]
    per_class: dict[str, float]
    confusion: dict[str, Any]
    test_cpu_seconds: float
    tasks: int
    train_cpu_seconds: float
    key: str
    per_task: list[float]
    iterations: int | None = None
    max_iterations: int | None = None
    converged: bool | None = None
    inner_lr: float | None = None
    val_curve: list[list[float | None]] | None = None
    epochs: int | None = None


@dataclass(frozen=True)
class PairedInterval:
    """A paired difference over the shared test tasks (a minus b) with its 95% interval."""

    difference: float
    low: float
    high: float
    decided: bool
    seeds: list[int]
    tasks: int
    method: str


@dataclass(frozen=True)
class MedicalCell:
    """A method in one (size, split, shots) cell, over its seeds."""

    accuracy: float
    by_seed: list[float]
    seeds: list[int]
    spread: float
    task_ci95_by_seed: list[float]
    iterations: list[int | None]
    epochs: list[int | None]
    converged: bool
    train_cpu_seconds: float
    test_cpu_seconds: float
    floor: str | None
    gain: PairedInterval | None
    vs_maml: PairedInterval | None


@dataclass(frozen=True)
class MedicalCost:
    jobs_finished: int
    jobs: int
    cpu_seconds: int


@dataclass(frozen=True, kw_only=True)
class MedicalResult(StudyResult):
    FORMAT: ClassVar[int] = 2

    settings: MedicalSettings
    budget: str
    cost: MedicalCost
    reading: str
    complete_with: str | None
    methods: dict[str, str]
    floors: list[str]
    runs: list[MedicalRun]
    missing: list[dict[str, Any]]
    table: dict[str, dict[str, MedicalCell]]

    def run(self, method: str, size: int, split: int, k_shot: int, seed: int) -> MedicalRun:
        """The one run of `method` on a cell and seed; KeyError naming it when there is none."""
        for run in self.runs:
            if (run.method, run.size, run.split, run.k_shot, run.seed) == (method, size, split, k_shot, seed):
                return run
        raise KeyError(f"no {method} run for {size} px, split {split}, {k_shot}-shot, seed {seed}")

    def cells(self, size: int) -> list[str]:
        """The cell names of one image size, in the order split 1 1-shot, 1 5-shot, 2 1-shot, 2 5-shot."""
        names = {name for cells in self.table.values() for name in cells if name.startswith(f"{size} px,")}
        return sorted(names, key=lambda n: (n.split("split ")[1], int(n.split(", ")[-1].split("-")[0])))


# ---------------------------------------------------------------------------------------------
# omniglot-prototypes: ProtoNets and ProtoMAML beside MAML, scored transductively and not


@dataclass(frozen=True)
class OmniglotPrototypesSettings:
    preset: str
    device: str
    jobs: int
    iterations: int
    meta_batch: int
    k_query: int
    inner_steps: int
    inner_lr: float
    test_tasks: int
    test_seed: int
    test_steps: dict[str, int]  # per method: the inner steps it is scored after (ProtoNets: 0)
    seeds: dict[str, list[int]]  # per method: the seeds planned
    maml_config: dict[str, Any]  # the MAML run's TrainConfig, that of the Omniglot chapter's stored run
    differs: dict[str, str]  # per method: what differs from the preset
    bootstrap: dict[str, Any]
    data: str


@dataclass(frozen=True)
class PrototypesRun:
    """One trained run, scored on the study's test tasks after `test_steps` inner steps, both ways:
    `per_task` transductive (a task's queries in one batch), `per_task_non_transductive` each query
    alone with the support set."""

    label: str
    seed: int
    algorithm: str
    device: str
    key: str
    iterations: int
    test_steps: int
    accuracy: float
    accuracy_ci95: float
    accuracy_non_transductive: float
    accuracy_non_transductive_ci95: float
    val_curve: list[list[float | None]]
    train_seconds: float
    seconds_this_session: float
    trained_on: str | None
    per_task: list[float]
    per_task_non_transductive: list[float]


@dataclass(frozen=True)
class PrototypesMissing:
    """A planned run not finished; `error` when its last try failed."""

    label: str
    seed: int
    key: str
    error: str | None = None


@dataclass(frozen=True)
class SeedMean:
    """A method's mean accuracy over its seeds, each seed's mean, and the mean's 95% interval."""

    mean: float
    low: float
    high: float
    by_seed: list[float]


@dataclass(frozen=True)
class PrototypesMethod:
    """A method over its seeds: its accuracy both ways, the transductive minus the non-transductive
    accuracy (paired by seed and task), and `against_maml[mode]`, the method minus MAML."""

    seeds: list[int]
    test_steps: int
    transductive: SeedMean
    non_transductive: SeedMean
    transductive_gap: PairedInterval
    against_maml: dict[str, PairedInterval]
    train_seconds: float | None


@dataclass(frozen=True)
class KeptWeights:
    """The run whose weights are kept beside the result file: `file` is relative to the result's folder
    (`omniglot_prototypes.load_kept` rebuilds the model from `config`)."""

    label: str
    seed: int
    key: str
    file: str
    bytes: int
    sha256: str
    dtype: str
    config: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class OmniglotPrototypesResult(StudyResult):
    settings: OmniglotPrototypesSettings
    reading: str
    complete_with: str | None
    runs: list[PrototypesRun]
    missing: list[PrototypesMissing]
    methods: dict[str, PrototypesMethod]
    kept: KeptWeights | None


# ---------------------------------------------------------------------------------------------
# rl: 2D navigation and the one-step Gaussian bandit


@dataclass(frozen=True)
class RLSettings:
    estimator: str
    outer: str
    inner_steps: int
    meta_batch: int
    trajectories: int
    horizon: int
    inner_lr: float
    gamma: float
    gae_lambda: float
    hidden: list[int]
    max_kl: float
    cg_iters: int
    cg_damping: float
    backtrack: float
    max_backtracks: int
    ppo_lr: float
    ppo_epochs: int
    ppo_clip: float
    iterations: int
    seed: int
    checkpoint_every: int
    model: str


@dataclass(frozen=True)
class RLCurve:
    """Training curve: the meta-batch's mean return before and after adaptation, per iteration."""

    iteration: list[int]
    pre_return: list[float]
    post_return: list[float | None]
    kl: list[float]
    seconds: list[float]


@dataclass(frozen=True)
class StepReturns:
    """Mean return over the test goals after 0..n inner steps, and its 95% half-width over goals."""

    mean: list[float]
    ci95: list[float]
    per_goal: list[list[float]] | None = None


@dataclass(frozen=True)
class RLEvaluation:
    steps: list[int]
    goals: list[list[float]]
    trajectories: int
    inner_lr: float
    methods: dict[str, StepReturns]
    seconds: float


@dataclass(frozen=True)
class BanditSettings:
    theta: float
    goal: float
    sigma: float
    alpha: float
    n: int
    samples: int


@dataclass(frozen=True)
class BanditEstimate:
    estimator: str
    mean: float
    se: float
    truth: float
    bias: float
    z: float
    expected_bias: float
    samples: int


@dataclass(frozen=True)
class Bandit:
    settings: BanditSettings
    estimators: dict[str, BanditEstimate]


@dataclass(frozen=True, kw_only=True)
class RLResult(StudyResult):
    folder: str
    settings: dict[str, RLSettings]
    main: str
    curves: dict[str, RLCurve]
    training_seconds: dict[str, float]
    evaluation: RLEvaluation
    bandit: Bandit


# ---------------------------------------------------------------------------------------------
# rl-paper: 2D navigation at the paper's scale, over three seeds


@dataclass(frozen=True)
class RLTraining:
    """`Nav2DConfig`'s settings shared by every trained run of a policy study (rl-paper, cheetah); each
    method sets its estimator, inner step and inner steps, each job its seed."""

    env: str
    outer: str
    meta_batch: int
    trajectories: int
    horizon: int
    gamma: float
    gae_lambda: float
    hidden: list[int]
    max_kl: float
    cg_iters: int
    cg_damping: float
    backtrack: float
    max_backtracks: int
    curvature: str
    ppo_lr: float
    ppo_epochs: int
    ppo_clip: float
    checkpoint_every: int


@dataclass(frozen=True)
class RLPaperTraining(RLTraining):
    """`RLTraining` with the meta-iterations every method trains for."""

    iterations: int


@dataclass(frozen=True)
class RLPaperMethod:
    """A trained method: its meta-gradient estimator, inner steps (0: the pretrained baseline) and the
    inner step size it trains with."""

    estimator: str
    inner_steps: int
    inner_lr: float
    description: str


@dataclass(frozen=True)
class RLPaperGoals:
    """A fixed set of goals (drawn from `goal_seed`) and how a policy is scored on them: `trajectories`
    per goal and step, 0 to `steps` inner steps, the random numbers from `sampling_seed`."""

    goals: int
    trajectories: int
    steps: int
    goal_seed: int
    sampling_seed: int


@dataclass(frozen=True)
class RLPaperBootstrap:
    confidence: float
    resamples: int
    seed: int


@dataclass(frozen=True)
class RLPaperSettings:
    training: RLPaperTraining
    methods: dict[str, RLPaperMethod]
    seeds: list[int]
    eval_inner_lrs: list[float]  # the steps the pretrained baseline and the random initialization adapt by
    snapshot_every: int
    curve_every: int
    validation: RLPaperGoals
    test: RLPaperGoals
    bootstrap: RLPaperBootstrap


@dataclass(frozen=True)
class RLPaperCurve:
    """Training curve in blocks of `curve_every` iterations, each labelled by its last iteration: the
    meta-batch's mean return before and after adaptation (None without an inner loop), averaged over the block."""

    iteration: list[int]
    pre_return: list[float]
    post_return: list[float | None]


@dataclass(frozen=True)
class RLPaperRun:
    """One trained run (or the random initialization of a seed), adapted by `inner_lr`.

    `snapshots` are the iterations whose parameters were kept, `validation` the mean return after one
    inner step on the validation goals at each; `best_iteration` is the snapshot with the highest.
    `last` and `best` hold the mean return per test goal after 0..steps inner steps, `[steps + 1][goals]`,
    of the last and the best snapshot. The pretrained baseline has one run per step size, from one job.
    """

    method: str
    algorithm: str  # "maml", "pretrained" or "random init"
    estimator: str | None
    inner_lr: float
    seed: int
    key: str
    iterations: int
    best_iteration: int
    snapshots: list[int]
    validation: list[float]
    curve: RLPaperCurve | None
    last: list[list[float]]
    best: list[list[float]]
    cpu_seconds: float
    train_cpu_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class RLPaperMissing:
    """A job not finished: the iteration its checkpoint reached (0: not started), and its error if it failed."""

    method: str
    seed: int
    key: str
    iteration: int
    error: str | None = None


@dataclass(frozen=True)
class RLPaperCell:
    """A method over its seeds, at one kind of snapshot: the mean return after 0..steps inner steps and
    its 95% interval (hierarchical bootstrap, seeds then test goals), each seed's mean, and the iteration
    of each seed's snapshot."""

    mean: list[float]
    low: list[float]
    high: list[float]
    by_seed: list[list[float]]
    seeds: list[int]
    snapshot_iterations: list[int]


@dataclass(frozen=True)
class RLPaperComparison:
    """Method `a` minus method `b` after 0..steps inner steps, paired over the test goals."""

    a: str
    b: str
    by_step: list[PairedInterval]


@dataclass(frozen=True)
class RLPaperCost:
    jobs_finished: int
    jobs: int
    cpu_seconds: float
    wall_seconds: float


class _Named(dict):
    """A dict whose missing key is a KeyError naming the key and the keys it holds."""

    def __init__(self, what: str, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.what = what

    def __missing__(self, key: str) -> Any:
        raise KeyError(f"no {self.what} {key!r}; the result holds {', '.join(map(repr, self)) or 'none'}")


class _SnapshotTables:
    """The accessors of a result whose `tables` and `comparisons` are by kind of snapshot ("last", "best")
    and whose `runs` are by method and seed (rl-paper, cheetah)."""

    def table(self, snapshot: str) -> dict[str, RLPaperCell]:
        """The methods' cells at `snapshot` ("last" or "best"), e.g. `table("best")["pretrained (0.1)"].mean[1]`."""
        if snapshot not in self.tables:
            raise KeyError(f"no table for snapshot {snapshot!r}; the result holds {', '.join(map(repr, self.tables))}")
        return _Named(f"method at snapshot {snapshot!r}", self.tables[snapshot])

    def comparison(self, snapshot: str, a: str, b: str, step: int) -> PairedInterval:
        """`a` minus `b` after `step` inner steps at `snapshot`, paired over the test goals."""
        if snapshot not in self.comparisons:
            raise KeyError(f"no comparisons for snapshot {snapshot!r}")
        for pair in self.comparisons[snapshot]:
            if (pair.a, pair.b) == (a, b):
                if not 0 <= step < len(pair.by_step):
                    raise KeyError(f"no step {step} in {a} minus {b}: steps 0..{len(pair.by_step) - 1}")
                return pair.by_step[step]
        known = "; ".join(f"{p.a} minus {p.b}" for p in self.comparisons[snapshot]) or "none"
        raise KeyError(f"no comparison of {a} minus {b} at snapshot {snapshot!r}; the result holds: {known}")

    def run(self, method: str, seed: int) -> Any:
        """The run of `method` (a table row's name, e.g. "pretrained (0.5)") and `seed`."""
        for run in self.runs:
            if (run.method, run.seed) == (method, seed):
                return run
        raise KeyError(f"no {method} run for seed {seed}")


@dataclass(frozen=True, kw_only=True)
class RLPaperResult(_SnapshotTables, StudyResult):
    """2D navigation at the paper's scale over three seeds (`mamlbook study rl-paper`). For example
    `table("best")["MAML (surrogate, 0.1)"].mean[1]` is the mean return after one inner step of the best
    snapshots, and `comparison("best", "MAML (surrogate, 0.1)", "pretrained (0.1)", step=1)` its paired
    difference from the pretrained baseline adapted by the same step."""

    FORMAT: ClassVar[int] = 1

    settings: RLPaperSettings
    reading: str
    complete_with: str | None
    cost: RLPaperCost
    runs: list[RLPaperRun]
    missing: list[RLPaperMissing]
    tables: dict[str, dict[str, RLPaperCell]]  # snapshot kind ("last", "best") -> method -> cell
    comparisons: dict[str, list[RLPaperComparison]]  # snapshot kind -> comparisons


# ---------------------------------------------------------------------------------------------
# cheetah: the running cheetah with a goal velocity (Finn et al. 2017, section 5.3)


@dataclass(frozen=True)
class CheetahTraining(RLTraining):
    """`RLTraining` for the cheetah, whose methods each set their own meta-iterations (`CheetahMethod`)."""


@dataclass(frozen=True)
class CheetahMethod(RLPaperMethod):
    """`RLPaperMethod` with the meta-iterations its jobs train for."""

    iterations: int


@dataclass(frozen=True)
class CheetahCurveSettings:
    """The velocity curves: the goal velocities, the numbers of inner steps drawn, the trajectories each
    curve averages and the seed of their random numbers."""

    goals: list[float]
    steps: list[int]
    trajectories: int
    sampling_seed: int


@dataclass(frozen=True)
class CheetahPaper:
    """The paper's settings for the cheetah (`reports.published`, `finn2017.cheetah.*`)."""

    meta_batch: int
    trajectories: int
    horizon: int
    iterations: int


@dataclass(frozen=True)
class CheetahSettings(RLPaperSettings):
    """`RLPaperSettings` with the cheetah's training and methods, its velocity curves and the paper's sizes."""

    training: CheetahTraining
    methods: dict[str, CheetahMethod]
    curves: CheetahCurveSettings
    paper: CheetahPaper


@dataclass(frozen=True)
class CheetahBudget:
    """The wall seconds the study is planned to take on two cores, the measured seconds per meta-iteration
    (one thread) it was planned from, and what the plan comes to."""

    seconds: float
    seconds_per_iteration: dict[str, float]
    seconds_per_rollout: float
    planned_seconds: float


@dataclass(frozen=True)
class CheetahRun(RLPaperRun):
    """A run as `RLPaperRun`, with the paper's meta-iterations beside the ones reached (`iterations`) and,
    for the trained methods, the velocity curves of its last snapshot: `curves[goal][steps]`, the mean
    forward velocity at each time step over the curves' trajectories, after `steps` inner steps (goal
    and steps as written by `f"{goal:g}"` and `str(steps)`). None for the random initialization."""

    paper_iterations: int | None
    curves: dict[str, dict[str, list[float]]] | None


@dataclass(frozen=True, kw_only=True)
class CheetahResult(_SnapshotTables, StudyResult):
    """The running cheetah (`mamlbook study cheetah`): MAML, the pretrained baseline and the random
    initialization. For example `table("last")["MAML"].mean[1]` is the mean return after one inner step
    of the last snapshot, `comparison("last", "MAML", "pretrained", step=1)` its paired difference from
    the pretrained baseline, and `curve("MAML", 1.0, 3)` the mean forward velocity at each time step
    toward goal velocity 1.0 after three inner steps."""

    FORMAT: ClassVar[int] = 1

    settings: CheetahSettings
    budget: CheetahBudget
    reading: str
    complete_with: str | None
    cost: RLPaperCost
    runs: list[CheetahRun]
    missing: list[RLPaperMissing]
    tables: dict[str, dict[str, RLPaperCell]]  # snapshot kind ("last", "best") -> method -> cell
    comparisons: dict[str, list[RLPaperComparison]]  # snapshot kind -> comparisons

    @property
    def curves(self) -> dict[str, dict[str, dict[str, list[float]]]]:
        """`curves[method][goal][steps]` of the first seed that has them (`CheetahRun.curves`)."""
        found: dict[str, dict[str, dict[str, list[float]]]] = {}
        for run in sorted(self.runs, key=lambda r: r.seed):
            if run.curves is not None and run.method not in found:
                found[run.method] = run.curves
        return _Named("velocity curves of method", found)

    def curve(self, method: str, goal: float, steps: int, seed: int | None = None) -> list[float]:
        """The mean forward velocity at each time step toward `goal` after `steps` inner steps, of the
        last snapshot of `method`'s run of `seed` (default: the first seed's)."""
        curves = self.curves[method] if seed is None else self.run(method, seed).curves
        if curves is None:
            raise KeyError(f"no velocity curves of {method} for seed {seed}")
        if f"{goal:g}" not in curves:
            raise KeyError(f"no velocity curve toward goal {goal:g} for {method}; goals {', '.join(curves)}")
        by_steps = curves[f"{goal:g}"]
        if str(steps) not in by_steps:
            raise KeyError(f"no velocity curve after {steps} inner steps for {method}; steps {', '.join(by_steps)}")
        return by_steps[str(steps)]


# ---------------------------------------------------------------------------------------------
# precision: reduced-precision meta-gradients and training on Omniglot


@dataclass(frozen=True)
class PrecisionError:
    """One setting's meta-gradient in float32 parameters at `precision`, against float64 (mean over batches)."""

    algorithm: str
    steps: int
    precision: str
    relative_error: float
    cosine: float


@dataclass(frozen=True)
class PlainGradientError:
    """The same measure on an ordinary gradient of the network (one loss, no inner loop)."""

    precision: str
    relative_error: float
    cosine: float


@dataclass(frozen=True)
class BatchNoise:
    """How far two meta-batches' float64 meta-gradients lie apart, relative: the sampling noise."""

    algorithm: str
    steps: int
    between_batches: float


@dataclass(frozen=True)
class GradientErrors:
    meta_batches: int
    rows: list[PrecisionError]
    plain_gradient: list[PlainGradientError]
    noise: list[BatchNoise]

    def error(self, algorithm: str, steps: int, precision: str) -> PrecisionError:
        """The row of one setting; a setting the file does not hold is an error naming it."""
        for row in self.rows:
            if (row.algorithm, row.steps, row.precision) == (algorithm, steps, precision):
                return row
        raise KeyError(f"no meta-gradient error stored for {algorithm}, {steps} step(s), {precision}")

    def spread(self, algorithm: str, steps: int) -> float:
        for row in self.noise:
            if (row.algorithm, row.steps) == (algorithm, steps):
                return row.between_batches
        raise KeyError(f"no between-batch spread stored for {algorithm}, {steps} step(s)")


@dataclass(frozen=True)
class PrecisionRun:
    """MAML trained at one precision and seed, scored in float32 on the study's fixed test tasks."""

    precision: str
    seed: int
    iterations: int
    accuracy: float
    accuracy_ci95: float
    train_seconds: float | None
    trained_on: str
    per_task: list[float]


@dataclass(frozen=True)
class MissingPrecisionRun:
    precision: str
    seed: int
    error: str | None


@dataclass(frozen=True)
class PrecisionTraining:
    iterations: int
    test_tasks: int
    runs: list[PrecisionRun]
    missing: list[MissingPrecisionRun]

    def per_task(self, precision: str) -> list[list[float]]:
        """`[seeds, tasks]` per-task accuracies of the runs at `precision`, seed order."""
        return [r.per_task for r in sorted(self.runs, key=lambda r: r.seed) if r.precision == precision]


@dataclass(frozen=True, kw_only=True)
class PrecisionResult(StudyResult):
    preset: str
    gradient: GradientErrors
    training: PrecisionTraining


def significant(values: Iterable[float], digits: int = 6) -> list[float]:
    """Per-task scores as stored: `digits` significant digits, as hundreds of full floats per run bloat a file.

    Each score moves by at most a relative 5e-6 (so does a mean of scores of one sign); accuracies,
    at most 1, by at most 5e-7.
    """
    return [float(f"{float(v):.{digits}g}") for v in values]


RESULT_TYPES: dict[str, type[StudyResult]] = {
    "sweep": SweepResult,
    "better": BetterResult,
    "better-omniglot": BetterOmniglotResult,
    "omniglot-prototypes": OmniglotPrototypesResult,
    "medical": MedicalResult,
    "rl": RLResult,
    "rl-paper": RLPaperResult,
    "cheetah": CheetahResult,
    "precision": PrecisionResult,
}
