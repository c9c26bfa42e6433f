"""Side-by-side timing of one meta-iteration: mamlbook's strategies against learn2learn, higher and TorchOpt.

Every implementation runs on the same tasks and weights in the same run, so the numbers that
matter are the ratios. One meta-iteration is: meta-gradient over the meta-batch + one Adam step.
Each configuration runs in a fresh subprocess (`python -m mamlbook.bench --one CONFIG`), so that
the CPU's peak resident memory belongs to that configuration alone and no run warms another's caches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import STRATEGIES, meta_gradient
from ..engine.imaml import imaml_query_losses
from ..engine.mlp_closed import is_mlp_chain
from ..engine.strategy import available_strategies
from ..meta import InnerLoop
from ..meta.anil import anil_rule
from ..models import Conv4, SineMLP
from ..precision import check_precision
from ..records import cpu_model, from_data, read_record, write_record
from ..tasks import Sinusoid, TaskBatch
from .frameworks.harness import FRAMEWORK_FORMS, FRAMEWORK_IMPLS, bench_step
from .peers import PEER_GRADIENTS
from .records import BenchResults, BenchRow


@dataclass(frozen=True)
class Problem:
    """A benchmark problem: a model, a way to draw one meta-batch, and MAML's settings for it."""

    name: str
    make_model: Callable[[], nn.Module]
    make_batch: Callable[[torch.Generator, int], TaskBatch]
    loss: str
    meta_batch: int
    inner_lr: float


def image_tasks(
    n_way: int, k_shot: int, query_per_class: int, side: int = 28
) -> Callable[[torch.Generator, int], TaskBatch]:
    """Random images and labels with Omniglot's shapes: speed does not depend on the pixels' values."""

    def make(generator: torch.Generator, tasks: int) -> TaskBatch:
        support_y = torch.arange(n_way).repeat_interleave(k_shot).repeat(tasks, 1)
        query_y = torch.arange(n_way).repeat_interleave(query_per_class).repeat(tasks, 1)
        return TaskBatch(
            torch.rand(tasks, n_way * k_shot, 1, side, side, generator=generator),
            support_y,
            torch.rand(tasks, n_way * query_per_class, 1, side, side, generator=generator),
            query_y,
        )

    return make


PROBLEMS: dict[str, Problem] = {
    "sinusoid": Problem(
        "sinusoid", SineMLP, lambda g, b: Sinusoid(k_shot=10).sample(b, g), "mse", meta_batch=25, inner_lr=0.01
    ),
    # Finn et al. (2017): Conv4, 1 shot, 15 queries per class, inner lr 0.4, meta-batch 32 (5-way), 16 (20-way).
    "omniglot-5w1s": Problem(
        "omniglot-5w1s", lambda: Conv4(n_way=5), image_tasks(5, 1, 15), "ce", meta_batch=32, inner_lr=0.4
    ),
    "omniglot-20w1s": Problem(
        "omniglot-20w1s", lambda: Conv4(n_way=20), image_tasks(20, 1, 15), "ce", meta_batch=16, inner_lr=0.1
    ),
}


def _impl_names(impls: Sequence[str], model: nn.Module) -> list[str]:
    """Expand `mamlbook` into one entry per strategy this model may use; check the others."""
    names: list[str] = []
    for impl in impls:
        algorithm, _, strategy = impl.partition(":")
        if impl == STEP_COMPILED:
            if not is_mlp_chain(model):
                raise ValueError(f"{impl} runs MLP chains (Linear and ReLU/Tanh) only, not {type(model).__name__}")
            names.append(impl)
        elif impl == "mamlbook":
            names += [f"mamlbook:{s}" for s in available_strategies(model)]
        elif algorithm in ("mamlbook", "anil"):
            # `strategy@k`: the meta-batch k tasks at a time, a backward after each (meta_gradient's chunk).
            strategy = strategy or "folded"
            base, _, chunk = strategy.partition("@")
            if base not in STRATEGIES or (chunk and not (chunk.isdigit() and int(chunk) > 0)):
                raise ValueError(f"unknown strategy in {impl!r}; known: {', '.join(STRATEGIES)}")
            names.append(f"{algorithm}:{strategy}")
        elif impl == "imaml":
            names.append("imaml:folded")
        elif impl in PEER_GRADIENTS:
            names.append(impl)
        elif impl in FRAMEWORK_IMPLS:
            if not isinstance(model, SineMLP):
                raise ValueError(f"{impl} is benchmarked on the sinusoid problem only, not on {type(model).__name__}")
            names.append(impl)
        else:
            raise ValueError(
                f"unknown impl {impl!r}; known: mamlbook, mamlbook:<strategy>, {STEP_COMPILED}, anil[:<strategy>], "
                f"imaml, {', '.join(PEER_GRADIENTS)}, {', '.join(FRAMEWORK_IMPLS)}"
            )
    return names


# Algorithms benchmarked besides MAML itself: each is a plug-in to the same engine.
ALGORITHMS = ("mamlbook", "anil", "imaml")
# The whole meta-iteration, Adam included, as one compiled call (engine/compiled_step.py): not a
# strategy (a strategy computes losses, this takes the optimizer step), so not in `STRATEGIES`.
STEP_COMPILED = "mamlbook:step-compiled"


class _CompiledStep:
    """`CompiledMetaStep.step` on one batch, as a timed step; its compile time read after the warm-up."""

    def __init__(self, model: nn.Module, batch: TaskBatch, problem: Problem, steps: int) -> None:
        from ..engine.compiled_step import CompiledMetaStep

        self.meta, self.batch = CompiledMetaStep(model, problem.loss, steps, problem.inner_lr, lr=1e-3), batch

    def __call__(self) -> None:
        self.meta.step(self.batch)

    @property
    def compile_seconds(self) -> float | None:
        return self.meta.compile_seconds


def _impl_gradient(impl: str, model: nn.Module, problem: Problem, steps: int, order: int, precision: str = "fp32"):
    """A function batch -> (loss, grads) for `algorithm:strategy` (mamlbook, anil) or imaml."""
    algorithm, _, strategy = impl.partition(":")
    if algorithm == "imaml":
        inner = InnerLoop(problem.loss, steps, problem.inner_lr, order)

        def imaml(params: dict, batch: TaskBatch):
            leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
            loss = imaml_query_losses(model, leaves, batch, inner).mean()
            return loss.detach(), dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

        return imaml
    rule = anil_rule(model, problem.inner_lr) if algorithm == "anil" else None
    strategy, _, chunk = strategy.partition("@")

    def maml(params: dict, batch: TaskBatch):
        return meta_gradient(
            model,
            params,
            batch,
            problem.loss,
            steps,
            problem.inner_lr,
            order,
            strategy,
            rule,
            int(chunk) if chunk else None,
            precision,
        )

    return maml


def _step_function(
    impl: str, model: nn.Module, batch: TaskBatch, problem: Problem, steps: int, order: int, precision: str = "fp32"
):
    if impl == STEP_COMPILED:
        if order != 2 or precision != "fp32":
            raise ValueError(f"{impl} is second-order MAML in full precision only, not order {order}, {precision}")
        return _CompiledStep(model, batch, problem, steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if precision != "fp32" and impl.partition(":")[0] not in ("mamlbook", "anil"):
        raise ValueError(f"{impl} runs in full precision only; reduced precision is an option of mamlbook's strategies")
    if impl.partition(":")[0] in ALGORITHMS:
        gradient = _impl_gradient(impl, model, problem, steps, order, precision)
        params = dict(model.named_parameters())

        def step() -> None:
            _, grads = gradient(params, batch)
            for name, p in model.named_parameters():
                p.grad = grads[name]
            optimizer.step()

        return step
    if impl in FRAMEWORK_IMPLS:  # its own weights, optimizer and idiom (mamlbook.bench.frameworks)
        return bench_step(impl, model, batch, problem.loss, problem.inner_lr, steps, order)
    peer = PEER_GRADIENTS[impl]

    def peer_step() -> None:
        peer(model, batch, problem.loss, steps, problem.inner_lr, order)
        optimizer.step()

    return peer_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib(field: str) -> float | None:
    """`VmRSS` or `VmHWM` (peak) of this process in MiB, from /proc (Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"{field}:\s+(\d+)\s+kB", status)
    return int(match.group(1)) / 1024 if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of resident memory, so the peak is this section's alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def step_memory(impl: str, step: Callable[[], None], device: torch.device) -> dict[str, float | None]:
    """Peak memory of one more meta-iteration, measured as peaks (`mamlbook.memory`), run after the
    timed ones so that neither the hooks nor the profiler slow or inflate what they measure.

    `saved_peak_mib`: the most bytes autograd's graphs held for backward at one time (what grows
    with the inner steps in second-order MAML; blind to what `torch.utils.checkpoint` saves and
    recomputes, and None where `torch.func` refuses the hooks, as under vmap); `saved_total_mib`:
    the bytes of every save summed, not a peak, for comparison. `alloc_peak_mib` (CPU): the most
    bytes held at one time in the tensors the iteration allocated, checkpointing's recomputation
    included (torch.profiler; on a GPU `peak_mib` is already the allocator's peak). None for
    TensorFlow and JAX, whose memory torch does not see.
    """
    from ..memory import SavedTensorMemory, allocator_peak

    memory: dict[str, float | None] = {"saved_peak_mib": None, "saved_total_mib": None, "alloc_peak_mib": None}
    if impl in FRAMEWORK_IMPLS:
        return memory
    try:
        with SavedTensorMemory() as saved:
            step()
        _sync(device)
        memory["saved_peak_mib"], memory["saved_total_mib"] = saved.peak_mib, saved.total_mib
    except RuntimeError as error:
        if "saved tensor hooks" not in str(error):  # torch.func's refusal; anything else is a failure
            raise
    if device.type == "cpu":
        memory["alloc_peak_mib"] = allocator_peak(step).peak_mib
    return memory


def time_impl(
    impl: str,
    problem: Problem,
    steps: int,
    order: int,
    device: torch.device,
    repeat: int,
    warmup: int,
    seed: int = 0,
    meta_batch: int | None = None,
    memory: bool = True,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Median and min milliseconds of one meta-iteration, and peak memory.

    CUDA: `max_memory_allocated` during the timed iterations. CPU: the process's peak resident set
    (`peak_mib`) and its growth over the resident set before the timed iterations (`extra_mib`):
    Python, torch and the allocator's caching included, so they show little of what an iteration
    holds. `memory` adds `step_memory`'s peaks (two more iterations, after the timed ones).
    """
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    tasks = meta_batch or problem.meta_batch
    batch = problem.make_batch(torch.Generator().manual_seed(seed), tasks).to(device)
    step = _step_function(impl, model, batch, problem, steps, order, precision)
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        before = _rss_mib("VmRSS")
        _reset_peak_rss()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mib("VmHWM")
    name, _, strategy = impl.partition(":")
    return {
        "problem": problem.name,
        "impl": name,
        "strategy": strategy or FRAMEWORK_FORMS.get(name, "loop"),
        "order": order,
        "steps": steps,
        "meta_batch": len(batch),
        "precision": precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "ms_median": statistics.median(times),
        "ms_min": min(times),
        "peak_mib": peak,
        "extra_mib": None if peak is None or before is None else peak - before,
        "repeat": repeat,
        "compile_s": getattr(step, "compile_seconds", None),
        **(step_memory(impl, step, device) if memory else {}),
    }


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    """One configuration in this process (the body of `python -m mamlbook.bench --one`)."""
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    return time_impl(
        config["impl"],
        PROBLEMS[config["problem"]],
        int(config["steps"]),
        int(config["order"]),
        torch.device(config["device"]),
        int(config["repeat"]),
        int(config["warmup"]),
        meta_batch=config.get("meta_batch"),
        precision=config.get("precision", "fp32"),
    )


def run_isolated(config: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """`run_one` in a fresh Python process; its last line of output is the row as JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "mamlbook.bench", "--one", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark configuration {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_bench(
    problems: Sequence[str] = ("sinusoid",),
    steps: Sequence[int] = (1,),
    impls: Sequence[str] = ("mamlbook", "learn2learn", "higher"),
    order: int = 2,
    device: str = "cpu",
    repeat: int = 10,
    warmup: int = 3,
    progress: bool = True,
    meta_batches: Sequence[int | None] = (None,),
    threads: int | None = None,
    isolate: bool = True,
    precisions: Sequence[str] = ("fp32",),
    flops: bool = True,
) -> list[dict[str, Any]]:
    """Time every (problem, impl, precision, steps, meta-batch) and add each row's speed-up over learn2learn.

    `isolate` runs each configuration in a fresh subprocess (needed for a CPU peak-memory figure
    that belongs to one configuration); `threads` fixes torch's intra-op threads for all of them.
    `precisions` other than "fp32" ("bf16", "fp16") run mamlbook's strategies in reduced precision
    (`mamlbook.precision`); peers and frameworks run in full precision only. `flops` adds each row's
    `gflop` (the useful work of one meta-iteration, counted once per setting on the loop,
    `bench.flops`) and `gflops` (that over the median time).
    """
    for precision in precisions:
        check_precision(precision)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device here")
    for name in problems:
        if name not in PROBLEMS:
            raise ValueError(f"unknown problem {name!r}; known: {', '.join(PROBLEMS)}")
    rows = []
    for name in problems:
        problem = PROBLEMS[name]
        for impl, precision in _impl_precisions(_impl_names(impls, problem.make_model()), precisions):
            for tasks in meta_batches:
                for n in steps:
                    config = {
                        "problem": name,
                        "impl": impl,
                        "steps": n,
                        "order": order,
                        "device": device,
                        "repeat": repeat,
                        "warmup": warmup,
                        "meta_batch": tasks,
                        "threads": threads,
                        "precision": precision,
                    }
                    row = run_isolated(config) if isolate else run_one(config)
                    rows.append(row)
                    if progress:
                        print(
                            f"  {row['problem']:>16} {impl:>22} {precision} steps={n:<3} "
                            f"batch={row['meta_batch']:<3} {row['ms_median']:9.2f} ms",
                            flush=True,
                        )
    add_ratios(rows)
    if flops:
        add_flops(rows, threads)
    return rows


def _impl_precisions(names: Sequence[str], precisions: Sequence[str]) -> list[tuple[str, str]]:
    """Each impl in each precision it supports: reduced precision is an option of mamlbook's strategies."""
    reducible = ("mamlbook", "anil")
    return [
        (name, p)
        for name in names
        for p in precisions
        if p == "fp32" or (name.partition(":")[0] in reducible and name != STEP_COMPILED)
    ]


def add_flops(rows: Sequence[dict[str, Any]], threads: int | None = None) -> None:
    """`gflop` and `gflops` for each row: the loop's counted work of its setting over the row's time."""
    from .flops import meta_iteration_gflop

    counted: dict[tuple, float] = {}
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        for row in rows:
            key = (row["problem"], row["steps"], row["order"], row["meta_batch"])
            if key not in counted:
                problem = PROBLEMS[row["problem"]]
                torch.manual_seed(0)
                batch = problem.make_batch(torch.Generator().manual_seed(0), row["meta_batch"])
                counted[key] = meta_iteration_gflop(
                    problem.make_model(), batch, problem.loss, row["steps"], problem.inner_lr, row["order"]
                )
            row["gflop"] = counted[key]
            row["gflops"] = counted[key] / (row["ms_median"] / 1000)
    finally:
        torch.set_num_threads(before)


def machine_peaks(threads: int | None = None, device: str = "cpu") -> dict[str, float]:
    """The measured matrix-product GFLOP/s of `device` in float32 and bfloat16 (`bench.flops.matmul_peak`);
    on a GPU a larger product, as a 2048-square one does not fill it."""
    from .flops import matmul_peak

    size = 2048 if torch.device(device).type == "cpu" else 8192
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
        return {name: matmul_peak(dtype, size, device=device) for name, dtype in dtypes.items()}
    finally:
        torch.set_num_threads(before)


def add_ratios(rows: Sequence[dict[str, Any]]) -> None:
    """`ratio_vs_learn2learn`: learn2learn's median time over the row's, same problem, steps, batch."""
    for row in rows:
        ref = [
            r
            for r in rows
            if r["impl"] == "learn2learn"
            and all(r[k] == row[k] for k in ("problem", "steps", "meta_batch", "order", "device"))
        ]
        row["ratio_vs_learn2learn"] = ref[0]["ms_median"] / row["ms_median"] if ref else None


def machine() -> dict[str, Any]:
    """What the numbers were measured on, for the results file."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def format_table(rows: Sequence[dict[str, Any] | BenchRow]) -> str:
    """Rows, live (dicts from `run_bench`) or stored (`read_rows`), as an aligned text table."""
    rows = [vars(r) if isinstance(r, BenchRow) else r for r in rows]
    head = (
        f"{'problem':>16} {'impl':>12} {'strategy':>12} {'prec':>4} {'order':>5} {'steps':>5} {'batch':>5} "
        f"{'median ms':>10} {'min ms':>9} {'peak MiB':>9} {'+MiB':>7} {'x l2l':>7} {'GFLOP/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        extra = "-" if r.get("extra_mib") is None else f"{r['extra_mib']:.0f}"
        ratio = "-" if r.get("ratio_vs_learn2learn") is None else f"{r['ratio_vs_learn2learn']:.2f}"
        rate = "-" if r.get("gflops") is None else f"{r['gflops']:.1f}"
        lines.append(
            f"{r['problem']:>16} {r['impl']:>12} {r['strategy']:>12} {r.get('precision', 'fp32'):>4} "
            f"{r['order']:>5} {r['steps']:>5} {r['meta_batch']:>5} {r['ms_median']:>10.2f} {r['ms_min']:>9.2f} "
            f"{peak:>9} {extra:>7} {ratio:>7} {rate:>8}"
        )
    return "\n".join(lines)


def write_json(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    command: str | None = None,
    peaks: dict[str, float] | None = None,
) -> Path:
    """The rows as a `BenchResults` record; each row also says the command, package version and machine;
    `peaks` (`machine_peaks`) is the machine's measured matrix-product GFLOP/s."""
    from .. import __version__

    about = {"command": command, "mamlbook": __version__, "machine": machine()}
    typed = [from_data(BenchRow, {**row, **about}, f"{path}: rows[{i}]") for i, row in enumerate(rows)]
    record = BenchResults(rows=typed, peak_gflops=peaks)
    return write_record(record, path, indent=2)


def read_rows(path: str | Path) -> list[BenchRow]:
    """Rows of a results file written by `write_json`, typed; a missing or renamed column fails here."""
    return read_record(BenchResults, path).rows


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mamlbook.bench --one CONFIG`: one configuration, its row printed as JSON."""
    parser = argparse.ArgumentParser(prog="python -m mamlbook.bench")
    parser.add_argument("--one", required=True, help="a JSON configuration, as `run_bench` writes it")
    args = parser.parse_args(argv)
    print(json.dumps(run_one(json.loads(args.one))), flush=True)
    return 0
