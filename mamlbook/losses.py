"""Losses by name, so configurations and checkpoints can store them as strings."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]

LOSSES: dict[str, LossFn] = {
    "mse": F.mse_loss,
    "bce": F.binary_cross_entropy_with_logits,
    "ce": F.cross_entropy,
}


def get_loss(name_or_fn: str | LossFn) -> LossFn:
    if callable(name_or_fn):
        return name_or_fn
    try:
        return LOSSES[name_or_fn]
    except KeyError:
        raise ValueError(f"unknown loss {name_or_fn!r}; known losses: {', '.join(sorted(LOSSES))}") from None
