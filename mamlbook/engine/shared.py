"""Layers whose weights every task shares, run as ordinary layers on plain batches of images.

ANIL adapts only the head, so the body's weights are the same for every task of a meta-batch. The
folded strategy would still run the body as grouped convolutions with the weights repeated per
task. Ordinary convolutions are faster, and on a CPU smaller batches are faster per image still
(the working set stays in cache): forward and backward of Conv4's body on 8 tasks of 75 images,
2 threads, took 1,100 ms grouped, 1,320 ms as one batch of 600 and 760 ms one task at a time. So
the body runs a few tasks at a time (`tasks_per_chunk`; one on a CPU, all on a GPU). Batch norm
needs care when a chunk holds several tasks, because the loop normalizes each task's support (or
query) set by its own statistics: it then runs per task on the folded layout, with the native
batch-norm kernel, so its double backward is PyTorch's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .chain import Layer, fold_input, layer_param


def per_task_batch_norm(
    x: Tensor, tasks: int, module: nn.BatchNorm2d, weight: Tensor | None, bias: Tensor | None
) -> Tensor:
    """Batch norm of `x: [B*N, C, H, W]` with each task's N images normalized by their own statistics."""
    if not (module.training or not module.track_running_stats):  # evaluation with running statistics
        return F.batch_norm(x, module.running_mean, module.running_var, weight, bias, False, 0.0, module.eps)
    if tasks == 1:
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=module.eps)
    bn, c, h, w = x.shape
    n = bn // tasks
    folded = x.reshape(tasks, n, c, h, w).transpose(0, 1).reshape(n, tasks * c, h, w)
    out = F.batch_norm(
        folded,
        None,
        None,
        None if weight is None else weight.repeat(tasks),
        None if bias is None else bias.repeat(tasks),
        training=True,
        eps=module.eps,
    )
    return out.reshape(n, tasks, c, h, w).transpose(0, 1).reshape(bn, c, h, w)


def default_chunk(x: Tensor) -> int:
    """Tasks per chunk: one on a CPU (cache-sized batches), all of them elsewhere (fill the device)."""
    return 1 if x.device.type == "cpu" else x.shape[0]


def shared_forward(
    params: Mapping[str, Tensor], x: Tensor, layers: Sequence[Layer], tasks_per_chunk: int | None = None
) -> Tensor:
    """`layers` with the shared `params` on `x: [B, N, ...]`, returned in the folded layout.

    The folded layout is what the rest of the chain (the per-task layers) takes: `[N, B*C, H, W]`
    for images, `[B, N, F]` for vectors.
    """
    chunk = tasks_per_chunk or default_chunk(x)
    pieces = [_plain_forward(params, part, layers) for part in x.split(chunk)]
    return fold_input(torch.cat(pieces))


def _plain_forward(params: Mapping[str, Tensor], x: Tensor, layers: Sequence[Layer]) -> Tensor:
    tasks, n = x.shape[:2]
    h = x.reshape(tasks * n, *x.shape[2:])
    for layer in layers:
        m, name = layer.module, layer.name
        weight, bias = layer_param(params, name, "weight"), layer_param(params, name, "bias")
        if isinstance(m, nn.Conv2d):
            h = F.conv2d(h, weight, bias, m.stride, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.BatchNorm2d):
            h = per_task_batch_norm(h, tasks, m, weight, bias)
        elif isinstance(m, nn.Linear):
            h = F.linear(h, weight, bias)
        else:  # per-element modules, pooling and Flatten(start_dim=1) act on each image alone
            h = m(h)
    return h.reshape(tasks, n, *h.shape[1:])
