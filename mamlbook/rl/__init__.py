"""MAML for policies: 2D navigation and the running cheetah (`cheetah`, on MuJoCo), with the Gymnasium
API and chosen by name (`registry`), a Gaussian MLP policy, policy-gradient estimators of the
meta-gradient (biased surrogate, DiCE, LVC), TRPO/PPO outer steps (TRPO's local model by autograd or,
for the two-hidden-layer policy, by hand: `curvature`, `analytic`), meta-training (task-parallel over
processes: `parallel`) and meta-testing. A layer above `train`: it reuses its
checkpoints and its process group; nothing below imports it."""

from .bandit import meta_gradient, meta_gradient_bias, meta_gradient_samples
from .cheetah import BatchedHalfCheetah, HalfCheetahVel, sample_velocities
from .curvature import local_model
from .envs import BatchedNav2D, Nav2D, sample_goals, straight_line_returns
from .estimators import ESTIMATORS, MetaBatch, adapt, build_meta_batch, kl_hessian_product, magic_box, meta_objective
from .evaluate import adaptation_returns, evaluate_methods, evaluate_run, format_table, test_goals
from .outer import OUTER, PPO, TRPO, LocalModel, conjugate_gradient, fisher_vector_product
from .parallel import Nav2DParallel, TaskShare
from .policies import GaussianMLPPolicy, log_prob, sample
from .registry import ENVS, RLEnv
from .returns import advantages, discounted_returns, fit_linear_baseline, gae, standardize
from .rollout import Trajectories, rollout
from .trainer import CURVATURES, Nav2DConfig, Nav2DTrainer, load_policy

__all__ = [
    "CURVATURES",
    "ENVS",
    "ESTIMATORS",
    "OUTER",
    "PPO",
    "TRPO",
    "BatchedHalfCheetah",
    "BatchedNav2D",
    "GaussianMLPPolicy",
    "HalfCheetahVel",
    "LocalModel",
    "MetaBatch",
    "Nav2D",
    "Nav2DConfig",
    "Nav2DParallel",
    "Nav2DTrainer",
    "RLEnv",
    "TaskShare",
    "Trajectories",
    "adapt",
    "adaptation_returns",
    "advantages",
    "build_meta_batch",
    "conjugate_gradient",
    "discounted_returns",
    "evaluate_methods",
    "evaluate_run",
    "fisher_vector_product",
    "fit_linear_baseline",
    "format_table",
    "gae",
    "kl_hessian_product",
    "load_policy",
    "local_model",
    "log_prob",
    "magic_box",
    "meta_gradient",
    "meta_gradient_bias",
    "meta_gradient_samples",
    "meta_objective",
    "rollout",
    "sample",
    "sample_goals",
    "sample_velocities",
    "standardize",
    "straight_line_returns",
    "test_goals",
]
