"""How a meta-batch is executed: strategies that all compute the same meta-gradient."""

from .folded import NotFoldable, folded_query_losses, is_foldable
from .strategy import (
    STRATEGIES,
    auto_strategy,
    available_strategies,
    explain_auto,
    meta_gradient,
    meta_loss,
    query_losses,
    resolve_strategy,
)

__all__ = [
    "STRATEGIES",
    "NotFoldable",
    "auto_strategy",
    "available_strategies",
    "explain_auto",
    "folded_query_losses",
    "is_foldable",
    "meta_gradient",
    "meta_loss",
    "query_losses",
    "resolve_strategy",
]
