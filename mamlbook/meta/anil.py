"""ANIL (Raghu et al. 2020): adapt the head only; the body's features are computed once per task.

ANIL is MAML with the inner rule restricted to the head (`meta.rules.Subset`). The engine's folded
strategy notices that the layers before the first adapted one never change during adaptation and
runs them once on the support set and once on the query set, instead of once per inner step; the
inner steps then cost a linear layer each. This module only names the pieces.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from .rules import SGD, InnerRule, Subset


def head_names(params: Mapping[str, Tensor], head: str = "head") -> list[str]:
    """The parameters of the submodule `head` (Conv4's linear classifier)."""
    names = [k for k in params if k.startswith(f"{head}.")]
    if not names:
        raise ValueError(f"no parameters under {head!r}; ANIL needs the model's classifier as a named submodule")
    return names


def last_layer(params: Mapping[str, Tensor]) -> str:
    """The module holding the last parameter: the classifier of a plain chain (`net.4` in SineMLP)."""
    return list(params)[-1].rsplit(".", 1)[0]


def anil_rule(model: nn.Module, inner_lr: float, rule: InnerRule | None = None, head: str | None = None) -> Subset:
    """The inner rule of ANIL: `rule` (plain SGD by default) on the head's parameters only.

    `head` defaults to the submodule named `head` (Conv4), or else the last layer.
    """
    params = dict(model.named_parameters())
    if head is None:
        head = "head" if any(k.startswith("head.") for k in params) else last_layer(params)
    return Subset(rule if rule is not None else SGD(inner_lr), head_names(params, head))
