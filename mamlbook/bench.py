"""Side-by-side timing of one meta-iteration: mamlbook's strategies against learn2learn and higher.

Every implementation runs in the same process on the same tasks and weights, so the numbers that
matter are the ratios. One meta-iteration is: meta-gradient over the meta-batch + one Adam step.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .engine import STRATEGIES, meta_gradient
from .engine.vmapped import has_batch_norm
from .models import SineMLP
from .peers import PEER_GRADIENTS
from .tasks import Sinusoid, TaskBatch


@dataclass(frozen=True)
class Problem:
    """A benchmark problem: a model, a way to draw one meta-batch, and MAML's settings for it."""

    name: str
    make_model: Callable[[], nn.Module]
    make_batch: Callable[[torch.Generator], TaskBatch]
    loss: str
    meta_batch: int
    inner_lr: float


PROBLEMS: dict[str, Problem] = {
    "sinusoid": Problem(
        "sinusoid", SineMLP, lambda g: Sinusoid(k_shot=10).sample(25, g), "mse", meta_batch=25, inner_lr=0.01
    ),
}


def _impl_names(impls: Sequence[str], model: nn.Module) -> list[str]:
    """Expand `mamlbook` into one entry per strategy this model may use."""
    names: list[str] = []
    for impl in impls:
        if impl == "mamlbook":
            names += [f"mamlbook:{s}" for s in STRATEGIES if not (s == "vmap" and has_batch_norm(model))]
        elif impl.startswith("mamlbook:"):
            if impl.split(":", 1)[1] not in STRATEGIES:
                raise ValueError(f"unknown strategy in {impl!r}; known: {', '.join(STRATEGIES)}")
            names.append(impl)
        elif impl in PEER_GRADIENTS:
            names.append(impl)
        else:
            raise ValueError(
                f"unknown impl {impl!r}; known: mamlbook, mamlbook:<strategy>, {', '.join(PEER_GRADIENTS)}"
            )
    return names


def _step_function(impl: str, model: nn.Module, batch: TaskBatch, problem: Problem, steps: int, order: int):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if impl.startswith("mamlbook:"):
        strategy = impl.split(":", 1)[1]
        params = dict(model.named_parameters())

        def step() -> None:
            _, grads = meta_gradient(model, params, batch, problem.loss, steps, problem.inner_lr, order, strategy)
            for name, p in model.named_parameters():
                p.grad = grads[name]
            optimizer.step()

        return step
    peer = PEER_GRADIENTS[impl]

    def peer_step() -> None:
        peer(model, batch, problem.loss, steps, problem.inner_lr, order)
        optimizer.step()

    return peer_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_impl(
    impl: str, problem: Problem, steps: int, order: int, device: torch.device, repeat: int, warmup: int, seed: int = 0
) -> dict[str, Any]:
    """Median and min milliseconds of one meta-iteration, and peak device memory on CUDA."""
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    batch = problem.make_batch(torch.Generator().manual_seed(seed)).to(device)
    step = _step_function(impl, model, batch, problem, steps, order)
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    name, _, strategy = impl.partition(":")
    return {
        "problem": problem.name,
        "impl": name,
        "strategy": strategy or "loop",
        "order": order,
        "steps": steps,
        "meta_batch": len(batch),
        "device": str(device),
        "ms_median": statistics.median(times),
        "ms_min": min(times),
        "peak_mib": peak,
        "repeat": repeat,
    }


def run_bench(
    problems: Sequence[str] = ("sinusoid",),
    steps: Sequence[int] = (1,),
    impls: Sequence[str] = ("mamlbook", "learn2learn", "higher"),
    order: int = 2,
    device: str = "cpu",
    repeat: int = 10,
    warmup: int = 3,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Time every (problem, impl, steps) and add each row's speed-up over learn2learn's loop."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device here")
    rows = []
    for name in problems:
        if name not in PROBLEMS:
            raise ValueError(f"unknown problem {name!r}; known: {', '.join(PROBLEMS)}")
        problem = PROBLEMS[name]
        for impl in _impl_names(impls, problem.make_model()):
            for n in steps:
                row = time_impl(impl, problem, n, order, dev, repeat, warmup)
                rows.append(row)
                if progress:
                    print(f"  {row['problem']:>16} {impl:>16} steps={n:<3} {row['ms_median']:9.2f} ms", flush=True)
    for row in rows:
        ref = [
            r
            for r in rows
            if r["impl"] == "learn2learn" and r["problem"] == row["problem"] and r["steps"] == row["steps"]
        ]
        row["ratio_vs_learn2learn"] = ref[0]["ms_median"] / row["ms_median"] if ref else None
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'problem':>16} {'impl':>12} {'strategy':>9} {'order':>5} {'steps':>5} {'batch':>5} "
        f"{'median ms':>10} {'min ms':>9} {'peak MiB':>9} {'x l2l':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        ratio = "-" if r.get("ratio_vs_learn2learn") is None else f"{r['ratio_vs_learn2learn']:.2f}"
        lines.append(
            f"{r['problem']:>16} {r['impl']:>12} {r['strategy']:>9} {r['order']:>5} {r['steps']:>5} "
            f"{r['meta_batch']:>5} {r['ms_median']:>10.2f} {r['ms_min']:>9.2f} {peak:>9} {ratio:>7}"
        )
    return "\n".join(lines)


def write_json(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(rows), indent=2) + "\n")
    return path
