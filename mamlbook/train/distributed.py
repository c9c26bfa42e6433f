"""Task-parallel meta-training on `torch.distributed`, and the lock that keeps one run per folder.

A meta-batch is a set of independent tasks, so tasks are the unit to split: each process (rank)
adapts its share of the meta-batch and computes the meta-gradient of that share with whatever
strategy and algorithm the Trainer runs, then the ranks combine their gradients in ONE all-reduce.

Why not `DistributedDataParallel`: its hooks fire only when its own forward runs. MAML's passes go
through `functional_call` on the module inside, where DDP never sees them, and the gradients stay
unsynchronized without an error; and DDP's reducer does not support the double backward of
second-order MAML. So the meta-gradient is all-reduced here, after the backward, by hand.

The rules, each of which keeps a distributed run equal to the single-process run of the same seed:

- every rank samples the FULL meta-batch from the same seeded generator and keeps a contiguous
  slice (`shares`: as even as possible, the first `B % W` ranks get one task more). The union is
  the single-process meta-batch, and the generator's state is the same on every rank, so a
  checkpoint does not depend on which rank wrote it, nor on how many ranks there were;
- each rank's gradient is a mean over its own `n_r` tasks: the ranks all-reduce (sum) `n_r` times
  their gradients of all meta-parameters (weights and learned inner rates), their loss and their
  floating-point buffers in one flattened tensor and divide by the meta-batch `B`: the
  single-process mean up to the order of a floating-point sum (1e-16 relative in float64), exact
  for uneven shares. Integer buffers (batch norm's `num_batches_tracked`) add up their increments;
- every rank then holds the same reduced gradient, so the Trainer's divergence check, gradient
  clipping and optimizer step agree: parameters stay identical and all ranks stop together;
- the parameters, learned rates and buffers are broadcast from rank 0 at the start and after a
  resume; a resumed run reads its checkpoint on rank 0 and broadcasts it (no shared disk needed);
- validation runs on every rank, identically: rank 0 alone would take as long (the others would
  wait at the next all-reduce), and this way needs no communication and keeps every state the
  batch-norm statistics included, the same on all ranks. Only rank 0 logs it;
- only rank 0 writes (checkpoints, metrics, plots, the folder lock). Anything it does that can fail
  runs through `TaskParallel.on_rank0`, which broadcasts the outcome: a failure there raises on
  every rank instead of leaving the others waiting at a barrier;
- at the start the ranks all-gather their settings (config, objects, algorithm, loss, parameter
  shapes) and at the first step a hash of the meta-batch: a disagreement is a `DistributedError`
  that names the rank and the setting, on every rank.

Running statistics of batch norm (MAML++'s per-step BN) are the one thing not reproduced exactly:
each rank updates them with its own tasks and they are averaged, weighted by tasks. They never
enter the meta-gradient (the models normalize with batch statistics in training), only eval mode.

Since the result of a step does not depend on the number of ranks, a run may be resumed with
another world size: it continues the same run up to floating-point summation order.

The run-folder lock (`run_lock`) is independent of the above: a run writing a folder holds
`run.lock` there (host, pid, start time; created with O_CREAT|O_EXCL), and another run into that
folder is refused with `RunLockedError`. A lock whose process is gone (same host) is stale and
taken over; the lock is removed when the run ends.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pickle
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..tasks import TaskBatch
from .checkpoint import load_checkpoint

T = TypeVar("T")
# The hooks below take the `Trainer` itself (not imported: it imports this module).
TrainerLike = Any

LOCK_NAME = "run.lock"


class DistributedError(RuntimeError):
    """The processes of a distributed run disagree (settings, data) or cannot run together."""


class RunLockedError(RuntimeError):
    """Another live run is writing the run folder."""


# ----- the process group -----
def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group (torchrun sets these variables)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def default_backend() -> str:
    """gloo for CPU tensors, and NCCL for CUDA tensors where there is a GPU."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


_JOINED_HERE = False


def init_from_env(timeout: timedelta | None = None, backend: str | None = None) -> int:
    """Join the process group that torchrun's environment describes; returns the world size.

    Does nothing (and returns 1) outside torchrun or with one process; returns the group's size if
    one is initialized already. With a GPU, process `LOCAL_RANK` makes GPU `LOCAL_RANK` its current
    device, so a config's `device="cuda"` means each process's own GPU.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return 1
    if not dist.is_available():
        raise DistributedError("this build of torch has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
    dist.init_process_group(backend or default_backend(), **({} if timeout is None else {"timeout": timeout}))
    global _JOINED_HERE
    if not _JOINED_HERE:
        atexit.register(shutdown)
    _JOINED_HERE = True
    return dist.get_world_size()


def shutdown() -> None:
    """Leave the process group, if `init_from_env` joined it."""
    global _JOINED_HERE
    if _JOINED_HERE and dist.is_initialized():
        dist.destroy_process_group()
    _JOINED_HERE = False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _local_entry(rank: int, fn: Callable[..., Any], world: int, port: int, seconds: float, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=seconds))
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def launch_local(
    fn: Callable[..., Any], world: int, *args: Any, timeout: float = 600.0, collective_timeout: float = 60.0
) -> None:
    """Run `fn(rank, *args)` on `world` new local processes joined in a gloo group on 127.0.0.1.

    For tests and benchmarks on one machine (torchrun is the launcher for real runs). `fn` must be
    importable by name (a module-level function); each process gets one intra-op thread unless
    OMP_NUM_THREADS says otherwise. A process that raises fails the whole launch with its traceback;
    all are killed after `timeout` seconds; a collective waits at most `collective_timeout` seconds.
    """
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _local_entry,
        args=(fn, world, free_port(), collective_timeout, args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise TimeoutError(f"{getattr(fn, '__name__', fn)} on {world} processes did not end in {timeout:.0f} s")


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shares(tasks: int, world: int) -> list[slice]:
    """Each rank's contiguous slice of `tasks` tasks, as even as possible: the first `tasks % world`
    ranks get one more. `shares(5, 2)` is `[slice(0, 3), slice(3, 5)]`."""
    if world < 1 or tasks < world:
        raise DistributedError(f"{tasks} tasks cannot be shared by {world} processes: each needs at least one")
    base, extra = divmod(tasks, world)
    out, start = [], 0
    for rank in range(world):
        stop = start + base + (rank < extra)
        out.append(slice(start, stop))
        start = stop
    return out


def batch_digest(batch: TaskBatch) -> str:
    """A hash of a meta-batch's tensors (values, shapes, dtypes): equal batches, equal digests."""
    h = hashlib.sha256()
    for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y):
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _differences(a: Any, b: Any, rank: int, where: str = "") -> list[str]:
    """Where rank `rank`'s nested value `b` differs from rank 0's `a`, as readable strings."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            path = f"{where}.{key}" if where else str(key)
            found += _differences(a.get(key, "<missing>"), b.get(key, "<missing>"), rank, path)
        return found
    return [] if a == b else [f"{where or 'value'} = {b!r} (rank 0: {a!r})"]


class TaskParallel:
    """One rank's part in task-parallel meta-training: the hooks the Trainer calls.

    `start` (agreement and broadcast), `share` (this rank's slice of the meta-batch), `reduce` (the one
    all-reduce), `on_rank0` (run something on the writer, with its outcome on every rank).
    """

    def __init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise DistributedError(
                "no process group: launch with torchrun or call torch.distributed.init_process_group"
            )
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.count, self.total = 0, 0
        self.checked_data = False
        self._increments_from: dict[str, Tensor] = {}

    @classmethod
    def resolve(cls, distributed: bool | TaskParallel | None) -> TaskParallel | None:
        """`None` (auto): distributed when a process group of 2+ ranks exists or torchrun describes one;
        `True`: the same, but an error without a process group; `False`: never."""
        if isinstance(distributed, TaskParallel):
            return distributed
        if distributed is False:
            return None
        if distributed not in (None, True):
            raise TypeError(f"distributed must be None, True or False; got {distributed!r}")
        world = init_from_env()
        if world > 1:
            return cls()
        if distributed and not (dist.is_available() and dist.is_initialized()):
            raise DistributedError(
                "distributed=True needs a process group: launch with torchrun (which sets RANK, WORLD_SIZE, "
                "MASTER_ADDR, MASTER_PORT) or call torch.distributed.init_process_group first"
            )
        return None

    # ----- agreement -----
    def agree(self, what: str, value: Any, hint: str = "") -> None:
        """All-gather `value` (picklable) and raise `DistributedError` on every rank if any differs."""
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        for rank, other in enumerate(values):
            if other != values[0]:
                diff = "; ".join(_differences(values[0], other, rank)[:5])
                raise DistributedError(f"the {self.world} processes disagree on {what}: rank {rank} has {diff}{hint}")

    def start(self, trainer: TrainerLike) -> None:
        """Check that every rank builds the same run, then give every rank rank 0's weights."""
        self.agree(
            "the run's settings",
            describe(trainer),
            "; every process must be started with the same settings and objects",
        )
        shares(trainer.config.meta_batch, self.world)  # a meta-batch smaller than the world is refused here
        self.broadcast(trainer)

    def broadcast(self, trainer: TrainerLike) -> None:
        """Rank 0's parameters, learned rates and buffers, on every rank."""
        tensors = [*trainer.params.values(), *trainer.rates.values(), *trainer.model.buffers()]
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.detach(), src=0)

    # ----- one step -----
    def share(self, batch: TaskBatch, model: nn.Module) -> TaskBatch:
        """This rank's slice of the full meta-batch (checked against the other ranks' at the first step)."""
        if not self.checked_data:
            self.agree(
                "the meta-batch",
                batch_digest(batch),
                " at the first step: every process must draw the same tasks from the same seed, from the same data",
            )
            self.checked_data = True
        part = shares(len(batch), self.world)[self.rank]
        self.count, self.total = part.stop - part.start, len(batch)
        self._increments_from = {k: b.clone() for k, b in model.named_buffers() if not b.is_floating_point()}
        return batch[part]

    def reduce(self, loss: Tensor, meta_parameters: Sequence[Tensor], model: nn.Module) -> Tensor:
        """The meta-batch's loss and meta-gradient from this rank's share, in ONE all-reduce.

        On return every rank holds the same `.grad` on each meta-parameter (a `None` grad stays
        `None`) and the same buffers; the returned loss is the meta-batch's mean.
        """
        n, total = self.count, self.total
        if total == 0:
            raise DistributedError("reduce() before share(): no meta-batch was shared this step")
        device = meta_parameters[0].device if meta_parameters else loss.device
        dtype = functools.reduce(torch.promote_types, [p.dtype for p in meta_parameters], loss.dtype)
        buffers = list(model.named_buffers())
        floats = [b for _, b in buffers if b.is_floating_point()]
        counters = [(b, self._increments_from[k]) for k, b in buffers if not b.is_floating_point()]
        weighted = [loss.detach().reshape(1)]
        weighted += [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in meta_parameters]
        weighted += [b.reshape(-1) for b in floats]
        flat = torch.cat([t.to(device=device, dtype=dtype) for t in weighted]) * n
        size = flat.numel()
        if counters:
            flat = torch.cat([flat, *((b - b0).reshape(-1).to(device=device, dtype=dtype) for b, b0 in counters)])
        dist.all_reduce(flat)
        flat[:size] /= total
        pieces = iter(flat.split([1, *(p.numel() for p in meta_parameters), *(b.numel() for b in floats)]))
        reduced = next(pieces).reshape(()).to(loss.dtype)
        with torch.no_grad():
            for p in meta_parameters:
                piece = next(pieces)
                if p.grad is not None:
                    p.grad.copy_(piece.view(p.shape))
            for b in floats:
                b.copy_(next(pieces).view(b.shape))
            offset = size
            for b, b0 in counters:
                b.copy_(b0 + flat[offset : offset + b.numel()].round().view(b.shape).to(b.dtype))
                offset += b.numel()
        self.count = self.total = 0
        return reduced

    # ----- rank 0's work -----
    def on_rank0(self, fn: Callable[[], T]) -> T:
        """`fn()` on rank 0 alone; its result (or its exception) on every rank.

        Collective: every rank must call it at the same point. A failure on rank 0 raises the same
        exception everywhere, so no rank is left waiting for one that stopped.
        """
        box: list[Any] = [None, None]
        if self.rank == 0:
            try:
                box = [None, fn()]
            except Exception as error:  # propagated to every rank, then re-raised here
                box = [error, None]
                try:
                    pickle.dumps(error)
                except Exception:
                    box = [DistributedError(f"rank 0 failed: {type(error).__name__}: {error}"), None]
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise box[0]
        return box[1]

    def load(self, source: str | os.PathLike) -> dict[str, Any]:
        """A checkpoint read on rank 0 and sent to every rank (the other machines need no copy of it)."""
        return self.on_rank0(lambda: load_checkpoint(source))


def describe(trainer: TrainerLike) -> dict[str, Any]:
    """What must be equal on every rank: settings, objects, algorithm, loss and meta-parameter shapes."""
    loss = trainer.loss
    if not isinstance(loss, str):
        loss = f"{getattr(loss, '__module__', '?')}.{getattr(loss, '__qualname__', type(loss).__qualname__)}"
    return {
        "config": json.loads(json.dumps(trainer.config.to_dict(), default=str)),
        "objects": trainer.objects,
        "algorithm": dataclasses.asdict(trainer.algorithm),
        "loss": loss,
        "meta-parameters": {
            name: [list(v.shape), str(v.dtype)]
            for name, v in [*trainer.params.items(), *((f"rate:{k}", v) for k, v in trainer.rates.items())]
        },
    }


# ----- the run-folder lock -----
_HELD: dict[Path, list[Any]] = {}  # folder -> [depth, token, pid]: re-entrant within one process


def _start_time(pid: int) -> str | None:
    """The process's start time since boot (Linux), which tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process named in a lock on this host still runs (the same process, not a reused pid)."""
    pid = int(holder["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = holder.get("started")
    now = _start_time(pid)
    return started is None or now is None or started == now


def _read(lock: Path) -> tuple[str, dict[str, Any] | None]:
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return "", None
    try:
        holder = json.loads(text)
    except ValueError:
        return text, None
    return text, holder if isinstance(holder, dict) and "pid" in holder and "host" in holder else None


def _take_over(lock: Path, judged: str) -> None:
    """Move a stale lock out of the way, unless it changed since it was judged stale (then put it back)."""
    aside = lock.with_name(f".{LOCK_NAME}.{os.getpid()}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    try:
        if aside.read_text() != judged:
            with contextlib.suppress(FileExistsError):
                os.link(aside, lock)
    finally:
        aside.unlink(missing_ok=True)


def acquire_lock(folder: str | os.PathLike) -> Path:
    """Take `folder/run.lock` for this process (re-entrant); `RunLockedError` if a live run holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    held = _HELD.get(key)
    lock = key / LOCK_NAME
    if held is not None and held[2] == os.getpid():
        held[0] += 1
        return lock
    host, pid = socket.gethostname(), os.getpid()
    token = uuid.uuid4().hex
    record = {
        "host": host,
        "pid": pid,
        "started": _start_time(pid),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "token": token,
    }
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text, holder = _read(lock)
            if holder is None:
                try:
                    age = time.time() - lock.stat().st_mtime
                except FileNotFoundError:
                    continue  # gone meanwhile: try again
                if age < 2.0:
                    time.sleep(0.05)  # empty or partial: being written this instant, or left by a crash
                    continue
            elif holder["host"] != host or (holder["pid"] != pid and _alive(holder)):
                raise RunLockedError(
                    f"{folder} is being written by another run (pid {holder['pid']} on {holder['host']}, "
                    f"since {holder.get('since', '?')}): two runs writing one folder would corrupt it. Wait for "
                    f"it to end or choose another folder; if no run is writing there, delete {lock}"
                ) from None
            # Stale: its process is gone (or it is this process's own leftover): take it over.
            _take_over(lock, text)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        _HELD[key] = [1, token, pid]
        return lock


def release_lock(folder: str | os.PathLike) -> None:
    """Give back one hold of `folder`'s lock; the last removes the file (if it is still ours)."""
    key = Path(folder).resolve()
    held = _HELD.get(key)
    if held is None or held[2] != os.getpid():
        return
    held[0] -= 1
    if held[0] > 0:
        return
    del _HELD[key]
    lock = key / LOCK_NAME
    _, holder = _read(lock)
    if holder is not None and holder.get("token") == held[1]:
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold `folder`'s run lock for this process while the block runs (re-entrant)."""
    lock = acquire_lock(folder)
    try:
        yield lock
    finally:
        release_lock(folder)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike | None, parallel: TaskParallel | None = None) -> Iterator[None]:
    """The run lock for a whole run: in a distributed run rank 0 holds it, and a refusal raises on every
    rank (collective: every rank must enter). No folder: nothing to lock."""
    if folder is None:
        yield
        return
    if parallel is None:
        with run_lock(folder):
            yield
        return
    parallel.on_rank0(lambda: acquire_lock(folder))
    try:
        yield
    finally:
        if parallel.rank == 0:
            release_lock(folder)


__all__ = [
    "LOCK_NAME",
    "DistributedError",
    "RunLockedError",
    "TaskParallel",
    "acquire_lock",
    "batch_digest",
    "default_backend",
    "describe",
    "folder_lock",
    "free_port",
    "init_from_env",
    "launch_local",
    "launched_by_torchrun",
    "rank_and_world",
    "release_lock",
    "run_lock",
    "shares",
    "shutdown",
]
