"""Two tiny task families with closed-form answers, for the book's math chapters."""

from __future__ import annotations

import torch

from .batch import TaskBatch
from .distribution import TaskDistribution, check_count, uniform


class Lines(TaskDistribution):
    """Regression on lines y = w x + b + noise, w ~ U[w_range], b ~ U[b_range], x ~ U[-1, 1].

    A two-parameter model fits each task exactly, so theta and every task optimum live in the
    same plane and the meta-learning dynamics can be drawn. `info` holds `slope` and `intercept`.
    """

    loss = "mse"

    def __init__(
        self,
        k_shot: int = 5,
        k_query: int | None = None,
        slope: tuple[float, float] = (0.5, 2.5),
        intercept: tuple[float, float] = (-1.0, 1.0),
        noise: float = 0.0,
    ) -> None:
        self.k_shot = check_count("k_shot (K)", k_shot)
        self.k_query = check_count("k_query", k_shot if k_query is None else k_query)
        self.slope, self.intercept, self.noise = slope, intercept, noise

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        b = self._check_batch(batch_size)
        w = uniform(*self.slope, (b,), generator)
        c = uniform(*self.intercept, (b,), generator)
        x = uniform(-1.0, 1.0, (b, self.k_shot + self.k_query, 1), generator)
        y = w.view(-1, 1, 1) * x + c.view(-1, 1, 1)
        if self.noise > 0:
            y = y + self.noise * torch.randn(y.shape, generator=generator)
        k = self.k_shot
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], {"slope": w, "intercept": c})


class HalfPlanes(TaskDistribution):
    """Binary classification in 2-D: the label says on which side of a random line a point lies.

    The boundary's normal points at an angle drawn from `angle` (radians), offset from the origin
    by a value from `offset`. Labels are floats in {0, 1} for a logistic loss. `info` holds both.
    """

    loss = "bce"

    def __init__(
        self,
        k_shot: int = 10,
        k_query: int | None = None,
        angle: tuple[float, float] = (0.0, 1.5),
        offset: tuple[float, float] = (-0.5, 0.5),
    ) -> None:
        self.k_shot = check_count("k_shot (K)", k_shot)
        self.k_query = check_count("k_query", k_shot if k_query is None else k_query)
        self.angle, self.offset = angle, offset

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        b = self._check_batch(batch_size)
        angle = uniform(*self.angle, (b,), generator)
        offset = uniform(*self.offset, (b,), generator)
        normal = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # [B, 2]
        x = uniform(-2.0, 2.0, (b, self.k_shot + self.k_query, 2), generator)
        y = ((x @ normal.unsqueeze(-1)).squeeze(-1) > offset.view(-1, 1)).float().unsqueeze(-1)
        k = self.k_shot
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], {"angle": angle, "offset": offset})
