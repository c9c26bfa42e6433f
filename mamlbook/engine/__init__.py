"""How a meta-batch is executed: strategies that all compute the same meta-gradient."""

from .strategy import STRATEGIES, meta_gradient, meta_loss, query_losses, resolve_strategy

__all__ = ["STRATEGIES", "meta_gradient", "meta_loss", "query_losses", "resolve_strategy"]
