"""Inner-loop rules and meta-objectives."""

from .inner import SGD, InnerLoop, InnerRule, adapt, autograd_grads, func_grads
from .objective import task_query_loss
from .rules import LSLR, MetaSGD, Shifted, Subset

__all__ = [
    "LSLR",
    "SGD",
    "InnerLoop",
    "InnerRule",
    "MetaSGD",
    "Shifted",
    "Subset",
    "adapt",
    "autograd_grads",
    "func_grads",
    "task_query_loss",
]
