"""Inner-loop rules and meta-objectives."""

from .inner import SGD, InnerRule, adapt, autograd_grads, func_grads
from .objective import task_query_loss

__all__ = ["SGD", "InnerRule", "adapt", "autograd_grads", "func_grads", "task_query_loss"]
