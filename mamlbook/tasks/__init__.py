"""Task distributions: each samples a seeded `TaskBatch` of stacked support and query tensors."""

from __future__ import annotations

from .batch import TaskBatch
from .distribution import TaskDistribution
from .fewshot import FewShotClassification
from .linear import HalfPlanes, Lines
from .omniglot import Omniglot
from .pbc import PBC, PBCImages
from .sinusoid import Sinusoid

TASKS: dict[str, type[TaskDistribution]] = {
    "sinusoid": Sinusoid,
    "lines": Lines,
    "halfplanes": HalfPlanes,
    "omniglot": Omniglot,
    "pbc": PBC,
}


def make_task(name: str, **options) -> TaskDistribution:
    """Build a task distribution by name: `make_task("sinusoid", k_shot=5)`."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None
    return cls(**options)


__all__ = [
    "TASKS",
    "FewShotClassification",
    "HalfPlanes",
    "Lines",
    "Omniglot",
    "PBC",
    "PBCImages",
    "Sinusoid",
    "TaskBatch",
    "TaskDistribution",
    "make_task",
]
