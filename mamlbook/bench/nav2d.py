"""How long one MAML-RL meta-iteration on 2D navigation takes, by the way TRPO's local model is taken.

`Nav2DTrainer.step()` at the paper's settings (20 tasks x 20 trajectories, horizon 100, TRPO with 10
conjugate-gradient steps and up to 15 backtracks), with `curvature="exact"` (autograd: the gradient
and the KL-Hessian products by double backward through the adaptation) and "gauss-newton"
(`rl.analytic`: the same step, derived by hand), beside two anchors (`bench.nav2d_anchors`): the
same loop and sampling with the meta-update of pytorch-maml-rl ("pytorch-maml-rl") or of
learn2learn's examples/rl/maml_trpo.py ("learn2learn"), re-implemented as their code computes it
(they estimate the surrogate's meta-gradient; our rows take the config's estimator, DiCE by
default, whose extra score term is one more pass over the pre-adaptation steps).
`compare_nav2d_step` runs them in one process on the same threads, one step of each in turn, so that
all see the same load; each first takes `warmup` untimed steps. The load average is recorded beside
the times: it says how much the numbers can be trusted.

A curvature with `@W` ("gauss-newton@2") is our trainer task-parallel on W local processes
(`rl.parallel`; gloo, `threads` threads each), launched after that loop: its time is rank 0's, from a
barrier to the end of the step (the processes end it together), and its all-reduces are counted and
timed (`collectives`).

    python -m mamlbook.bench.nav2d [--threads 1] [--iterations 3] [--curvatures exact gauss-newton@2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..rl.trainer import CURVATURES, Nav2DConfig, Nav2DTrainer
from .nav2d_anchors import ANCHORS, AnchorTrainer

PAPER = {"meta_batch": 20, "trajectories": 20}  # with Nav2DConfig's defaults: horizon 100, TRPO, 10 CG steps

IMPLS = (*CURVATURES, *ANCHORS)
"""What `compare_nav2d_step` times: our trainer by each curvature, and each anchor's meta-update; a
curvature may take `@W`, W >= 2 processes (`processes`)."""

__all__ = ["IMPLS", "PAPER", "compare_nav2d_step", "processes", "time_nav2d_step"]


def processes(name: str) -> tuple[str, int]:
    """("gauss-newton", 2) for "gauss-newton@2", (name, 1) for a name without "@"."""
    way, at, count = name.partition("@")
    if not at:
        return name, 1
    if way not in CURVATURES or not count.isdigit() or int(count) < 2:
        raise ValueError(f"{name!r}: a curvature ({', '.join(CURVATURES)}) on W >= 2 processes is <curvature>@W")
    return way, int(count)


def _group_worker(rank: int, way: str, settings: dict[str, Any], threads: int, rounds: int, path: str) -> None:
    """One rank of the W-process trainer: `rounds` steps, each from a barrier; rank 0 writes the times."""
    import torch.distributed as dist

    torch.set_num_threads(threads)
    trainer = Nav2DTrainer(Nav2DConfig(**{**settings, "curvature": way}), distributed=True)
    steps, calls, seconds = [], [], []
    for _ in range(rounds):
        dist.barrier()
        count, spent = len(trainer.parallel.calls), trainer.parallel.seconds
        start = time.perf_counter()
        trainer.step()
        steps.append(time.perf_counter() - start)
        calls.append(len(trainer.parallel.calls) - count)
        seconds.append(trainer.parallel.seconds - spent)
    if rank == 0:
        Path(path).write_text(json.dumps({"steps": steps, "calls": calls, "seconds": seconds}))


def _time_group(name: str, settings: dict[str, Any], threads: int, iterations: int, warmup: int) -> dict[str, list]:
    """`name` ("gauss-newton@2") on its W local processes: its timed steps and its all-reduces per step."""
    from ..train.distributed import launch_local

    way, world = processes(name)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "times.json")
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            rounds = warmup + iterations
            launch_local(
                _group_worker, world, way, settings, threads, rounds, path, timeout=3600, collective_timeout=600
            )
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        times = json.loads(Path(path).read_text())
    return {k: v[warmup:] for k, v in times.items()}


def _trainer(name: str, settings: dict[str, Any]) -> Nav2DTrainer | AnchorTrainer:
    if name in ANCHORS:
        return AnchorTrainer(name, Nav2DConfig(**settings))
    return Nav2DTrainer(Nav2DConfig(**{**settings, "curvature": name}))


def compare_nav2d_step(
    curvatures: Sequence[str] = ("exact", "gauss-newton", *ANCHORS),
    threads: int = 1,
    iterations: int = 3,
    warmup: int = 1,
    **config: Any,
) -> dict[str, Any]:
    """Median seconds of one meta-iteration for each of `curvatures` (`IMPLS`: our trainer's curvatures
    and the anchors' names), steps taken in turn (the order flips every round); those with `@W` on W
    processes, each launched after that loop. `config` overrides the paper's settings (`PAPER` and
    `Nav2DConfig`'s defaults)."""
    unknown = sorted(c for c in curvatures if c not in IMPLS and "@" not in c)
    if unknown:
        raise ValueError(f"unknown curvature {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    grouped = [c for c in curvatures if processes(c)[1] > 1]
    alone = [c for c in curvatures if c not in grouped]
    settings = {**PAPER, **config}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    collectives: dict[str, dict[str, list]] = {}
    try:
        trainers = {c: _trainer(c, settings) for c in alone}
        steps: dict[str, list[float]] = {c: [] for c in curvatures}
        load_start = os.getloadavg()[0]
        for round_ in range(warmup + iterations):
            for c in alone if round_ % 2 == 0 else reversed(alone):
                start = time.perf_counter()
                trainers[c].step()
                if round_ >= warmup:
                    steps[c].append(time.perf_counter() - start)
        for c in grouped:
            timed = _time_group(c, settings, threads, iterations, warmup)
            steps[c] = timed["steps"]
            collectives[c] = {"per_step": timed["calls"], "seconds": [round(x, 5) for x in timed["seconds"]]}
        load_end = os.getloadavg()[0]
    finally:
        torch.set_num_threads(before)
    medians = {c: statistics.median(s) for c, s in steps.items()}
    result: dict[str, Any] = {
        "settings": settings,
        "threads": threads,
        "iterations": iterations,
        "warmup": warmup,
        "seconds": medians,
        "steps": {c: [round(x, 4) for x in s] for c, s in steps.items()},
        "load_average": [round(load_start, 2), round(load_end, 2)],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    if "exact" in medians and "gauss-newton" in medians:
        result["speedup"] = medians["exact"] / medians["gauss-newton"]
    if grouped:
        result["collectives"] = collectives
        # one process's median over W's, where both ran
        result["parallel_speedup"] = {
            c: medians[processes(c)[0]] / medians[c] for c in grouped if processes(c)[0] in medians
        }
    return result


def time_nav2d_step(curvature: str, threads: int = 1, iterations: int = 3, **config: Any) -> dict[str, Any]:
    """Median seconds of `Nav2DTrainer.step()` with `curvature`, at the paper's settings (`config`
    overrides them); to compare two paths, alternate them in one process with `compare_nav2d_step`."""
    result = compare_nav2d_step((curvature,), threads, iterations, **config)
    own = {"seconds": result["seconds"][curvature], "steps": result["steps"][curvature]}
    return {**result, "curvature": curvature, **own}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mamlbook.bench.nav2d", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--curvatures", nargs="+", default=list(IMPLS), help=f"{', '.join(IMPLS)}; curvature@W")
    args = parser.parse_args(argv)
    result = compare_nav2d_step(args.curvatures, args.threads, args.iterations, args.warmup)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
