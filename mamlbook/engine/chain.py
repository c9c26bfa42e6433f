"""A model as a straight chain of layers, traced once with `torch.fx`: what the folded, shared
and checkpointed strategies (and iMAML) execute layer by layer with per-task weights.

A model that uses other modules or free functions is refused with `NotFoldable`, naming what is missing.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, fx, nn

# Modules that act on each channel (or element) separately: they run on the folded tensor unchanged.
_PER_CHANNEL = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.LeakyReLU, nn.GELU, nn.Identity, nn.MaxPool2d, nn.AvgPool2d)
_SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Flatten, *_PER_CHANNEL)


class NotFoldable(ValueError):
    """The model uses a module or function the folded strategy has no rule for."""


@dataclass(frozen=True)
class Layer:
    """One module of the chain, with the name its parameters are prefixed by."""

    name: str
    module: nn.Module


def _trace(model: nn.Module) -> list[Layer]:
    """The model as a straight chain of supported modules, or `NotFoldable`."""
    if isinstance(model, _SUPPORTED):
        _check_module(type(model).__name__, model)
        return [Layer("", model)]
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many kinds of errors on dynamic control flow
        raise NotFoldable(f"{type(model).__name__} cannot be traced by torch.fx: {exc}") from None
    modules = dict(model.named_modules())
    layers: list[Layer] = []
    previous = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise NotFoldable(f"{type(model).__name__} takes more than one input")
            previous = node
        elif node.op == "call_module":
            module = modules[node.target]
            if not isinstance(module, _SUPPORTED):
                raise NotFoldable(f"the folded strategy has no rule for {type(module).__name__} ({node.target})")
            if list(node.args) != [previous] or node.kwargs:
                raise NotFoldable(f"{type(model).__name__} is not a chain of modules (at {node.target})")
            _check_module(node.target, module)
            layers.append(Layer(node.target, module))
            previous = node
        elif node.op == "output":
            if node.args[0] is not previous:
                raise NotFoldable(f"{type(model).__name__} does not return its last module's output")
        else:
            raise NotFoldable(
                f"the folded strategy supports chains of {', '.join(t.__name__ for t in _SUPPORTED)}; "
                f"{type(model).__name__} calls {node.op} {node.target}"
            )
    return layers


def _check_module(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise NotFoldable(f"{name}: padding_mode {module.padding_mode!r} is not supported")
    if isinstance(module, nn.BatchNorm2d) and module.training and module.track_running_stats:
        # Running statistics would mix tasks and be updated in place; MAML models use batch statistics.
        raise NotFoldable(f"{name}: batch norm that tracks running statistics in training mode is not supported")
    if isinstance(module, nn.Flatten) and (module.start_dim != 1 or module.end_dim != -1):
        raise NotFoldable(f"{name}: only Flatten(start_dim=1, end_dim=-1) is supported")


_CHAINS: weakref.WeakKeyDictionary[nn.Module, list[Layer]] = weakref.WeakKeyDictionary()


def trace_chain(model: nn.Module) -> list[Layer]:
    """The traced chain of `model`, cached per model object (tracing costs milliseconds)."""
    if model not in _CHAINS:
        _CHAINS[model] = _trace(model)
    return _CHAINS[model]


def is_foldable(model: nn.Module) -> bool:
    try:
        trace_chain(model)
    except NotFoldable:
        return False
    return True


def fold_input(x: Tensor) -> Tensor:
    """`[B, N, C, H, W]` -> `[N, B*C, H, W]`; vectors `[B, N, F]` stay as they are."""
    if x.dim() == 5:
        b, n, c, h, w = x.shape
        return x.transpose(0, 1).reshape(n, b * c, h, w)
    if x.dim() == 3:
        return x
    raise ValueError(f"the folded strategy needs inputs [B, N, C, H, W] or [B, N, F], got shape {tuple(x.shape)}")


def layer_param(params: Mapping[str, Tensor], name: str, attr: str) -> Tensor | None:
    return params.get(f"{name}.{attr}" if name else attr)
