"""When the strategy `auto` chose raises on a model: the loop instead, remembered per model structure.

`auto` checks a model's layers, the autograd.Functions its forward calls and, where it must, the
meta-gradient itself (`engine.verified`). A forward can still do what a batched strategy cannot run
(`.item()` or a branch on a tensor's value under vmap, a shape the folded layout does not take), and
then the user asked for a meta-gradient, not for vmap: the loop runs every model that runs at all,
and gives the reference meta-gradient, so it takes over. The fast strategy's error is kept, warned
about once and reported by `explain_auto`; an error the loop raises as well is the model's own and is
raised. Running out of memory is raised too: it says the meta-batch is too big, not that the strategy
is wrong, and the loop's smaller graphs would hide that. `meta_gradient` covers its backward as well;
`meta_loss` and `query_losses` only the forward, as their caller runs the backward. The Trainer
resolves "auto" once, so it has the checks of `explain_auto` but not this fallback.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch
from torch import nn

from .verified import first_line, structure_key

Result = TypeVar("Result")


class AutoFallbackWarning(UserWarning):
    """The strategy `auto` chose raised on a model, so the loop runs it instead."""


_FAILED: dict[tuple[Hashable, str, str], str] = {}


def _key(model: nn.Module, strategy: str) -> tuple[Hashable, str, str]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return structure_key(model), strategy, device.type


def failure(model: nn.Module, strategy: str) -> str | None:
    """The first line of the error `strategy` raised on a model of this structure, if it has."""
    return _FAILED.get(_key(model, strategy))


def with_fallback(model: nn.Module, strategy: str, compute: Callable[[str], Result]) -> Result:
    """`compute(strategy)`, or, if that raises, `compute("loop")` with the failure remembered and warned about once."""
    try:
        return compute(strategy)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        result = compute("loop")  # raises the model's own error if the loop fails too
        _FAILED[_key(model, strategy)] = first_line(exc)
        warnings.warn(
            f"strategy 'auto' chose {strategy!r} for {type(model).__name__}, which raised {first_line(exc)}; "
            "the loop runs this model from now on (explain_auto says so)",
            AutoFallbackWarning,
            stacklevel=4,
        )
        return result
