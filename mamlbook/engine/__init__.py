"""How a meta-batch is executed: strategies that all compute the same meta-gradient."""

from .chain import NotFoldable, is_foldable
from .fallback import AutoFallbackWarning
from .folded import folded_query_losses
from .mlp_closed import NotClosedForm, closed_query_losses
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
from .verified import (
    VERIFIED_LAYERS,
    WRONG_LAYERS,
    Probe,
    UnverifiedStrategyWarning,
    is_verified,
    probe,
    unverified_layers,
)

__all__ = [
    "STRATEGIES",
    "VERIFIED_LAYERS",
    "WRONG_LAYERS",
    "AutoFallbackWarning",
    "NotClosedForm",
    "NotFoldable",
    "Probe",
    "UnverifiedStrategyWarning",
    "auto_strategy",
    "available_strategies",
    "closed_query_losses",
    "explain_auto",
    "folded_query_losses",
    "is_foldable",
    "is_verified",
    "meta_gradient",
    "meta_loss",
    "probe",
    "query_losses",
    "resolve_strategy",
    "unverified_layers",
]
