"""Reduced-precision matrix products for any strategy: `precision="bf16"` or `"fp16"`.

Mixed precision in the usual sense (autocast, on the CPU and on CUDA): the matrix products and
convolutions of the forward pass, and of the inner loop's own backward passes, run in bfloat16 or
float16 on the hardware's matrix units, while the parameters, every inner update, the losses and
the meta-gradient accumulate in the parameters' precision (float32). Nothing is lowered unless asked:
the default, `"fp32"`, is full precision (whatever the parameters' dtype is, float64 included).

Why it needs care in MAML: the second-order term of the meta-gradient, `-alpha H g`, is a product of
small numbers computed through the inner loop's backward, and bfloat16 keeps 8 bits of mantissa
(float16 10): how much of that term survives is measured against float64 in book/faster.md, not
assumed. Autocast's state belongs to a thread, so engines that run tasks on worker threads carry it
there (`autocast_state`, `entered`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "PRECISIONS",
    "AutocastState",
    "autocast_state",
    "check_lowers",
    "check_precision",
    "entered",
    "reduced_precision",
]

# Name -> the dtype the matrix products run in (None: no autocast, the parameters' own precision).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str | None) -> str:
    """The precision's name ("fp32" for None); a clear error for anything else."""
    name = "fp32" if precision is None else precision
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)} (fp32 is full precision)")
    return name


def check_lowers(precision: str | None, dtype: torch.dtype) -> str:
    """`check_precision`, and that reduced precision has something to lower: autocast casts float32
    only, so bf16 or fp16 asked for float64 parameters would silently change nothing."""
    name = check_precision(precision)
    if name != "fp32" and dtype != torch.float32:
        raise ValueError(f"precision={name!r} lowers float32 parameters' matrix products; these are {dtype}")
    return name


def _device_type(device: torch.device | str) -> str:
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"reduced precision runs on the CPU or CUDA, not on {kind!r}")
    return kind


@contextlib.contextmanager
def reduced_precision(precision: str | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block's matrix products in `precision` on `device` (autocast); "fp32"/None: unchanged."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        yield
        return
    with torch.autocast(_device_type(device), dtype=dtype):
        yield


@dataclass(frozen=True)
class AutocastState:
    """Whether autocast is on in the calling thread, per device type, and at which dtype."""

    cpu: torch.dtype | None
    cuda: torch.dtype | None


def autocast_state() -> AutocastState:
    """The calling thread's autocast settings, to re-enter in a worker thread (`entered`)."""

    def one(kind: str) -> torch.dtype | None:
        return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None

    return AutocastState(cpu=one("cpu"), cuda=one("cuda") if torch.cuda.is_available() else None)


@contextlib.contextmanager
def entered(state: AutocastState) -> Iterator[None]:
    """The autocast settings `state` recorded, entered in this thread."""
    with contextlib.ExitStack() as stack:
        for kind, dtype in (("cpu", state.cpu), ("cuda", state.cuda)):
            if dtype is not None:
                stack.enter_context(torch.autocast(kind, dtype=dtype))
        yield
