"""The typed files the benchmarks write: `mamlbook bench --json` rows and the distributed scaling run.

`write_json` and `read_rows` go through `BenchResults`, so a row with a missing or renamed column
fails when it is read, naming the file and the column, instead of a chapter finding no number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..records import Machine, Record

__all__ = ["BenchResults", "BenchRow", "ScalingCheck", "ScalingResult", "ScalingRow"]


@dataclass(frozen=True)
class BenchRow:
    """One configuration: time per meta-iteration (median and minimum over `repeat`) and memory.

    `peak_mib` is the peak resident set of the fresh process that ran the configuration (on a GPU,
    the allocator's peak); `extra_mib` that peak minus the process's before the first iteration.
    `saved_peak_mib`, `alloc_peak_mib` (peaks) and `saved_total_mib` (a sum, not a peak) are measured
    on one more iteration (`mamlbook.bench.runner.step_memory` says what each counts); None in files
    written before them. `compile_s`: the wall time of a compiling impl's first call (in the warm-up,
    not in the timed iterations); None for the others and in older files.
    """

    problem: str
    impl: str
    strategy: str
    order: int
    steps: int
    meta_batch: int
    device: str
    threads: int
    ms_median: float
    ms_min: float
    peak_mib: float | None
    extra_mib: float | None
    repeat: int
    ratio_vs_learn2learn: float | None
    command: str | None
    mamlbook: str
    machine: Machine
    saved_peak_mib: float | None = None
    saved_total_mib: float | None = None
    alloc_peak_mib: float | None = None
    compile_s: float | None = None  # the first call's compile, for impls that compile (mamlbook:step-compiled)
    precision: str = "fp32"  # "bf16"/"fp16": the matrix products in reduced precision (mamlbook.precision)
    gflop: float | None = None  # the useful work of one meta-iteration (bench.flops); None where not counted
    gflops: float | None = None  # gflop over the median time
    estimator: str | None = None  # nav2d: the meta-gradient the row computes (rl.estimators); None elsewhere


@dataclass(frozen=True, kw_only=True)
class BenchResults(Record):
    """A benchmark run's rows, as `mamlbook bench --json PATH` writes them; `peak_gflops`, where
    measured, is the machine's matrix-product rate by precision ("fp32", "bf16") on the run's threads."""

    rows: list[BenchRow]
    peak_gflops: dict[str, float] | None = None


@dataclass(frozen=True)
class ScalingRow:
    problem: str
    meta_batch: int
    processes: int
    strategy: str
    parameters: int
    tasks_on_rank0: int
    step_ms_median: float
    step_ms: list[float]
    step_cpu_ms_median: float
    load_average: list[float]
    reduce_ms_median: float
    compute_ms_median: float
    allreduce_ms_median: float


@dataclass(frozen=True)
class ScalingCheck:
    """The model's prediction for 2 processes against the measurement."""

    problem: str
    meta_batch: int
    processes: int
    allreduce_ms: float
    compute_ms_per_task: float
    overhead_ms: float
    predicted_ms: float
    measured_ms: float
    measured_over_predicted: float
    speedup_measured: float
    compute_cpu_ms_per_task: float
    overhead_cpu_ms: float
    predicted_cpu_ms: float
    measured_cpu_ms: float
    measured_over_predicted_cpu: float
    speedup_cpu_measured: float


@dataclass(frozen=True)
class ScalingFit:
    compute_ms_per_task: float
    overhead_ms: float


@dataclass(frozen=True)
class ScalingModel:
    formula: str
    links: dict[str, list[float]]
    gpu_tflops: float


@dataclass(frozen=True, kw_only=True)
class ScalingResult(Record):
    """`python -m mamlbook.bench.distributed --out PATH`: the Trainer on 1 and 2 processes."""

    about: str
    command: str
    machine: Machine
    torch: str
    threads_per_process: int
    steps_timed: int
    warmup_steps: int
    rows: list[ScalingRow]
    flops_per_task: dict[str, dict[str, int]]
    model: ScalingModel
    fit: dict[str, dict[str, ScalingFit]]
    check: list[ScalingCheck] = field(default_factory=list)
