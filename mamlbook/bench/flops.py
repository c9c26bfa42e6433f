"""FLOP efficiency: the useful work of one meta-iteration and this machine's matrix-product peak.

A time ratio says who is faster; it does not say how far anyone is from the hardware's limit. So a
benchmark row can also carry GFLOP/s: the floating-point operations of one meta-iteration, counted
once on the reference loop (torch's `FlopCounterMode`: matrix products and convolutions of the
forward, of the inner loop's backward with its graph, and of the outer backward; element-wise work
is not counted), divided by the row's median time. Every implementation of a problem is charged the
same count, the work the mathematics needs: a strategy that recomputes (checkpointing) does more
arithmetic than it is credited with, and TensorFlow and JAX, whose operations torch cannot count,
get the same figure as everyone else.

The peak is measured, never assumed: a square matrix product on this machine, in float32 and in
bfloat16, on the threads the benchmark uses (`matmul_peak`).
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..engine import meta_gradient
from ..tasks import TaskBatch

__all__ = ["matmul_peak", "meta_iteration_gflop"]


def meta_iteration_gflop(
    model: torch.nn.Module, batch: TaskBatch, loss: str, steps: int, inner_lr: float, order: int
) -> float:
    """GFLOP of one meta-gradient by the loop (matrix products and convolutions), in float32 arithmetic."""
    params = dict(model.named_parameters())
    with FlopCounterMode(display=False) as counter:
        meta_gradient(model, params, batch, loss, steps, inner_lr, order, "loop")
    return counter.get_total_flops() / 1e9


def matmul_peak(
    dtype: torch.dtype = torch.float32, size: int = 2048, seconds: float = 1.0, device: str | torch.device = "cpu"
) -> float:
    """GFLOP/s of a square matrix product in `dtype` on `device` (best of repeated runs over about
    `seconds`); on the CPU, on torch's current intra-op threads.

    The product is `size` square, or smaller where one product of that size would take longer than
    `seconds`: a CPU without bfloat16 units (no AVX-512 BF16, no AMX) emulates bfloat16 at well under a
    GFLOP/s, where a 2048-square product takes about a minute. Such a peak is measured on the largest
    power-of-two size from 256 up whose product fits the time, so it costs seconds, not minutes.
    """
    device = torch.device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def operands(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=generator).to(device, dtype)
        return a, torch.randn(n, n, generator=generator).to(device, dtype)

    def once(a: torch.Tensor, b: torch.Tensor) -> float:
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        return time.perf_counter() - start

    n = min(size, 256)
    a, b = operands(n)
    torch.mm(a, b)  # warm-up: the library picks its kernel on the first call
    sync()
    while n < size and once(a, b) * 8 <= seconds:  # the next size does 8 times the work
        n = min(2 * n, size)
        a, b = operands(n)
        torch.mm(a, b)
        sync()
    flop = 2 * n**3
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        best = min(best, once(a, b))
        runs += 1
    return flop / best / 1e9
