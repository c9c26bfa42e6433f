"""The regression network of Finn et al. (2017): 1-40-40-1 with ReLU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class SineMLP(nn.Module):
    """A fully connected net; `hidden=(40, 40)` is the paper's sinusoid model.

    Input `[N, in_features]`, output `[N, out_features]`.
    """

    def __init__(self, in_features: int = 1, hidden: Sequence[int] = (40, 40), out_features: int = 1) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
