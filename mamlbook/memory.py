"""Peak memory of a forward and backward pass, measured as peaks, not as sums.

Summing the bytes of every tensor autograd saves counts a tensor again each time an operation saves
it and never subtracts what a freed graph releases, so it grows with any work done, even when the
memory held at any moment does not. Two peaks instead:

- `SavedTensorMemory`: the peak of the bytes that autograd's graphs hold for backward at one time.
  Every tensor saved inside the block is registered by its storage (a storage saved by several
  operations counts once) and released when the last node saving it frees it (after its backward,
  or when the graph is dropped). It counts what graphs keep (activations, and the inputs and
  weights they save), not gradients or temporaries. It sees nothing that `torch.utils.checkpoint`
  saves or recomputes (checkpointing installs its own hooks, which take over inside its region),
  and `torch.func` transforms refuse saved-tensor hooks.
- `allocator_peak`: the most bytes held at one time, during a call, in CPU tensors that the call
  allocated, from `torch.profiler`'s memory events: every tensor, checkpointing's recomputation
  included, nothing outside tensors (Python objects, the framework's own code). Tensors allocated
  before the call are left out, also when the call frees them (the profiler sees no event for
  them). On a GPU, `torch.cuda.max_memory_allocated` measures the same from the allocator itself.

Example:
    >>> import torch
    >>> x = torch.ones(1000, requires_grad=True)
    >>> with SavedTensorMemory() as memory:
    ...     y = (x.exp() * 2).sin().sum()
    ...     y.backward()
    >>> memory.peak_bytes > 0, memory.live_bytes
    (True, 0)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

import torch
from torch import Tensor

__all__ = ["AllocatorPeak", "SavedTensorMemory", "allocator_peak", "native_stderr_silenced"]

MIB = 2**20


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or replaced stream: nothing buffered to lose
            stream.flush()


def _writes_to_descriptor_2(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 2
    except Exception:  # no descriptor (Jupyter's streams, pytest's capture, StringIO)
        return False


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block and is restored after it, also when
    the block raises, because native code writes there directly, past `sys.stderr`: torch.profiler's
    Kineto (a line per start and stop), TensorFlow on import (`mamlbook.bench.frameworks.quiet`).
    In a notebook those writes become a cell's stderr, which `jupyter-book build -W` fails on.

    Python's own `sys.stderr` keeps writing where it did (warnings and tracebacks are not lost):
    where it is bound to descriptor 2, it is pointed at a copy of the original for the block. Native
    writes from every thread are dropped while the block runs: keep it short.
    """
    _flush_python_streams()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a detached process): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    python_stderr, kept = sys.stderr, None
    try:
        if _writes_to_descriptor_2(python_stderr):
            kept = open(saved, "w", buffering=1, closefd=False, errors="backslashreplace")
            sys.stderr = kept
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_python_streams()
        os.dup2(saved, 2)
        if kept is not None:
            if sys.stderr is kept:
                sys.stderr = python_stderr
            kept.close()
        os.close(saved)
        os.close(devnull)


class _Packed:
    """What the graph keeps for one saved tensor: a detached alias of it (autograd restores the
    tensor's place in the graph when it unpacks, and a detached alias holds no reference back to the
    graph, so freeing the graph frees this object at once)."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


class SavedTensorMemory:
    """`with SavedTensorMemory() as m:` around a forward and backward; then `m.peak_bytes`, the most
    bytes of distinct storages that autograd's graphs held at one time (see the module docstring).

    `total_bytes` is the sum over every save of the tensor's bytes, the measure that is not a peak,
    kept for comparison; `live_bytes` is what graphs still hold now (0 once every graph built in the
    block has been backpropagated through or dropped). Tensors saved outside the block are not seen.
    """

    def __init__(self) -> None:
        self.peak_bytes = 0
        self.total_bytes = 0
        self.live_bytes = 0
        self._count: dict[Any, int] = {}
        self._size: dict[Any, int] = {}
        self._lock = threading.Lock()  # backward may free saved tensors from the engine's threads
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB

    @property
    def total_mib(self) -> float:
        return self.total_bytes / MIB

    def __enter__(self) -> SavedTensorMemory:
        self._hooks.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._hooks.__exit__(kind, error, trace)

    def _pack(self, tensor: Tensor) -> _Packed:
        try:
            storage = tensor.untyped_storage()
            key: Any = (str(storage.device), storage.data_ptr())
            size = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # no plain storage (sparse, some subclasses)
            key, size = None, tensor.numel() * tensor.element_size()
        packed = _Packed(tensor.detach())
        if key is None:
            key = ("tensor", id(packed))
        with self._lock:
            self.total_bytes += tensor.numel() * tensor.element_size()
            count = self._count.get(key, 0)
            if count == 0:
                self._size[key] = size
                self.live_bytes += size
                self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            self._count[key] = count + 1
        # The storage cannot be freed, nor its address reused, while `packed` holds the alias.
        weakref.finalize(packed, self._release, key)
        return packed

    @staticmethod
    def _unpack(packed: _Packed) -> Tensor:
        return packed.tensor

    def _release(self, key: Any) -> None:
        with self._lock:
            count = self._count.pop(key) - 1
            if count:
                self._count[key] = count
            else:
                self.live_bytes -= self._size.pop(key)


@dataclass(frozen=True)
class AllocatorPeak:
    """`allocator_peak`'s answer: bytes in the CPU tensors that the call allocated."""

    peak_bytes: int  # the most held at one time during the call
    end_bytes: int  # still held when the call returned (its result, caches it filled)
    result: Any

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB


def allocator_peak(fn: Callable[[], Any]) -> AllocatorPeak:
    """Call `fn()` under `torch.profiler` with memory profiling: the most bytes held at one time in
    CPU tensors allocated during the call (see the module docstring).

    A running sum of the profiler's allocation (+) and free (-) events in time order. The profiler
    records no event for freeing a tensor allocated before it started, so those never enter the sum.
    """
    from torch.profiler import ProfilerActivity, profile

    # Kineto logs every start and stop natively, with a warning when a tensor from before is freed.
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda event: event[0]):  # stable: ties keep their order
        live += nbytes
        peak = max(peak, live)
    return AllocatorPeak(peak, live, result)
