"""Meta-training a Gaussian policy on 2D navigation or the running cheetah (`Nav2DConfig.env`, one of
`registry.ENVS`): MAML (one inner step) or, with `inner_steps=0`, the pretrained baseline (one policy
trained on a mixture of goals by the same outer step).

A run folder holds `checkpoint.pt` (weights, outer-optimizer state, random-generator state and the
history, written atomically), `metrics.jsonl` (one row per iteration: pre- and post-adaptation
returns, KL, loss) and `config.json`. The same seed gives the same run, and a resumed run continues
it exactly: all randomness (goals, actions) comes from one `torch.Generator` saved with the weights.

Under torchrun (or in an initialized process group of 2+ processes) a run is task-parallel
(`rl.parallel`): each process samples and differentiates its share of the meta-batch's tasks, the
processes add up what TRPO needs, and the run equals the single-process one up to floating-point
summation order; rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..functional import Params, check_params, load_params_, params_of
from ..progress import tqdm
from ..train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .analytic import supports
from .curvature import local_model
from .curvature import objective as objective_by_hand
from .estimators import ESTIMATORS, adapt, build_meta_batch, kl_hessian_product, meta_objective
from .outer import OUTER, PPO, TRPO, LocalModel
from .parallel import Nav2DParallel
from .policies import GaussianMLPPolicy
from .registry import ENVS, RLEnv, get_env
from .returns import advantages
from .rollout import rollout

MODEL = ENVS["nav2d"].model
MODELS = tuple(env.model for env in ENVS.values())

CURVATURES = ("gauss-newton", "exact")
"""TRPO's local model of the objective, the same up to rounding: "exact", autograd's (the gradient
by double backward through the adaptation, `estimators.kl_hessian_product` for the KL's curvature);
"gauss-newton", the KL's Hessian in Gauss-Newton form (exact where TRPO takes it) and the gradient,
derived by hand for the two-hidden-layer policy of any input and output sizes (`curvature.local_model`,
and `curvature.objective` for the line search), several times faster on 2D navigation and about as fast
on the cheetah (its inner-loss moments grow with inputs times outputs, 18 x 6 there against 3 x 2); a
policy of another shape takes "exact"'s path."""


@dataclass(frozen=True)
class Nav2DConfig:
    """A MAML-RL run on 2D navigation or, with `env="cheetah-vel"`, the running cheetah. Defaults: the
    paper's 2D-navigation settings as its text gives them; `horizon` is the environment's (100, 200).

    The authors' released scripts (cbfinn/maml_rl) differ in places: their inner step is 0.5, not 0.1.
    For the cheetah the paper's meta-batch is larger (`reports.published`, "finn2017.cheetah.meta_batch").
    Runs saved before `env` existed are 2D navigation.
    """

    estimator: str = "dice"
    outer: str = "trpo"
    inner_steps: int = 1  # 0: the pretrained baseline, no inner loop
    meta_batch: int = 20
    trajectories: int = 20
    horizon: int | None = None  # None: the environment's
    inner_lr: float = 0.1
    gamma: float = 0.99
    gae_lambda: float = 1.0
    hidden: tuple[int, ...] = (100, 100)
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    backtrack: float = 0.8
    max_backtracks: int = 15
    curvature: str = "gauss-newton"  # how TRPO's step is computed (CURVATURES): the same step either way
    ppo_lr: float = 1e-3
    ppo_epochs: int = 5
    ppo_clip: float = 0.2
    iterations: int = 100
    seed: int = 0
    checkpoint_every: int = 5
    env: str = "nav2d"  # a name in registry.ENVS

    def __post_init__(self) -> None:
        spec = get_env(self.env)
        if self.horizon is None:
            object.__setattr__(self, "horizon", spec.horizon)
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.outer not in OUTER:
            raise ValueError(f"unknown outer step {self.outer!r}; choose one of {', '.join(OUTER)}")
        if self.curvature not in CURVATURES:
            raise ValueError(f"unknown curvature {self.curvature!r}; choose one of {', '.join(CURVATURES)}")
        if self.inner_steps not in (0, 1):
            raise ValueError(f"inner_steps must be 0 (pretrained baseline) or 1, not {self.inner_steps}")
        for name in ("meta_batch", "trajectories", "horizon", "iterations", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as config.json and the study's records hold them: what a run computes.
        `curvature` is left out, as it says how TRPO's step is computed, not which step; the checkpoint
        keeps it, so that a resumed run goes on the way it started. `env` is left out for 2D navigation,
        whose config.json stays as it was before the field existed (a config without it is 2D navigation)."""
        values = {**dataclasses.asdict(self), "hidden": list(self.hidden), "model": self.spec.model}
        del values["curvature"]
        if self.env == "nav2d":
            del values["env"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Nav2DConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)

    @property
    def spec(self) -> RLEnv:
        """The environment: its goals, batched rollout, sizes and horizon (`registry.RLEnv`)."""
        return ENVS[self.env]

    def make_policy(self) -> GaussianMLPPolicy:
        """The policy at its initialization for this seed (the global random state is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return GaussianMLPPolicy(self.spec.obs_dim, self.spec.act_dim, self.hidden)

    def make_outer(self) -> TRPO | PPO:
        if self.outer == "trpo":
            return TRPO(self.max_kl, self.cg_iters, self.cg_damping, self.backtrack, self.max_backtracks)
        return PPO(self.ppo_lr, self.ppo_epochs, self.ppo_clip)


class Nav2DTrainer:
    """Meta-trains `config`'s policy; `step()` is one meta-iteration, `fit()` runs to `config.iterations`.

    `distributed`: None trains task-parallel when there is a process group of 2+ processes (or torchrun
    describes one), True requires one, False never; or a `Nav2DParallel` to use (`rl.parallel`)."""

    def __init__(
        self,
        config: Nav2DConfig,
        out: str | os.PathLike | None = None,
        distributed: bool | Nav2DParallel | None = None,
    ) -> None:
        config.spec.check()  # what the environment needs (MuJoCo for the cheetah), before anything else
        self.config = config
        self.out = Path(out) if out is not None else None
        self.policy = config.make_policy()
        self.params: Params = params_of(self.policy)
        self.outer = config.make_outer()
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.parallel = Nav2DParallel.resolve(distributed)
        self.world_size = 1 if self.parallel is None else self.parallel.world
        if self.parallel is not None:
            self.parallel.start(self)

    # ----- training -----
    def step(self) -> dict[str, Any]:
        """Sample a meta-batch of goals, pre- and post-adaptation trajectories, take one outer step."""
        c = self.config
        started = time.perf_counter()
        spec = c.spec
        goals = spec.sample_goals(c.meta_batch, self.generator, self.params["log_std"].dtype)
        # in a distributed run, this process's tasks; the sums over all are the processes' (rl.parallel)
        share = None if self.parallel is None else self.parallel.share(c.meta_batch, goals)
        total = None if share is None else share.total
        env = spec.batched
        pre = rollout(self.policy, self.params, goals, c.trajectories, self.generator, c.horizon, share, env)
        post, adapted = None, None
        if c.inner_steps:
            pre_adv = advantages(pre.obs, pre.rewards, pre.mask, c.gamma, c.gae_lambda)
            adapted = adapt(self.policy, self.params, pre, pre_adv, c.inner_lr, c.estimator, create_graph=False)
            post = rollout(self.policy, adapted, goals, c.trajectories, self.generator, c.horizon, share, env)
        batch = build_meta_batch(self.policy, self.params, adapted, pre, post, c.gamma, c.gae_lambda, share)

        by_hand = c.curvature == "gauss-newton" and supports(self.policy)
        args = (c.estimator, c.inner_lr, c.inner_steps)

        def objective(params, create_graph=True, clip=None):
            if by_hand and not create_graph and clip is None:  # TRPO's line search
                loss, kl = objective_by_hand(self.policy, params, batch, *args, total=total)
            else:
                loss, kl = meta_objective(self.policy, params, batch, *args, clip, create_graph, total=total)
            if share is not None and not create_graph:  # values alone: the meta-batch's, summed here
                loss, kl = share.sum(torch.stack([loss.detach(), kl.detach()])).unbind()
            return loss, kl

        def kl_curvature(damping):
            if share is None:
                return kl_hessian_product(self.policy, self.params, batch, *args, damping)
            part = kl_hessian_product(self.policy, self.params, batch, *args, total=total)
            return lambda v: share.sum(part(v)) + damping * v

        def local(damping):
            if share is None:
                return local_model(self.policy, self.params, batch, *args, damping)
            part = local_model(self.policy, self.params, batch, *args, total=total)
            summed = share.sum(torch.cat([part.gradient.new_tensor([part.loss]), part.gradient]))
            return LocalModel(summed[0].item(), summed[1:], lambda v: share.sum(part.product(v)) + damping * v)

        reduce = {} if share is None else {"reduce": share.sum}  # the objective's share, summed in the step
        info = self.outer.step(self.params, objective, kl_curvature, local if by_hand else None, **reduce)
        for name, value in self.params.items():
            if not torch.isfinite(value).all():
                raise FloatingPointError(f"parameter {name!r} is not finite after iteration {self.iteration + 1}")
        self.iteration += 1
        if share is None:
            pre_return = pre.returns().mean().item()
            post_return = None if post is None else post.returns().mean().item()
        else:  # each process's sums of returns, added up: the means over the meta-batch's episodes
            ran = torch.stack([pre.returns().sum(), pre.returns().sum() if post is None else post.returns().sum()])
            pre_return, post_return = (share.sum(ran) / (c.meta_batch * c.trajectories)).tolist()
            post_return = None if post is None else post_return
        row = {
            "iteration": self.iteration,
            "pre_return": pre_return,
            "post_return": post_return,
            "std": self.params["log_std"].exp().mean().item(),
            **{k: float(v) for k, v in info.items()},
            "seconds": round(time.perf_counter() - started, 3),
        }
        return row

    def fit(self, iterations: int | None = None, progress: bool = True, desc: str | None = None):
        """Train until `iterations` in total (default: the config's), checkpointing as it goes."""
        c = self.config
        target = c.iterations if iterations is None else iterations
        what = "pretrain" if not c.inner_steps else f"maml-{c.outer} {c.estimator}"
        where = "" if self.parallel is None else f" on {self.world_size} processes"
        writer = self.parallel is None or self.parallel.rank == 0
        desc = desc or f"{what} {c.env}{where}"
        bar = tqdm(total=target, initial=self.iteration, desc=desc, disable=not (progress and writer))
        try:
            while self.iteration < target:
                row = self.step()
                self.history.append(row)
                self._append_metrics(row)
                bar.update(1)
                post = row["post_return"]
                bar.set_postfix(pre=f"{row['pre_return']:.1f}", post="-" if post is None else f"{post:.1f}")
                if self.out is not None and self.iteration % c.checkpoint_every == 0:
                    self._on_rank0(self.save)
        except KeyboardInterrupt:
            if self.out is not None and writer:
                self.save()
                bar.write(f"interrupted: saved iteration {self.iteration} to {self.out}; continue with --resume")
            raise
        finally:
            bar.close()
        if self.out is not None:
            self._on_rank0(self.save)
        return self.history

    def _on_rank0(self, fn):
        """`fn()` here, or on rank 0 alone with its outcome (result or error) on every rank."""
        return fn() if self.parallel is None else self.parallel.on_rank0(fn)

    # ----- persistence -----
    def state(self) -> dict[str, Any]:
        return {
            "kind": "maml-rl" if self.config.inner_steps else "pretrained-rl",
            "config": self.config.to_dict(),
            "curvature": self.config.curvature,
            "iteration": self.iteration,
            "params": {k: v.detach().cpu().clone() for k, v in self.params.items()},
            "outer": self.outer.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Into `path`, or the run folder (in a distributed run, by rank 0 alone)."""
        if path is not None:
            return save_checkpoint(path, self.state())
        if self.out is None:
            raise ValueError("the trainer has no output folder; pass a path to save()")
        if self.parallel is not None and self.parallel.rank != 0:
            return self.out / "checkpoint.pt"
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return save_checkpoint(self.out / "checkpoint.pt", self.state())

    @classmethod
    def resume(
        cls,
        source: str | os.PathLike,
        out: str | os.PathLike | None = None,
        distributed: bool | Nav2DParallel | None = None,
        **overrides: Any,
    ):
        """Continue the run saved at `source` (folder or file) exactly; `overrides` may change `iterations`
        (and `checkpoint_every`), nothing that would alter the run's past. In a distributed run rank 0
        reads the checkpoint and sends it to every rank; the number of processes may change."""
        changed = sorted(set(overrides) - {"iterations", "checkpoint_every"})
        if changed:
            raise ValueError(f"a resumed run keeps its settings; these would change it: {', '.join(changed)}")
        parallel = Nav2DParallel.resolve(distributed)
        read = lambda: _read(source)  # noqa: E731
        payload = read() if parallel is None else parallel.on_rank0(read)
        # runs saved before the choice existed took "exact"'s path
        way = payload.get("curvature", "exact")
        config = Nav2DConfig.from_dict({**payload["config"], "curvature": way, **overrides})
        if out is None:
            source = Path(source)
            out = source if source.is_dir() else source.parent
        trainer = cls(config, out, distributed=False if parallel is None else parallel)
        trainer.load_state(payload)
        trainer._on_rank0(trainer._rewrite_metrics)
        return trainer

    def load_state(self, payload: dict[str, Any]) -> None:
        load_params_(self.policy, self.params, payload["params"])
        if isinstance(self.outer, PPO):
            self.outer.load_state_dict(payload["outer"], self.params)
        else:
            self.outer.load_state_dict(payload["outer"])
        self.generator.set_state(payload["generator"])
        self.iteration = int(payload["iteration"])
        self.history = list(payload["history"])

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if self.out is None or (self.parallel is not None and self.parallel.rank != 0):
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _rewrite_metrics(self) -> None:
        """metrics.jsonl as of the checkpoint: rows logged after it are logged again on the way."""
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))


def _read(source: str | os.PathLike) -> dict[str, Any]:
    """A MAML-RL checkpoint (of any environment), or a CheckpointError that says what it holds."""
    payload = load_checkpoint(source)
    model = payload.get("config", {}).get("model")
    if model not in MODELS:
        expected = " or ".join(repr(m) for m in MODELS)
        raise CheckpointError(f"checkpoint {source} was trained for model {model!r}, not {expected}")
    return payload


def load_policy(source: str | os.PathLike) -> tuple[Nav2DConfig, GaussianMLPPolicy, Params]:
    """The config, policy module and trained weights of a saved run (folder or checkpoint file)."""
    payload = _read(source)
    config = Nav2DConfig.from_dict(payload["config"])
    policy = config.make_policy()
    try:
        check_params(policy, payload["params"])
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None
    return config, policy, {k: v.detach().clone() for k, v in payload["params"].items()}
