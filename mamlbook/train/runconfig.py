"""A training run's settings, with the defaults of Finn et al. (2017) for sinusoid regression."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ..meta.inner import check_order, check_steps
from ..models import make_model
from ..precision import check_lowers
from ..tasks import TaskDistribution, make_task
from ..tasks.distribution import check_count
from .algorithms import Algorithm, make_algorithm

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in its checkpoint so that resume and eval can rebuild it."""

    # Names of a registered task family and model; None when the Trainer was handed the objects
    # themselves (`Trainer(config, model=..., tasks=...)`), which the names then do not describe.
    task: str | None = "sinusoid"
    model: str | None = "sine-mlp"
    k_shot: int = 10
    k_query: int | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    meta_batch: int = 25
    inner_steps: int = 1
    inner_lr: float = 0.01
    meta_lr: float = 1e-3
    order: int = 2
    algorithm: str = "maml"
    algorithm_options: dict[str, Any] = field(default_factory=dict)
    iterations: int = 2000
    strategy: str = "auto"
    eval_every: int = 100
    eval_tasks: int = 100
    checkpoint_every: int = 500
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    # Matrix products of the meta-training forward and inner loops in "bf16" or "fp16" (autocast,
    # `mamlbook.precision`); parameters, updates and evaluation stay in `dtype`. "fp32": full precision.
    precision: str = "fp32"
    # Rescale the meta-gradient (weights and learned rates together) to at most this norm; None: never.
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        check_count("k_shot (K)", self.k_shot)
        check_count("meta_batch", self.meta_batch)
        check_count("iterations", self.iterations, minimum=0)
        check_count("eval_every", self.eval_every)
        check_count("eval_tasks", self.eval_tasks)
        check_count("checkpoint_every", self.checkpoint_every)
        check_steps(self.inner_steps)
        check_order(self.order)
        for name in ("inner_lr", "meta_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive or None, got {self.clip_grad_norm!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        check_lowers(self.precision, DTYPES[self.dtype])
        self.make_algorithm()
        if self.task is not None:
            self.make_task()  # unknown task names and bad task options fail here, not mid-run
        if self.model is not None:
            make_model(self.model, **self.model_options)

    def make_task(self) -> TaskDistribution:
        if self.task is None:
            raise ValueError("this run's tasks were given as an object (task=None): pass the same tasks=... again")
        return make_task(self.task, k_shot=self.k_shot, k_query=self.k_query, **self.task_options)

    def make_algorithm(self) -> Algorithm:
        """The algorithm (rule, objective, schedule) this run trains with; "maml" by default."""
        return make_algorithm(self.algorithm, **self.algorithm_options)

    def make_model(self) -> nn.Module:
        """The model, initialized from the run's seed without touching the global RNG."""
        if self.model is None:
            raise ValueError("this run's model was given as an object (model=None): pass the same model=... again")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = make_model(self.model, **self.model_options)
        return model.to(device=self.device, dtype=DTYPES[self.dtype])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**values)
