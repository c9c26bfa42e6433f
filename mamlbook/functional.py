"""The functional core: a model's parameters as a plain dict, and a call that uses them.

Meta-learning differentiates through parameter updates, so parameters must be values we can
replace, not attributes patched in place. `functional_call` runs a module with any such dict.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]


def params_of(model: nn.Module, requires_grad: bool = True) -> Params:
    """A detached copy of the model's parameters: the meta-learner's initial weights theta."""
    return {name: p.detach().clone().requires_grad_(requires_grad) for name, p in model.named_parameters()}


def forward(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Run `model` on `x` with `params` in place of its own parameters (buffers stay the model's)."""
    return functional_call(model, dict(params), (x,))


def detached(params: Mapping[str, Tensor]) -> Params:
    return {name: p.detach() for name, p in params.items()}


def check_params(model: nn.Module, params: Mapping[str, Tensor]) -> None:
    """Raise a clear error when `params` does not fit `model` (names or shapes differ)."""
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(params))
    extra = sorted(set(params) - set(own))
    if missing or extra:
        raise ValueError(
            f"parameters do not fit {type(model).__name__}: missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    for name, p in own.items():
        if tuple(params[name].shape) != tuple(p.shape):
            raise ValueError(
                f"parameter {name!r} has shape {tuple(params[name].shape)}, "
                f"but {type(model).__name__} needs {tuple(p.shape)}"
            )


def load_params_(model: nn.Module, params: Mapping[str, Tensor], saved: Mapping[str, Tensor]) -> None:
    """Copy `saved` into the live tensors of `params` in place (checked against `model` first), so
    that optimizers holding those tensors keep working after a resume."""
    check_params(model, saved)
    with torch.no_grad():
        for name, value in params.items():
            value.copy_(saved[name])
