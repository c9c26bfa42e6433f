"""Meta-training: algorithms (rule + objective + schedule), run configs, the Trainer, checkpoints,
task-parallel training on several processes, evaluation of adaptation and the joint-training baseline.

Built on the engine, the inner-loop rules, the models and the task distributions; the reports,
benches, studies and the command line sit on top of it.
"""

from .algorithms import ALGORITHMS, MAMLPP_PIECES, Algorithm, learned_rates, make_algorithm
from .baseline import pretrain
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .distributed import DistributedError, RunLockedError, TaskParallel, launch_local, run_lock
from .evaluate import accuracy, adaptation_curve, mean_ci95
from .presets import PRESETS, preset_config
from .restore import Restored, restore_run
from .runconfig import DTYPES, TrainConfig
from .trainer import VALIDATION_SEED_OFFSET, DivergenceError, OptimizerFactory, TaskSource, Trainer

__all__ = [
    "ALGORITHMS",
    "DTYPES",
    "MAMLPP_PIECES",
    "PRESETS",
    "VALIDATION_SEED_OFFSET",
    "Algorithm",
    "CheckpointError",
    "DistributedError",
    "DivergenceError",
    "OptimizerFactory",
    "TaskSource",
    "Restored",
    "RunLockedError",
    "TaskParallel",
    "Trainer",
    "TrainConfig",
    "accuracy",
    "adaptation_curve",
    "launch_local",
    "learned_rates",
    "load_checkpoint",
    "make_algorithm",
    "mean_ci95",
    "preset_config",
    "pretrain",
    "restore_run",
    "run_lock",
    "save_checkpoint",
]
