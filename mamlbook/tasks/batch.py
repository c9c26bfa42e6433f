"""A meta-batch of tasks as four stacked tensors, the shape every engine consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class TaskBatch:
    """B tasks, each a support set to adapt on and a query set to score the adaptation.

    Shapes: `support_x: [B, S, *x_shape]`, `support_y: [B, S, *y_shape]`, and likewise the query
    set with Q examples. `info` holds per-task descriptors (e.g. amplitude, phase) of shape [B].
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {t.shape[0] for t in (self.support_x, self.support_y, self.query_x, self.query_y)}
        if len(sizes) != 1:
            raise ValueError(f"support and query tensors disagree on the number of tasks: {sizes}")
        if self.support_x.shape[1] != self.support_y.shape[1]:
            raise ValueError("support_x and support_y hold different numbers of examples")
        if self.query_x.shape[1] != self.query_y.shape[1]:
            raise ValueError("query_x and query_y hold different numbers of examples")

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def per_task(self, fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> Tensor:
        """`fn(support_x, support_y, query_x, query_y)` of each task in turn, stacked: the plain loop
        that every strategy is checked against."""
        return torch.stack(
            [fn(self.support_x[i], self.support_y[i], self.query_x[i], self.query_y[i]) for i in range(len(self))]
        )

    def __getitem__(self, index: int | slice) -> TaskBatch:
        """Task `i` as a batch of one (an int keeps the task dimension), or a slice of tasks."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return TaskBatch(
            self.support_x[index],
            self.support_y[index],
            self.query_x[index],
            self.query_y[index],
            {k: v[index] for k, v in self.info.items()},
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to `device`; `dtype` converts floating-point tensors only (labels stay integers)."""

        def move(t: Tensor) -> Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return replace(
            self,
            support_x=move(self.support_x),
            support_y=move(self.support_y),
            query_x=move(self.query_x),
            query_y=move(self.query_y),
            info={k: move(v) for k, v in self.info.items()},
        )
