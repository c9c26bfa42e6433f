"""Algorithms by name: each is a choice of inner-loop rule, objective and schedule.

| name      | rule                   | objective                     | schedule                          |
|-----------|------------------------|-------------------------------|-----------------------------------|
| maml      | SGD                    | query loss after N steps      | order as configured (2)           |
| fomaml    | SGD                    | same                          | order 1                           |
| reptile   | SGD                    | none: theta -> mean adapted   | no meta-gradient                  |
| anil      | SGD on the head only   | query loss after N steps      | order as configured               |
| metasgd   | learned rate per weight| query loss after N steps      | order as configured               |
| mamlpp    | LSLR                   | multi-step loss (MSL)         | DA, cosine meta lr, per-step BN   |
| protonet  | none (no inner loop)   | query loss of prototype logits| none                              |
| protomaml | SGD, head set from prototypes | query loss after N steps | order as configured             |

`make_algorithm("mamlpp", msl=False)` switches one MAML++ piece off, for the ablation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import meta_loss, resolve_strategy
from ..engine.verified import is_verified
from ..engine.vmapped import has_batch_norm
from ..functional import Params
from ..losses import LossFn
from ..meta.anil import anil_rule
from ..meta.inner import check_order, func_grads
from ..meta.mamlpp import (
    cosine_lr,
    derivative_order,
    has_step_batch_norm,
    msl_weights,
    multi_step_query_losses,
    per_step_batch_norm,
)
from ..meta.objective import task_query_loss
from ..meta.prototypes import body_of, linear_head, prototype_head, prototype_loss
from ..meta.reptile import reptile_pseudo_gradient
from ..meta.rules import LSLR, SGD, InnerRule, MetaSGD, Subset
from ..tasks import TaskBatch

RULES = ("sgd", "metasgd", "lslr")

# MAML++'s schedules as fractions of training: the authors anneal MSL over 10 of 150 epochs and
# use first-order gradients for the first 50.
MSL_FRACTION = 10 / 150
DA_FRACTION = 50 / 150


@dataclass(frozen=True)
class Algorithm:
    """What differs between MAML variants; everything else (model, task, engine) is shared.

    `order=None` keeps the run's configured order. `msl_iterations`/`first_order_iterations`
    default (None) to MAML++'s fractions of the run's iterations, `cosine_iterations` to all of them.
    """

    name: str
    rule: str = "sgd"
    order: int | None = None
    reptile: bool = False
    head_only: bool = False
    msl: bool = False
    msl_iterations: int | None = None
    da: bool = False
    first_order_iterations: int | None = None
    bn_stats: bool = False
    bn_weights: bool = False
    cosine: bool = False
    cosine_iterations: int | None = None
    min_meta_lr: float = 1e-5
    prototypes: bool = False
    prototype_head: bool = False

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown inner rule {self.rule!r}; known: {', '.join(RULES)}")
        if self.order is not None:
            check_order(self.order)
        if self.reptile and (self.msl or self.rule != "sgd"):
            raise ValueError("reptile takes plain SGD steps and has no query-loss objective (no msl, no learned rule)")
        if self.prototypes and (self.reptile or self.msl or self.head_only or self.rule != "sgd"):
            raise ValueError("prototypical networks have no inner loop: no reptile, msl, head-only or learned rule")
        if self.prototype_head and (self.prototypes or self.reptile or self.msl or self.head_only):
            raise ValueError(
                "ProtoMAML's head is set from prototypes before MAML's steps: no reptile, msl or head-only"
            )

    # ----- building -----
    def prepare_model(self, model: nn.Module, steps: int) -> nn.Module:
        """The model this algorithm trains: per-step batch norm when BNRS or BNWB is on."""
        if (self.bn_stats or self.bn_weights) and has_batch_norm(model):
            return per_step_batch_norm(model, steps, weights=self.bn_weights, stats=self.bn_stats)
        return model

    def make_rule(self, model: nn.Module, params: Mapping[str, Tensor], inner_lr: float, steps: int) -> InnerRule:
        """The inner rule, its learned rates initialized at `inner_lr`; ANIL's covers the head only."""
        names = head_names(model, params) if self.head_only else list(params)
        chosen = {k: params[k] for k in names}
        if self.rule == "metasgd":
            rule: InnerRule = MetaSGD.like(chosen, inner_lr)
        elif self.rule == "lslr":
            rule = LSLR.like(chosen, inner_lr, steps)
        else:
            rule = SGD(inner_lr)
        return Subset(rule, names) if self.head_only else rule

    # ----- schedules -----
    def schedule(self, iterations: int) -> dict[str, int]:
        """The run's schedule horizons, fixed at the start (and saved, so resume keeps them)."""
        msl = self.msl_iterations if self.msl_iterations is not None else round(MSL_FRACTION * iterations)
        da = self.first_order_iterations if self.first_order_iterations is not None else round(DA_FRACTION * iterations)
        cosine = self.cosine_iterations if self.cosine_iterations is not None else iterations
        return {"msl_iterations": msl, "first_order_iterations": da if self.da else 0, "cosine_iterations": cosine}

    def order_at(self, iteration: int, configured: int, schedule: Mapping[str, int]) -> int:
        order = configured if self.order is None else self.order
        if order == 2 and self.da:
            return derivative_order(iteration, schedule["first_order_iterations"], 2)
        return order

    def loss_weights(self, steps: int, iteration: int, schedule: Mapping[str, int]) -> list[float] | None:
        if not self.msl:
            return None
        horizon = schedule["msl_iterations"]
        return msl_weights(steps, iteration / horizon if horizon > 0 else 1.0).tolist()

    def meta_lr_at(self, base_lr: float, iteration: int, schedule: Mapping[str, int]) -> float:
        if not self.cosine:
            return base_lr
        return cosine_lr(base_lr, iteration, schedule["cosine_iterations"], min(self.min_meta_lr, base_lr))

    def resolve_strategy(
        self, strategy: str, model: nn.Module, rule: InnerRule | None = None, *, batch: TaskBatch | None = None
    ) -> str:
        """The engine's choice (which may probe an unverified model on `batch`'s shapes), except that
        per-step batch norm and prototypical networks (no inner loop to batch) run task by task (the loop)."""
        if self.prototypes or self.prototype_head:
            body_of(model)  # a model without an embedding body is refused before training starts
            if self.prototype_head:
                linear_head(model, dict(model.named_parameters()))
            return "loop"
        return "loop" if has_step_batch_norm(model) else resolve_strategy(strategy, model, rule, batch=batch)

    # ----- one meta-iteration -----
    def meta_loss(
        self,
        model: nn.Module,
        params: Mapping[str, Tensor],
        batch: TaskBatch,
        loss_fn: str | LossFn,
        steps: int,
        rule: InnerRule,
        order: int,
        strategy: str,
        weights: list[float] | None = None,
    ) -> Tensor:
        """The meta-loss to differentiate (not for Reptile, which has none: see `meta_update`)."""
        if self.prototypes:
            if loss_fn != "ce":
                raise ValueError(f"prototypical networks classify: the loss must be 'ce', not {loss_fn!r}")
            return prototype_loss(model, params, batch)
        if self.prototype_head:  # ProtoMAML: each task's head starts at its prototype classifier
            # The inner gradients must be partial derivatives, the head held apart from the body it was
            # computed from: torch.func.grad treats each entry as its own variable; autograd.grad would
            # add the path through the prototypes (a wrong meta-gradient, caught by a float64 test).
            losses = [
                task_query_loss(
                    model,
                    prototype_head(model, params, batch.support_x[i], batch.support_y[i]),
                    batch.support_x[i],
                    batch.support_y[i],
                    batch.query_x[i],
                    batch.query_y[i],
                    loss_fn,
                    steps,
                    1.0,
                    order,
                    rule,
                    grads=func_grads,
                )
                for i in range(len(batch))
            ]
            return torch.stack(losses).mean()
        if weights is not None or has_step_batch_norm(model):
            # The multi-step losses run under vmap unless the loop was chosen: only where every layer
            # is verified for vmap (whatever faster engine "auto" chose for the plain objective).
            vectorized = strategy != "loop" and not any_batch_norm(model) and is_verified(model, "vmap")
            losses = multi_step_query_losses(model, params, batch, loss_fn, steps, rule, order, weights, vectorized)
            return losses.mean()
        if isinstance(rule, SGD):  # plain MAML: hand the engine its own default path
            return meta_loss(model, params, batch, loss_fn, steps, rule.inner_lr, order, strategy)
        # inner_lr is unused when a rule is given: the rule carries the rates.
        return meta_loss(model, params, batch, loss_fn, steps, 1.0, order, strategy, rule)


def any_batch_norm(model: nn.Module) -> bool:
    return has_batch_norm(model) or has_step_batch_norm(model)


def head_names(model: nn.Module, params: Mapping[str, Tensor]) -> list[str]:
    """The parameters ANIL adapts, by `meta.anil`'s rule: `head.*` (Conv4), else the last layer."""
    chosen = anil_rule(model, 1.0).names
    return [k for k in params if k in chosen]


ALGORITHMS: dict[str, Algorithm] = {
    "maml": Algorithm("maml"),
    "fomaml": Algorithm("fomaml", order=1),
    "reptile": Algorithm("reptile", order=0, reptile=True),
    "anil": Algorithm("anil", head_only=True),
    "metasgd": Algorithm("metasgd", rule="metasgd"),
    "mamlpp": Algorithm("mamlpp", rule="lslr", msl=True, da=True, bn_stats=True, bn_weights=True, cosine=True),
    "protonet": Algorithm("protonet", order=0, prototypes=True),
    "protomaml": Algorithm("protomaml", prototype_head=True),
}

# The ablation of Antoniou et al. (table 2): MAML++ with one piece switched off at a time.
MAMLPP_PIECES: dict[str, dict[str, Any]] = {
    "msl": {"msl": False},
    "da": {"da": False},
    "bnrs": {"bn_stats": False},
    "bnwb": {"bn_weights": False},
    "lslr": {"rule": "sgd"},
    "ca": {"cosine": False},
}


def make_algorithm(name: str, **options: Any) -> Algorithm:
    """An algorithm by name, with `options` overriding its fields: `make_algorithm("mamlpp", msl=False)`."""
    try:
        base = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None
    known = {f.name for f in dataclasses.fields(Algorithm)} - {"name"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown options for algorithm {name!r}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(base, **options)


def learned_rates(rule: InnerRule) -> Params:
    """The rule's learned tensors (empty for SGD)."""
    return dict(getattr(rule, "learned", {}))


__all__ = [
    "ALGORITHMS",
    "MAMLPP_PIECES",
    "Algorithm",
    "head_names",
    "learned_rates",
    "make_algorithm",
    "reptile_pseudo_gradient",
]
