"""Inner-loop update rules: one signature, so that MAML, Meta-SGD and MAML++ differ only in the rule.

A rule maps `(params, grads, step)` to new parameters without modifying its inputs (so the update
stays differentiable, as optax's and TorchOpt's `inplace=False`). Rules that learn something keep
it in `learned`, a dict of tensors the outer optimizer trains alongside the initialization.

- `SGD`:     theta' = theta - alpha * g                       (MAML; Finn et al. 2017)
- `MetaSGD`: theta' = theta - alpha ⊙ g, alpha one tensor per parameter, learned (Li et al. 2017)
- `LSLR`:    theta'_l = theta_l - alpha_{l,s} * g_l, one learned rate per layer l and step s
             (MAML++; Antoniou et al. 2019)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import torch
from torch import Tensor

from ..functional import Params


class InnerRule(Protocol):
    """How one inner step turns (params, grads) into new params; must not modify its inputs."""

    def __call__(self, params: Params, grads: Params, step: int) -> Params: ...


def check_rate(inner_lr: float) -> float:
    if not inner_lr > 0:
        raise ValueError(f"inner_lr must be positive, got {inner_lr!r}")
    return float(inner_lr)


def learned_of(rule: object) -> Params:
    """The tensors a rule learns (empty for a fixed rule such as `SGD`)."""
    return dict(getattr(rule, "learned", {}))


class SGD:
    """theta' = theta - inner_lr * grad: the update of the original MAML."""

    def __init__(self, inner_lr: float) -> None:
        self.inner_lr = check_rate(inner_lr)
        self.learned: Params = {}

    def __call__(self, params: Params, grads: Params, step: int) -> Params:
        return {name: p - self.inner_lr * grads[name] for name, p in params.items()}


class MetaSGD:
    """theta' = theta - alpha ⊙ grad, with `alpha` a learned tensor of each parameter's shape.

    The rates are meta-learned with the initialization, so each weight gets its own step size
    and even its own direction (a rate may turn negative).
    """

    def __init__(self, rates: Mapping[str, Tensor]) -> None:
        self.learned: Params = dict(rates)

    @classmethod
    def like(cls, params: Mapping[str, Tensor], inner_lr: float) -> MetaSGD:
        """Rates shaped like `params`, all starting at `inner_lr` (so step one equals MAML's)."""
        rate = check_rate(inner_lr)
        return cls({k: torch.full_like(p.detach(), rate).requires_grad_() for k, p in params.items()})

    def __call__(self, params: Params, grads: Params, step: int) -> Params:
        return {name: p - self.learned[name] * grads[name] for name, p in params.items()}


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its module path (`net.0.weight` -> `net.0`)."""
    return name.rsplit(".", 1)[0] if "." in name else name


class LSLR:
    """Learned per-layer, per-step rates: `rates[layer]` has shape `[steps]`.

    A step beyond the trained ones reuses the last step's rate, so a model trained with N steps
    can still be evaluated with more.
    """

    def __init__(self, rates: Mapping[str, Tensor]) -> None:
        self.learned: Params = dict(rates)

    @classmethod
    def like(cls, params: Mapping[str, Tensor], inner_lr: float, steps: int) -> LSLR:
        rate = check_rate(inner_lr)
        first = next(iter(params.values()))
        layers = dict.fromkeys(layer_of(k) for k in params)
        return cls(
            {
                layer: torch.full((steps,), rate, dtype=first.dtype, device=first.device).requires_grad_()
                for layer in layers
            }
        )

    def __call__(self, params: Params, grads: Params, step: int) -> Params:
        updated = {}
        for name, p in params.items():
            rates = self.learned[layer_of(name)]
            updated[name] = p - rates[min(step, rates.shape[0] - 1)] * grads[name]
        return updated


class Shifted:
    """`rule` with its step counter offset, for inner loops run one step at a time."""

    def __init__(self, rule: InnerRule, offset: int) -> None:
        self.rule, self.offset = rule, offset

    def __call__(self, params: Params, grads: Params, step: int) -> Params:
        return self.rule(params, grads, step + self.offset)


class Subset:
    """Apply `rule` to the parameters named in `names` only; the others pass through unchanged.

    ANIL (Raghu et al. 2020) is MAML with this wrapper around the head: the body is reused as is.
    """

    def __init__(self, rule: InnerRule, names: Iterable[str]) -> None:
        self.rule, self.names = rule, frozenset(names)
        self.learned = learned_of(rule)

    def __call__(self, params: Params, grads: Params, step: int) -> Params:
        chosen = {k: p for k, p in params.items() if k in self.names}
        updated = self.rule(chosen, {k: grads[k] for k in chosen}, step)
        return {k: updated.get(k, p) for k, p in params.items()}
