"""The pretrained baseline of Finn et al. (2017): one model fit to all tasks jointly, then fine-tuned.

It answers the question MAML must beat: is meta-learning better than plain transfer learning
from the same amount of task data?
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional import Params, forward, params_of
from ..losses import LossFn, get_loss
from ..progress import tqdm
from ..tasks import TaskDistribution


def pretrain(
    model: nn.Module,
    tasks: TaskDistribution,
    iterations: int,
    meta_batch: int = 25,
    lr: float = 1e-3,
    loss_fn: str | LossFn = "mse",
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> Params:
    """Train `model`'s parameters with Adam on the pooled support and query points of sampled tasks."""
    loss = get_loss(loss_fn)
    params = params_of(model)
    device, dtype = next(iter(params.values())).device, next(iter(params.values())).dtype
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    bar = tqdm(range(iterations), desc="pretrain baseline", disable=not progress, leave=False)
    for _ in bar:
        batch = tasks.sample(meta_batch, generator).to(device, dtype)
        x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
        y = torch.cat([batch.support_y, batch.query_y], 1).flatten(0, 1)
        value = loss(forward(model, params, x), y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{value.item():.3f}", refresh=False)
    return {k: v.detach() for k, v in params.items()}
