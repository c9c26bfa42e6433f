"""mamlbook: Model-Agnostic Meta-Learning with a functional core, made faster, leaner and better.

Parameters are plain dicts of tensors and models are called through `torch.func.functional_call`,
so every update is a value the outer loop can differentiate through. The pieces, in the order
data flows through them:

- tasks: `Sinusoid`, `Lines`, `HalfPlanes`, `Omniglot` (files in `mamlbook.data`) sample a seeded
  `TaskBatch` ([B, K, ...] tensors);
- models: `LinearModel`, `LogisticRegression`, `SineMLP`;
- meta: `adapt` (the inner loop, order 2, 1 or 0) and `task_query_loss` (MAML's per-task objective);
  inner rules `SGD`, `MetaSGD`, `LSLR`;
- algorithms: `make_algorithm` ("maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp"), the
  rule + objective + schedule that `TrainConfig(algorithm=...)` trains with;
- engine: `meta_loss` and `meta_gradient` over a meta-batch, by strategy "loop", "vmap", "folded"
  (tasks folded into grouped convolutions), "checkpointed" or "auto" (`explain_auto` says why);
  `imaml_query_losses` (implicit MAML) and `anil_rule` (adapt the head only) plug into it;
- evaluate: `adaptation_curve` (query loss after 0..n steps) and `mean_ci95`;
- train: `Trainer` and `TrainConfig` (progress bar, validation, atomic checkpoints, exact resume);
- baseline: `pretrain`, the joint-training baseline MAML is compared with;
- the `mamlbook` command: `train`, `eval`, `bench`.

Example:
    >>> import torch, mamlbook
    >>> model = mamlbook.SineMLP()
    >>> theta = mamlbook.params_of(model)
    >>> batch = mamlbook.Sinusoid(k_shot=10).sample(25, torch.Generator().manual_seed(0))
    >>> loss, grads = mamlbook.meta_gradient(model, theta, batch, "mse", steps=1, inner_lr=0.01)
"""

from . import better_omniglot as _better_omniglot  # noqa: F401  registers `mamlbook study better-omniglot`
from . import better_study as _better_study  # noqa: F401  registers `mamlbook study better`
from .algorithms import ALGORITHMS, make_algorithm
from .baseline import pretrain
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import smoke
from .engine import STRATEGIES, explain_auto, meta_gradient, meta_loss, query_losses, resolve_strategy
from .evaluate import accuracy, adaptation_curve, mean_ci95
from .functional import Params, forward, params_of
from .lake import evaluate_lake_runs, mhd_errors
from .losses import get_loss
from .meta import LSLR, SGD, MetaSGD, adapt, task_query_loss
from .meta.anil import anil_rule
from .meta.imaml import imaml_query_losses
from .models import LinearModel, LogisticRegression, SineMLP, make_model
from .presets import PRESETS, preset_config
from .runconfig import TrainConfig
from .tasks import HalfPlanes, Lines, Omniglot, Sinusoid, TaskBatch, make_task
from .train import Trainer

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "LSLR",
    "SGD",
    "STRATEGIES",
    "CheckpointError",
    "HalfPlanes",
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
