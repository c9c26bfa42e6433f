"""A process's share of a meta-batch split over processes: which tasks it holds and how to combine.

Its own module, below `rollout` and `estimators` (which take a share) and `parallel` (which makes
them), so that each imports it at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["TaskShare"]


@dataclass(frozen=True)
class TaskShare:
    """Tasks `[start, stop)` of a meta-batch of `total`, held by this process; `group` combines the
    processes' values (`Nav2DParallel`: `sum(tensor)`, `max(int)`)."""

    start: int
    stop: int
    total: int
    group: Any

    @property
    def tasks(self) -> int:
        return self.stop - self.start

    def sum(self, x: Tensor) -> Tensor:
        """`x` summed over the processes (the same result on every one)."""
        return self.group.sum(x)

    def max(self, n: int) -> int:
        """The largest of the processes' `n`."""
        return self.group.max(n)

    def gather(self, per_task: Tensor, totals: Tensor) -> tuple[Tensor, Tensor]:
        """Every task's row of `per_task: [tasks, K]` as `[total, K]`, and `totals: [J]` summed over
        the processes, in one all-reduce (each row is one process's, added to zeros: exact)."""
        k = per_task.shape[1]
        flat = per_task.new_zeros(self.total * k + totals.numel())
        flat[self.start * k : self.stop * k] = per_task.reshape(-1)
        flat[self.total * k :] = totals.to(flat.dtype)
        flat = self.sum(flat)
        return flat[: self.total * k].view(self.total, k), flat[self.total * k :]
