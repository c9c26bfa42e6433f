"""Scaling of task-parallel meta-training: time per meta-iteration on 1 and 2 processes, and a model.

`python -m mamlbook.bench.distributed --out book/results/distributed-scaling.json` measures the
Trainer's own step (sample, adapt and differentiate this rank's share, one all-reduce, Adam) for
Conv4 on Omniglot-shaped random image tasks (5-way 1-shot, 15 queries per class, meta-batch 8 and
32) and the sinusoid MLP (meta-batch 25), each configuration on 1 and on 2 processes with one
intra-op thread each, plus the bare all-reduce of each meta-gradient.

The model of one step on W ranks:

    T(W) = c * ceil(B / W) + o + a(W),   a(W) = 2 (W - 1) * latency + 2 (W - 1) / W * bytes / bandwidth

with c the compute per task, o what does not split (the optimizer step, sampling), and a(W) a ring
all-reduce of the meta-gradient (4 bytes per parameter in float32). `c` comes from FLOPs per task
(counted by `torch.utils.flop_counter` on the exact second-order meta-gradient) over a throughput:
the CPU's, calibrated on the 1-process measurement, or an assumed GPU's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import meta_gradient
from ..models import Conv4, SineMLP
from ..records import from_data, to_data, write_record
from ..tasks import Sinusoid, TaskBatch
from ..train.distributed import launch_local
from .records import ScalingResult
from .runner import image_tasks, machine

# Assumptions of the model where nothing here can measure them (no GPU, no network).
LINKS = {
    # name: (bandwidth in bytes/s, latency per ring step in s)
    "NVLink-class, 10 GB/s": (10e9, 5e-6),
    "10 GbE, 1.25 GB/s": (1.25e9, 30e-6),
}
GPU_TFLOPS = 20.0  # effective float32/TF32 throughput assumed for one GPU on these convolutions


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, track_running_stats=False)

        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            bn(cout),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            bn(cout),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            bn(cout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), bn(cout))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """The ResNet-12 of few-shot learning (widths 64-160-320-640, 84x84 RGB): only for the model's
    FLOPs and parameter count (12.4M)."""

    def __init__(self, n_way: int = 5, widths: Sequence[int] = (64, 160, 320, 640)) -> None:
        super().__init__()
        blocks, cin = [], 3
        for width in widths:
            blocks.append(_ResBlock(cin, width))
            cin = width
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, n_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _image_task(channels: int, side: int, device: str, n_way: int = 5, query: int = 15) -> TaskBatch:
    return TaskBatch(
        torch.rand(1, n_way, channels, side, side, device=device),
        torch.arange(n_way, device=device).repeat(1, 1),
        torch.rand(1, n_way * query, channels, side, side, device=device),
        torch.arange(n_way, device=device).repeat_interleave(query).repeat(1, 1),
    )


def flops_per_task() -> dict[str, dict[str, float]]:
    """Parameters and FLOPs of one task's second-order meta-gradient (1 inner step), per model.

    ResNet-12 is counted on the meta device: no memory, no time, the same operations.
    """
    from torch.utils.flop_counter import FlopCounterMode

    sine = Sinusoid(k_shot=10).sample(1, torch.Generator().manual_seed(0))
    cases: list[tuple[str, Callable[[], nn.Module], TaskBatch, str, str]] = [
        ("sine-mlp", SineMLP, sine, "mse", "cpu"),
        ("conv4", lambda: Conv4(n_way=5), _image_task(1, 28, "cpu"), "ce", "cpu"),
        ("resnet12", ResNet12, _image_task(3, 84, "meta"), "ce", "meta"),
    ]
    out = {}
    for name, make, task, loss, device in cases:
        model = make().to(device)
        params = dict(model.named_parameters())
        with FlopCounterMode(display=False) as counter:
            meta_gradient(model, params, task, loss, 1, 0.4, 2, "loop")
        out[name] = {"parameters": sum(p.numel() for p in params.values()), "flops": counter.get_total_flops()}
    return out


class _ImageTasks:
    """Omniglot-shaped random tasks as a task source (speed does not depend on the pixels)."""

    loss = "ce"

    def __init__(self) -> None:
        self.make = image_tasks(5, 1, 15)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        return self.make(generator, batch_size)


PROBLEMS = {
    "conv4-5w1s": {"model": "conv4", "inner_lr": 0.4},  # Finn et al.'s Omniglot settings
    "sinusoid": {"model": "sine-mlp", "inner_lr": 0.01},
}


def _worker(rank: int, spec: dict[str, Any], path: str) -> None:
    import torch.distributed as dist

    from ..train import TrainConfig, Trainer

    problem = PROBLEMS[spec["problem"]]
    config = TrainConfig(
        meta_batch=spec["meta_batch"],
        inner_steps=1,
        inner_lr=problem["inner_lr"],
        iterations=10_000,
        eval_every=10_000,
        eval_tasks=1,
        seed=0,
    )
    if problem["model"] == "conv4":
        torch.manual_seed(0)
        trainer = Trainer(config, model=Conv4(n_way=5), tasks=_ImageTasks())
    else:
        trainer = Trainer(config)
    reduce_seconds: list[float] = []
    if trainer.parallel is not None:
        reduce = trainer.parallel.reduce

        def timed(*args: Any) -> torch.Tensor:
            start = time.perf_counter()
            try:
                return reduce(*args)
            finally:
                reduce_seconds.append(time.perf_counter() - start)

        trainer.parallel.reduce = timed
    steps, cpu = [], []
    load = os.getloadavg()[0]
    for _ in range(spec["warmup"] + spec["steps"]):
        dist.barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.step()
        steps.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    steps, cpu, reduce_seconds = (x[spec["warmup"] :] for x in (steps, cpu, reduce_seconds))
    # The bare all-reduce of the meta-gradient (and loss), without waiting for a slower rank.
    size = sum(p.numel() for p in trainer._meta_parameters()) + 1
    bare = []
    if dist.get_world_size() > 1:
        flat = torch.randn(size)
        for _ in range(25):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(flat)
            bare.append(time.perf_counter() - start)
    if rank == 0:
        row = {
            **{k: spec[k] for k in ("problem", "meta_batch", "processes")},
            "strategy": trainer.strategy,
            "parameters": size - 1,
            "tasks_on_rank0": -(-spec["meta_batch"] // spec["processes"]),
            "step_ms_median": 1e3 * statistics.median(steps),
            "step_ms": [round(1e3 * s, 2) for s in steps],
            # CPU time of rank 0's process: the work it did, whatever else ran on the machine meanwhile
            "step_cpu_ms_median": 1e3 * statistics.median(cpu),
            "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
            "reduce_ms_median": 1e3 * statistics.median(reduce_seconds) if reduce_seconds else 0.0,
            "compute_ms_median": 1e3
            * statistics.median([s - r for s, r in zip(steps, reduce_seconds or [0.0] * len(steps), strict=True)]),
            "allreduce_ms_median": 1e3 * statistics.median(bare[5:]) if bare else 0.0,
        }
        Path(path).write_text(json.dumps(row))


def measure(spec: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """One configuration on `spec["processes"]` fresh local processes (gloo), one thread each."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "row.json")
        os.environ["OMP_NUM_THREADS"] = str(spec.get("threads", 1))
        launch_local(_worker, spec["processes"], spec, path, timeout=timeout, collective_timeout=timeout)
        return json.loads(Path(path).read_text())


def allreduce_ms(parameters: int, world: int, bandwidth: float, latency: float, bytes_per: int = 4) -> float:
    """A ring all-reduce of `parameters` values on `world` ranks: 2(W-1) steps, 2(W-1)/W of the bytes."""
    if world <= 1:
        return 0.0
    return 1e3 * (2 * (world - 1) * latency + 2 * (world - 1) / world * parameters * bytes_per / bandwidth)


def predict_ms(
    compute_ms_per_task: float,
    meta_batch: int,
    world: int,
    parameters: int,
    bandwidth: float,
    latency: float,
    overhead_ms: float = 0.0,
) -> float:
    """Time of one meta-iteration on `world` ranks: the largest share's compute, what does not split,
    and the all-reduce of the meta-gradient."""
    share = math.ceil(meta_batch / world)
    return compute_ms_per_task * share + overhead_ms + allreduce_ms(parameters, world, bandwidth, latency)


def fit_compute(rows: Sequence[dict[str, Any]], key: str = "step_ms_median") -> dict[str, dict[str, float]]:
    """Per problem, the 1-process step time `key` as c * B + o (least squares over its meta-batch sizes):
    `{"compute_ms_per_task": c, "overhead_ms": o}`; with one size, o = 0."""
    out = {}
    for problem in sorted({r["problem"] for r in rows}):
        points = [(r["meta_batch"], r[key]) for r in rows if r["problem"] == problem and r["processes"] == 1]
        if len({b for b, _ in points}) > 1:
            mean_b = statistics.fmean(b for b, _ in points)
            mean_t = statistics.fmean(t for _, t in points)
            c = sum((b - mean_b) * (t - mean_t) for b, t in points) / sum((b - mean_b) ** 2 for b, _ in points)
            c = max(0.0, c)  # noise can tilt a flat line (the sinusoid's time hardly depends on B)
            o = max(0.0, mean_t - c * mean_b)
        else:
            c, o = points[0][1] / points[0][0], 0.0
        out[problem] = {"compute_ms_per_task": c, "overhead_ms": o}
    return out


def check_model(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model's 2-process step from the 1-process steps (compute per task and what does not split)
    and the measured bare all-reduce, against the 2-process measurement: in wall-clock time, and in
    rank 0's CPU time (the work each process does, whatever else the machine was running)."""
    wall, cpu = fit_compute(rows), fit_compute(rows, "step_cpu_ms_median")
    out = []
    for two in (r for r in rows if r["processes"] == 2):
        one = next(
            r
            for r in rows
            if r["processes"] == 1 and (r["problem"], r["meta_batch"]) == (two["problem"], two["meta_batch"])
        )
        row: dict[str, Any] = {
            "problem": two["problem"],
            "meta_batch": two["meta_batch"],
            "processes": 2,
            "allreduce_ms": two["allreduce_ms_median"],
        }
        for fitted, key, suffix in ((wall, "step_ms_median", ""), (cpu, "step_cpu_ms_median", "_cpu")):
            c, o = fitted[two["problem"]]["compute_ms_per_task"], fitted[two["problem"]]["overhead_ms"]
            predicted = c * two["tasks_on_rank0"] + o + (two["allreduce_ms_median"] if not suffix else 0.0)
            row[f"compute{suffix}_ms_per_task"] = c
            row[f"overhead{suffix}_ms"] = o
            row[f"predicted{suffix}_ms"] = predicted
            row[f"measured{suffix}_ms"] = two[key]
            row[f"measured_over_predicted{suffix}"] = two[key] / predicted
            row[f"speedup{suffix}_measured"] = one[key] / two[key]
        out.append(row)
    return out


def curves(result: dict[str, Any] | ScalingResult, meta_batch: int = 32, worlds: Sequence[int] = tuple(range(1, 33))):
    """The model's speed-up T(1)/T(W) for Conv4 and ResNet-12 on one GPU per rank (assumed throughput)
    over each link: {(model, link): [(W, speed-up), ...]}. Takes the stored record or a fresh run's dict."""
    if isinstance(result, ScalingResult):
        result = to_data(result)
    counts = result["flops_per_task"]
    tflops = result["model"]["gpu_tflops"]
    out = {}
    for model in ("conv4", "resnet12"):
        per_task = 1e3 * counts[model]["flops"] / (tflops * 1e12)
        parameters = counts[model]["parameters"]
        for link, (bandwidth, latency) in result["model"]["links"].items():
            times = [predict_ms(per_task, meta_batch, w, parameters, bandwidth, latency) for w in worlds]
            base = predict_ms(per_task, meta_batch, 1, parameters, bandwidth, latency)
            out[(model, link)] = [(w, base / t) for w, t in zip(worlds, times, strict=True)]
    return out


def run(
    out: str | os.PathLike,
    steps: int = 3,
    warmup: int = 1,
    configs: Sequence[tuple[str, int]] = (("sinusoid", 5), ("sinusoid", 25), ("conv4-5w1s", 8), ("conv4-5w1s", 32)),
    processes: Sequence[int] = (1, 2),
    command: str | None = None,
) -> dict[str, Any]:
    """Measure every configuration on each number of processes, count FLOPs, write the JSON."""
    rows = []
    for problem, meta_batch in configs:
        for world in processes:
            spec = {"problem": problem, "meta_batch": meta_batch, "processes": world, "steps": steps}
            spec["warmup"] = warmup
            row = measure(spec)
            print(
                f"{problem:>11} B={meta_batch:<3} {world} process(es): {row['step_ms_median']:9.1f} ms/step "
                f"(all-reduce {row['allreduce_ms_median']:.2f} ms)",
                flush=True,
            )
            rows.append(row)
    result = {
        "about": (
            "time per meta-iteration of the Trainer on 1 and 2 local processes (gloo), one thread each; "
            "wall-clock time (load_average: the machine's 1-minute load before and after each configuration's "
            "steps, which other work on the machine raises), and rank 0's CPU time"
        ),
        "command": command,
        "machine": {**machine(), "load_average_at_start": os.getloadavg()},
        "torch": torch.__version__,
        "threads_per_process": 1,
        "steps_timed": steps,
        "warmup_steps": warmup,
        "rows": rows,
        "flops_per_task": flops_per_task(),
        "model": {
            "formula": "T(W) = c*ceil(B/W) + 2(W-1)*latency + 2(W-1)/W * 4*parameters/bandwidth",
            "links": {k: list(v) for k, v in LINKS.items()},
            "gpu_tflops": GPU_TFLOPS,
        },
    }
    result["fit"] = {"wall": fit_compute(rows), "cpu": fit_compute(rows, "step_cpu_ms_median")}
    result["check"] = check_model(rows)
    write_record(from_data(ScalingResult, result, str(out)), out, indent=2)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: measure, write the JSON, print the model's check."""
    parser = argparse.ArgumentParser(prog="python -m mamlbook.bench.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON results file")
    parser.add_argument("--steps", type=int, default=3, help="timed meta-iterations per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--processes", default="1,2", help="comma-separated numbers of processes")
    args = parser.parse_args(argv)
    command = "python -m mamlbook.bench.distributed " + " ".join(sys.argv[1:] if argv is None else argv)
    processes = [int(p) for p in args.processes.split(",")]
    result = run(args.out, args.steps, args.warmup, processes=processes, command=command)
    for c in result["check"]:
        print(
            f"{c['problem']:>11} B={c['meta_batch']:<3} 2 processes: predicted {c['predicted_ms']:.1f} ms, "
            f"measured {c['measured_ms']:.1f} ms (speed-up {c['speedup_measured']:.2f}x); CPU time of rank 0: "
            f"predicted {c['predicted_cpu_ms']:.1f} ms, measured {c['measured_cpu_ms']:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
