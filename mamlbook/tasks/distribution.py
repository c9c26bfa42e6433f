"""What every task distribution offers: sampling a seeded meta-batch."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .batch import TaskBatch


def check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class TaskDistribution(ABC):
    """A distribution p(T) over tasks. `loss` names the loss its models are trained with."""

    loss: str = "mse"

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw `batch_size` tasks; the same generator state gives the same tasks."""

    def for_split(self, split: str) -> TaskDistribution:
        """The same kind of tasks drawn from `split` ("train", "val" or "test").

        Synthetic families draw fresh tasks from one distribution, so every split is the same
        object; data sets with held-out classes (Omniglot) return their other alphabets.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; known splits: train, val, test")
        return self

    def _check_batch(self, batch_size: int) -> int:
        return check_count("batch_size", batch_size)


def uniform(low: float, high: float, size: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator)
