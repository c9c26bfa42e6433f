"""mamlbook: Model-Agnostic Meta-Learning with a functional core, made faster, leaner and better.

Parameters are plain dicts of tensors and models are called through `torch.func.functional_call`,
so every update is a value the outer loop can differentiate through. The layers, bottom up (each
imports only those below it):

- core (`functional`, `losses`, `config`): parameter dicts, losses, the environment switches;
- `data`: download, verify (sha256), extract and cache data sets; no sampling;
- `tasks`: task distributions that sample a seeded `TaskBatch` ([B, K, ...] tensors): `Sinusoid`,
  `Lines`, `HalfPlanes`, `Omniglot`, and `FewShotClassification`, N-way K-shot tasks over any
  labelled tensor or image folder;
- `models`: plain `nn.Module`s that work under `functional_call`: `LinearModel`, `SineMLP`, `Conv4`;
- `meta`: the inner loop (`adapt`, order 2, 1 or 0), its settings as one value (`InnerLoop`, what
  every execution strategy takes), inner rules `SGD`, `MetaSGD`, `LSLR`, and MAML's per-task
  objective `task_query_loss`;
- `engine`: `meta_loss` and `meta_gradient` over a meta-batch by strategy ("loop", "vmap",
  "folded", "checkpointed", "threads" or "auto"; `explain_auto` says why), and iMAML;
- `train`: algorithms by name, `TrainConfig`, the `Trainer` (progress, validation, atomic
  checkpoints, exact resume), `adaptation_curve`, the joint-training baseline;
- `reports`: meta-test reports of saved runs and Lake's one-shot runs.

`mamlbook.bench` (benchmarks against peers), `mamlbook.studies` (the book's experiments) and
`mamlbook.cli` (the `mamlbook` command) sit on top; importing `mamlbook` imports none of them.

Example:
    >>> import torch, mamlbook
    >>> model = mamlbook.SineMLP()
    >>> theta = mamlbook.params_of(model)
    >>> batch = mamlbook.Sinusoid(k_shot=10).sample(25, torch.Generator().manual_seed(0))
    >>> loss, grads = mamlbook.meta_gradient(model, theta, batch, "mse", steps=1, inner_lr=0.01)
    >>> sorted(grads) == sorted(theta)
    True
"""

from . import _moved
from .config import smoke
from .engine import STRATEGIES, explain_auto, meta_gradient, meta_loss, query_losses, resolve_strategy
from .engine.imaml import imaml_query_losses
from .functional import Params, forward, params_of
from .losses import get_loss
from .meta import LSLR, SGD, InnerLoop, MetaSGD, adapt, task_query_loss
from .meta.anil import anil_rule
from .models import LinearModel, LogisticRegression, SineMLP, make_model
from .reports.lake import evaluate_lake_runs, mhd_errors
from .tasks import FewShotClassification, HalfPlanes, Lines, Omniglot, Sinusoid, TaskBatch, make_task
from .train import (
    ALGORITHMS,
    PRESETS,
    CheckpointError,
    DivergenceError,
    TaskSource,
    TrainConfig,
    Trainer,
    accuracy,
    adaptation_curve,
    load_checkpoint,
    make_algorithm,
    mean_ci95,
    preset_config,
    pretrain,
    save_checkpoint,
)

__version__ = "0.1.0"

_moved.install()


def __getattr__(name: str):
    """`mamlbook.runconfig` and the other modules that moved: the module, with a deprecation warning."""
    old = f"mamlbook.{name}"
    if old in _moved.MOVED:
        return _moved.moved(old)
    raise AttributeError(f"module 'mamlbook' has no attribute {name!r}")


__all__ = [
    "ALGORITHMS",
    "LSLR",
    "SGD",
    "STRATEGIES",
    "CheckpointError",
    "DivergenceError",
    "TaskSource",
    "FewShotClassification",
    "HalfPlanes",
    "InnerLoop",
    "LinearModel",
    "Lines",
    "Omniglot",
    "PRESETS",
    "LogisticRegression",
    "MetaSGD",
    "Params",
    "SineMLP",
    "Sinusoid",
    "TaskBatch",
    "TrainConfig",
    "Trainer",
    "accuracy",
    "adapt",
    "anil_rule",
    "adaptation_curve",
    "evaluate_lake_runs",
    "explain_auto",
    "forward",
    "get_loss",
    "imaml_query_losses",
    "load_checkpoint",
    "make_algorithm",
    "make_model",
    "make_task",
    "mean_ci95",
    "meta_gradient",
    "meta_loss",
    "mhd_errors",
    "params_of",
    "preset_config",
    "pretrain",
    "query_losses",
    "resolve_strategy",
    "save_checkpoint",
    "smoke",
    "task_query_loss",
]
