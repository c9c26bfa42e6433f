"""The Gaussian MLP policy of MAML-RL, used through a parameter dict (`torch.func.functional_call`).

`pi(a | s) = N(mean(s), diag(exp(log_std))^2)` with `mean` a 2x100 ReLU MLP (no squashing) and a
state-independent learned `log_std`, 0 at the start (std 1). Every function takes the parameters
explicitly: a shared dict (leaves `[...]`) or a batched one with a leading task dimension
(`[T, ...]`, one adapted policy per task), which is run with `vmap` over the tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..functional import Params

LOG_2PI = math.log(2 * math.pi)


class GaussianMLPPolicy(nn.Module):
    """Observation `[..., obs_dim]` -> (mean `[..., act_dim]`, log_std `[..., act_dim]`)."""

    def __init__(self, obs_dim: int = 2, act_dim: int = 2, hidden: tuple[int, ...] = (100, 100), init_std=1.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, act_dim))
        self.mean = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        for m in self.mean:  # rllab's initialization: Glorot-uniform weights, zero biases
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.mean(obs)
        return mean, self.log_std.expand_as(mean)


def is_batched(policy: nn.Module, params: Mapping[str, Tensor]) -> bool:
    """Whether `params` carries a leading task dimension (one set of weights per task)."""
    return params["log_std"].dim() == policy.log_std.dim() + 1


def batched(params: Mapping[str, Tensor], tasks: int) -> Params:
    """The shared `params` as `[T, ...]` views, one per task: gradients w.r.t. them are per task."""
    return {k: v.unsqueeze(0).expand(tasks, *v.shape) for k, v in params.items()}


def distribution(policy: nn.Module, params: Mapping[str, Tensor], obs: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and log-std `[..., act_dim]` at `obs: [..., obs_dim]`; batched params need `obs: [T, ...]`."""
    if is_batched(policy, params):
        return vmap(lambda p, o: functional_call(policy, p, (o,)))(dict(params), obs)
    return functional_call(policy, dict(params), (obs,))


def gaussian_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """log N(actions; mean, exp(log_std)^2), summed over the action dimension: `[...]`."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(mean0: Tensor, log_std0: Tensor, mean1: Tensor, log_std1: Tensor) -> Tensor:
    """KL(N0 || N1) of diagonal Gaussians, summed over the action dimension: `[...]`."""
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1).pow(2)) / (2 * var1) - 0.5).sum(-1)


def log_prob(policy: nn.Module, params: Mapping[str, Tensor], obs: Tensor, actions: Tensor) -> Tensor:
    """log pi(actions | obs) under `params`: `[...]` for `obs: [..., obs_dim]`, `actions: [..., act_dim]`."""
    mean, log_std = distribution(policy, params, obs)
    return gaussian_log_prob(mean, log_std, actions)


def sample(
    policy: nn.Module,
    params: Mapping[str, Tensor],
    obs: Tensor,
    generator: torch.Generator | None = None,
    among: tuple[int, int] | None = None,
) -> Tensor:
    """Actions drawn from pi(. | obs), from `generator` alone: `[..., act_dim]` (not clipped).

    `among = (start, total)`: `obs: [T, ...]` are tasks `start` to `start + T` of `total`; the noise of
    all `total` is drawn and theirs kept, so that they get the actions a draw for all would give them."""
    with torch.no_grad():
        mean, log_std = distribution(policy, params, obs)
        if among is None:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        else:
            start, total = among
            noise = torch.randn((total, *mean.shape[1:]), generator=generator, dtype=mean.dtype)
            noise = noise[start : start + mean.shape[0]]
        return mean + torch.exp(log_std) * noise
