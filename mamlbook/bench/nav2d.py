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

    python -m mamlbook.bench.nav2d [--threads 1] [--iterations 3] [--curvatures exact learn2learn]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..rl.trainer import CURVATURES, Nav2DConfig, Nav2DTrainer
from .nav2d_anchors import ANCHORS, AnchorTrainer

PAPER = {"meta_batch": 20, "trajectories": 20}  # with Nav2DConfig's defaults: horizon 100, TRPO, 10 CG steps

IMPLS = (*CURVATURES, *ANCHORS)
"""What `compare_nav2d_step` times: our trainer by each curvature, and each anchor's meta-update."""

__all__ = ["IMPLS", "PAPER", "compare_nav2d_step", "time_nav2d_step"]


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
    and the anchors' names), steps taken in turn (the order flips every round). `config` overrides the
    paper's settings (`PAPER` and `Nav2DConfig`'s defaults)."""
    unknown = sorted(set(curvatures) - set(IMPLS))
    if unknown:
        raise ValueError(f"unknown curvature {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    settings = {**PAPER, **config}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainers = {c: _trainer(c, settings) for c in curvatures}
        steps: dict[str, list[float]] = {c: [] for c in curvatures}
        load_start = os.getloadavg()[0]
        for round_ in range(warmup + iterations):
            for c in curvatures if round_ % 2 == 0 else reversed(curvatures):
                start = time.perf_counter()
                trainers[c].step()
                if round_ >= warmup:
                    steps[c].append(time.perf_counter() - start)
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
    parser.add_argument("--curvatures", nargs="+", default=list(IMPLS), choices=IMPLS)
    args = parser.parse_args(argv)
    result = compare_nav2d_step(args.curvatures, args.threads, args.iterations, args.warmup)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
