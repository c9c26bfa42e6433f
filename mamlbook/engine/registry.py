"""The execution strategies by name: each computes the per-task post-adaptation query losses `[B]`
of a meta-batch, and all of them (where verified, see `engine.verified`) the same meta-gradient."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from ..meta import InnerLoop
from ..tasks import TaskBatch
from .checkpointed import checkpointed_query_losses
from .folded import folded_query_losses
from .loop import loop_query_losses
from .mlp_closed import closed_query_losses, compiled_closed_query_losses
from .threaded import threaded_query_losses
from .vmapped import vmap_query_losses

# `(model, params, batch, inner) -> [B]`: a strategy's own options (the threads' `workers`) are keywords after these.
QueryLosses = Callable[[nn.Module, Mapping[str, Tensor], TaskBatch, InnerLoop], Tensor]

STRATEGIES: dict[str, QueryLosses] = {
    "loop": loop_query_losses,
    "vmap": vmap_query_losses,
    "folded": folded_query_losses,
    "checkpointed": checkpointed_query_losses,
    "threads": threaded_query_losses,
    "closed": closed_query_losses,
    # Not on any verified list (each model compiles for seconds to minutes): tests/test_engine_closed.py checks it.
    "closed-compiled": compiled_closed_query_losses,
}
