"""A trained run's inner loop rebuilt from its checkpoint, so evaluation adapts as training did.

Meta-SGD and MAML++ learn their inner rates, MAML++ swaps in per-step batch norm and ANIL adapts
the head only: evaluating any of them with plain SGD at `inner_lr` would score another algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..functional import Params, check_params
from ..meta import InnerRule
from ..meta.rules import SGD
from .algorithms import learned_rates
from .checkpoint import CheckpointError
from .runconfig import DTYPES, TrainConfig

DISPLAY_NAMES = {
    "maml": "MAML",
    "fomaml": "FOMAML",
    "reptile": "Reptile",
    "anil": "ANIL",
    "metasgd": "Meta-SGD",
    "mamlpp": "MAML++",
    "protonet": "ProtoNets",
    "protomaml": "ProtoMAML",
}


@dataclass
class Restored:
    """What adapting like the trained run needs. `rule` is None for plain SGD at `config.inner_lr`."""

    config: TrainConfig
    model: nn.Module
    params: Params
    rule: InnerRule | None
    learned: bool = False  # the rule's rates were meta-learned (Meta-SGD, LSLR)

    @property
    def name(self) -> str:
        return DISPLAY_NAMES.get(self.config.algorithm, self.config.algorithm)


def restore_run(payload: Mapping[str, Any], source: object = "checkpoint") -> Restored:
    """Model, parameters and inner rule (with its learned rates) of a meta-training checkpoint."""
    objects = payload.get("objects") or {}
    given = [kind for kind in ("model", "tasks") if objects.get(kind)]
    if given:
        raise CheckpointError(
            f"{source}: this run was trained on a {' and '.join(given)} given as Python objects "
            f"({', '.join(objects[k] for k in given)}); "
            "evaluate it in Python with Trainer.resume(..., model=..., tasks=...)"
        )
    config = TrainConfig.from_dict(payload["config"])
    algorithm = config.make_algorithm()
    dtype = DTYPES[config.dtype]
    model = algorithm.prepare_model(config.make_model(), config.inner_steps)
    try:
        check_params(model, payload["params"])
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    bad = [k for k, v in payload["params"].items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: parameters {', '.join(bad)} are not finite (the run diverged)")
    params = {k: v.to(config.device, dtype) for k, v in payload["params"].items()}
    rule = algorithm.make_rule(model, params, config.inner_lr, config.inner_steps)
    saved = payload.get("rates", {})
    with torch.no_grad():
        for name, rate in learned_rates(rule).items():
            if name not in saved or tuple(saved[name].shape) != tuple(rate.shape):
                raise CheckpointError(f"{source}: the learned inner rate {name!r} of {config.algorithm} is missing")
            rate.copy_(saved[name])
            rate.requires_grad_(False)
        buffers = payload.get("buffers", {})
        for name, buffer in model.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name])
    plain = isinstance(rule, SGD)
    return Restored(config, model, params, None if plain else rule, learned=bool(learned_rates(rule)))
