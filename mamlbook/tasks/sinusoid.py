"""Sinusoid regression, exactly as in Finn et al. (2017), section 5.1."""

from __future__ import annotations

import math

import torch

from .batch import TaskBatch
from .distribution import TaskDistribution, check_count, uniform


class Sinusoid(TaskDistribution):
    """Tasks y = A sin(x - phi) with A ~ U[0.1, 5.0], phi ~ U[0, pi], x ~ U[-5, 5].

    Each task has `k_shot` support and `k_query` query points (the paper uses K of each).
    Batch shapes: `support_x, support_y: [B, k_shot, 1]`; `info` holds `amplitude` and `phase`.
    """

    loss = "mse"

    def __init__(
        self,
        k_shot: int = 10,
        k_query: int | None = None,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.k_shot = check_count("k_shot (K)", k_shot)
        self.k_query = check_count("k_query", k_shot if k_query is None else k_query)
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    @staticmethod
    def function(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """The task's true curve; amplitude and phase broadcast against x ([B] against [B, N, 1])."""
        return amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        b = self._check_batch(batch_size)
        amplitude = uniform(*self.amplitude, (b,), generator)
        phase = uniform(*self.phase, (b,), generator)
        x = uniform(*self.x_range, (b, self.k_shot + self.k_query, 1), generator)
        y = self.function(x, amplitude, phase)
        k = self.k_shot
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], {"amplitude": amplitude, "phase": phase})
