"""Checkpointing across inner steps: what the graph keeps does not grow with the number of steps."""

from __future__ import annotations

import torch

from mamlbook import query_losses
from mamlbook.models import Conv4
from mamlbook.tasks import TaskBatch


def batch() -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    return TaskBatch(
        torch.rand(2, 3, 1, 16, 16, generator=g),
        torch.arange(3).repeat(2, 1),
        torch.rand(2, 3, 1, 16, 16, generator=g),
        torch.arange(3).repeat(2, 1),
    )


def saved_bytes(strategy: str, steps: int) -> int:
    """Bytes autograd holds for the backward after the forward (tensors seen by a pack hook)."""
    torch.manual_seed(0)
    model = Conv4(n_way=3, hidden=8, image_size=16)
    params = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = query_losses(model, params, batch(), "ce", steps, 0.4, 2, strategy)
    assert losses.requires_grad
    return sum(seen.values())


def test_checkpointed_graph_does_not_grow_with_steps() -> None:
    one, six = saved_bytes("checkpointed", 1), saved_bytes("checkpointed", 6)
    plain_one, plain_six = saved_bytes("folded", 1), saved_bytes("folded", 6)
    assert plain_six > 2 * plain_one  # without checkpointing, every step's graph is kept
    assert six < 1.5 * one  # with it, only each step's parameters are
    assert six < plain_six / 2
