"""Task-parallel MAML-RL on `torch.distributed`: `Nav2DTrainer`'s meta-iteration split over processes.

As in supervised meta-training (`train.distributed`, whose `TaskParallel` this extends: the process
group, the agreement checks, rank 0's writes), a meta-batch's tasks are the unit to split: each rank
takes a contiguous share (`shares`), samples its tasks' trajectories, adapts to them and computes their
terms of the outer loss, of its gradient and of TRPO's curvature products; the ranks add those up.
Unlike supervised training, TRPO's outer step needs more than one sum: the conjugate gradient's
products and the line search's values are sums over tasks at weights that depend on earlier sums. In
order, per meta-iteration (P parameters, B tasks; every all-reduce a sum unless said):

1. goals: every rank draws the B goals from the one seeded generator (no communication).
2. each rollout (two with an inner step): every rank runs its tasks' episodes, but each step draws the
   noise of all B tasks and keeps its share's, so that its episodes are the ones one process samples.
   One process stops when every episode of the meta-batch has ended; the ranks take the maximum of
   their steps (an all-reduce of one integer) and a rank that stopped sooner draws the noise of the
   steps it skipped: every rank's generator is where one process leaves it, which keeps the next
   rollout, the next meta-iteration and a checkpoint the same.
3. the meta-batch (`build_meta_batch`): one all-reduce of 3B + 2 numbers, the two things not per task:
   the outer advantages' scale (sum of squares, count of steps) and DiCE's leave-one-out baseline (each
   rank's goals and post-adaptation returns in its slots, zeros elsewhere: a gather).
4. the outer loss and its gradient: one all-reduce of P + 1.
5. each conjugate-gradient product with the KL's Hessian: one all-reduce of P (at most `cg_iters`;
   "exact" takes one product more, the curvature along the step, which "gauss-newton" accumulates from
   the iterations). The damping is added once, after the sum.
6. each trial of the line search: its loss and KL, one all-reduce of 2.
7. the returns logged: one all-reduce of 2.

So a TRPO meta-iteration takes 2 + 1 + 1 + (at most `cg_iters`, one more for "exact") + (at most
`max_backtracks`) + 1 all-reduces, all but the P-sized ones a few numbers: 16 for "gauss-newton" and 17
for "exact" when the first trial is accepted at the default settings. (PPO: one of P + 1 per epoch,
then 2 for its last evaluation.) What cannot be summed more cheaply: the KL's Hessian is a sum over
tasks of Gauss-Newton matrices (`rl.curvature`), but each is P x P (10,604^2 at the paper's size), so it
is applied, never formed, and conjugate gradient's next direction depends on the last product: one
all-reduce per product. It is cheap beside the product: P numbers, against some 2 x 10^4 P
floating-point operations per task at the paper's 20 x 100 samples per task.

An all-reduce gives every rank the same result, so every rank takes the same conjugate-gradient
iterations, the same line-search decision and the same weights; they equal one process's up to the
order of the sums over tasks. `tests/test_rl_distributed.py` measures it in float64 on tiny batches:
1e-14 after two meta-iterations with five conjugate-gradient steps; with ten, whose last steps amplify
rounding on a batch that small, 1e-9 (1e-4 in one case), as much as the single process moves when
only the grouping of its own task sums changes. Rank 0 alone writes the run folder; a resumed run is
read by rank 0 and sent to all, and may be resumed with another number of processes.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..train.distributed import TaskParallel, shares
from .share import TaskShare


def describe(trainer: Any) -> dict[str, Any]:
    """What must be equal on every rank: the settings (and how TRPO's step is taken) and the weights' shapes."""
    return {
        "config": trainer.config.to_dict(),
        "curvature": trainer.config.curvature,
        "parameters": {k: [list(v.shape), str(v.dtype)] for k, v in trainer.params.items()},
    }


def goals_digest(goals: Tensor) -> str:
    """A hash of the goals' values, shape and dtype."""
    t = goals.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)} {t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Nav2DParallel(TaskParallel):
    """One rank's part in a task-parallel MAML-RL run: `share(tasks)` for the meta-iteration, and the
    sums it needs. Counts its all-reduces (`calls`: (kind, numbers) each) and their seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self.seconds = 0.0

    def start(self, trainer: Any) -> None:  # type: ignore[override]
        """Check that every rank builds the same run, then give every rank rank 0's weights."""
        self.agree("the run's settings", describe(trainer), "; every process must be started with the same settings")
        shares(trainer.config.meta_batch, self.world)  # a meta-batch smaller than the world is refused here
        self.broadcast(trainer)

    def broadcast(self, trainer: Any) -> None:  # type: ignore[override]
        with torch.no_grad():
            for t in trainer.params.values():
                dist.broadcast(t.detach(), src=0)

    def share(self, tasks: int, goals: Tensor | None = None) -> TaskShare:  # type: ignore[override]
        """This rank's share of a meta-batch of `tasks`; with `goals` (the first time), a check that every
        rank drew the same."""
        if goals is not None and not self.checked_data:
            hint = " at the first step: every process must draw them from the same seed"
            self.agree("the goals", goals_digest(goals), hint)
            self.checked_data = True
        part = shares(tasks, self.world)[self.rank]
        return TaskShare(part.start, part.stop, tasks, self)

    def sum(self, x: Tensor) -> Tensor:
        x = x.detach().clone().contiguous()
        started = time.perf_counter()
        dist.all_reduce(x)
        self.seconds += time.perf_counter() - started
        self.calls.append(("sum", x.numel()))
        return x

    def max(self, n: int) -> int:
        x = torch.tensor([n], dtype=torch.int64)
        started = time.perf_counter()
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        self.seconds += time.perf_counter() - started
        self.calls.append(("max", 1))
        return int(x.item())


__all__ = ["Nav2DParallel", "TaskShare", "describe"]
