"""One meta-gradient problem as plain arrays (`MetaInputs`), and the PyTorch module and tensors
it stands for: what every implementation of the cross-framework harness starts from."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ...models import SineMLP
from ...models.conv import conv_block
from ...tasks import TaskBatch

Arrays = dict[str, np.ndarray]
Result = tuple[float, Arrays]

ARCHS = ("sine", "conv")


class TinyConvNet(nn.Module):
    """Two of Conv4's blocks (3x3 conv, batch norm on the batch's own statistics, ReLU, 2x2 max-pool)
    and a linear head: the smallest net with every layer of Conv4, for float64 checks.

    Input `[N, 1, side, side]` with `side` divisible by 4; output `[N, n_way]`.
    """

    def __init__(self, n_way: int = 3, hidden: int = 8, side: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_block(1, hidden), conv_block(hidden, hidden), nn.Flatten())
        self.head = nn.Linear(hidden * (side // 4) ** 2, n_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True)
class MetaInputs:
    """One meta-gradient problem as plain arrays, the only thing the implementations share.

    `arch` "sine": SineMLP (1-40-40-1, ReLU, MSE); `support_x, support_y: [B, S, 1]`.
    `arch` "conv": TinyConvNet (cross-entropy); `support_x: [B, S, 1, H, W]`, `support_y: [B, S]` int64.
    The query arrays have the same layout with Q examples. `order` 2 is MAML, 1 first-order MAML.
    """

    arch: str
    weights: Arrays = field(repr=False)
    support_x: np.ndarray = field(repr=False)
    support_y: np.ndarray = field(repr=False)
    query_x: np.ndarray = field(repr=False)
    query_y: np.ndarray = field(repr=False)
    inner_lr: float
    steps: int
    order: int = 2

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; known: {', '.join(ARCHS)}")
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, not {self.order}")

    @property
    def loss(self) -> str:
        return "mse" if self.arch == "sine" else "ce"

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.weights.values())).dtype

    @property
    def tasks(self) -> int:
        return self.support_x.shape[0]

    def with_(self, **changes: Any) -> MetaInputs:
        """A copy with some fields changed: `inputs.with_(steps=5)`."""
        return replace(self, **changes)


def torch_module(inputs: MetaInputs) -> nn.Module:
    """The PyTorch module whose parameter names and shapes `inputs.weights` has, in its dtype."""
    if inputs.arch == "sine":
        module: nn.Module = SineMLP()
    else:
        head = inputs.weights["head.weight"]
        hidden = inputs.weights["body.0.0.weight"].shape[0]
        side = 4 * round((head.shape[1] / hidden) ** 0.5)
        module = TinyConvNet(n_way=head.shape[0], hidden=hidden, side=side)
    return module.to(torch.float64 if inputs.dtype == np.float64 else torch.float32)


def torch_weights(inputs: MetaInputs) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v)) for k, v in inputs.weights.items()}


def torch_batch(inputs: MetaInputs) -> TaskBatch:
    arrays = (inputs.support_x, inputs.support_y, inputs.query_x, inputs.query_y)
    return TaskBatch(*(torch.from_numpy(np.array(a)) for a in arrays))


def numpy_grads(grads: dict[str, torch.Tensor]) -> Arrays:
    return {k: g.detach().cpu().numpy() for k, g in grads.items()}
