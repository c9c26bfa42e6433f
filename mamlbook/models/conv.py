"""Conv4, the few-shot image classifier of Finn et al. (2017) and Vinyals et al. (2016)."""

from __future__ import annotations

from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm on the batch's own statistics, ReLU, 2x2 max-pooling."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        # No running statistics: every forward pass normalizes with the statistics of the batch it
        # sees (the transductive setting MAML uses), so train and test behave the same.
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four conv blocks of `hidden` filters, then a linear head with one logit per way.

    Input `[N, in_channels, 28, 28]` (Omniglot) gives features `[N, hidden]` after four poolings;
    output `[N, n_way]`. `body` and `head` are separate so that ANIL can adapt the head alone.
    """

    def __init__(self, n_way: int = 5, in_channels: int = 1, hidden: int = 64, image_size: int = 28) -> None:
        super().__init__()
        self.n_way = n_way
        self.body = nn.Sequential(
            conv_block(in_channels, hidden),
            conv_block(hidden, hidden),
            conv_block(hidden, hidden),
            conv_block(hidden, hidden),
            nn.Flatten(),
        )
        side = image_size
        for _ in range(4):
            side //= 2
        self.head = nn.Linear(hidden * side * side, n_way)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))
