"""Plain `nn.Module`s that work under `functional_call` and `vmap`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .conv import Conv4
from .linear import LinearModel, LogisticRegression
from .mlp import SineMLP

MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": LinearModel,
    "logistic": LogisticRegression,
    "sine-mlp": SineMLP,
    "conv4": Conv4,
}


def make_model(name: str, **options) -> nn.Module:
    """Build a model by name: `make_model("sine-mlp")`."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
    return factory(**options)


__all__ = ["MODELS", "Conv4", "LinearModel", "LogisticRegression", "SineMLP", "make_model"]
