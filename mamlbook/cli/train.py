"""`mamlbook train`: meta-train a model, then its pretrained baseline.

Under torchrun (`torchrun --standalone --nproc_per_node 2 -m mamlbook train ...`) the processes
train one run together, task-parallel (`train.distributed`); rank 0 alone prints and writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..train.algorithms import ALGORITHMS, MAMLPP_PIECES
from ..train.checkpoint import save_checkpoint
from ..train.presets import PRESETS, preset_config
from ..train.runconfig import TrainConfig

if TYPE_CHECKING:
    from ..train.trainer import Trainer


def add_parser(subparsers) -> None:
    train = subparsers.add_parser("train", help="meta-train a model on a task family")
    train.add_argument("task", help="task family (e.g. sinusoid) or a named config (e.g. omniglot-5w1s)")
    train.add_argument(
        "--preset", choices=("cpu", "paper"), help="size of a named config: cpu (default) or paper (GPU)"
    )
    train.add_argument("--out", required=True, type=Path, help="run folder for checkpoint, metrics and plots")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--iterations", type=int, help="total meta-iterations (default 2000)")
    train.add_argument("--model", help="model name (default: sine-mlp)")
    train.add_argument("--k-shot", type=int, help="support examples per task (K)")
    train.add_argument("--meta-batch", type=int, help="tasks per meta-iteration")
    train.add_argument("--inner-steps", type=int, help="inner gradient steps")
    train.add_argument("--inner-lr", type=float, help="inner learning rate alpha")
    train.add_argument("--meta-lr", type=float, help="Adam learning rate beta")
    train.add_argument("--order", type=int, choices=(0, 1, 2), help="2: MAML, 1: first-order MAML")
    train.add_argument(
        "--algorithm",
        choices=sorted(ALGORITHMS),
        help="maml (default), fomaml, reptile, anil, metasgd (learned rates) or mamlpp (MAML++)",
    )
    train.add_argument(
        "--without",
        action="append",
        type=str.lower,
        choices=sorted(MAMLPP_PIECES),
        metavar="PIECE",
        help=f"switch one MAML++ piece off (repeatable): {', '.join(p.upper() for p in MAMLPP_PIECES)}",
    )
    train.add_argument("--strategy", help="meta-batch execution: auto, loop, vmap")
    train.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        help="matrix products of meta-training in bf16/fp16 (autocast); parameters and updates stay float32",
    )
    train.add_argument("--eval-every", type=int, help="meta-iterations between validations")
    train.add_argument("--eval-tasks", type=int, help="validation tasks per validation (fewer: cheaper, noisier)")
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--clip-grad-norm", type=float, metavar="NORM", help="rescale each meta-gradient to at most this norm"
    )
    train.add_argument(
        "--baseline-iterations", type=int, help="pretrained baseline iterations (default: as MAML; 0: none)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    rl = train.add_argument_group("nav2d, cheetah-vel (MAML for policies, `mamlbook.rl`; cheetah-vel needs MuJoCo)")
    rl.add_argument("--estimator", choices=("surrogate", "dice", "lvc"), help="meta-gradient estimator (default dice)")
    rl.add_argument("--outer", choices=("trpo", "ppo"), help="outer step (default trpo)")
    rl.add_argument("--trajectories", type=int, help="trajectories per task and step (default 20)")

    train.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train on N local processes: the same as torchrun --standalone --nproc_per_node N -m mamlbook train",
    )

    train.set_defaults(handler=run, train_parser=train)


def named_config(task: str, preset: str | None, overrides: dict) -> TrainConfig:
    """A named config (omniglot-5w1s, ...) at its preset size, or a plain task family with defaults."""
    if task in PRESETS:
        return preset_config(task, preset or "cpu", **overrides)
    if preset is not None:
        raise ValueError(f"--preset needs a named config ({', '.join(sorted(PRESETS))}), not task {task!r}")
    return TrainConfig(task=task, **overrides)


def run(args: argparse.Namespace) -> int:
    """Train (under torchrun: as one process of a distributed run); errors of the run end as one line."""
    from ..train.distributed import DistributedError, RunLockedError, init_from_env, shutdown
    from .rl import RL_TASKS, train_nav2d

    if args.task in RL_TASKS:
        return train_nav2d(args)
    for name in ("estimator", "outer", "trajectories"):
        if getattr(args, name) is not None:
            raise ValueError(f"--{name} is an option of {' and '.join(RL_TASKS)}, not of {args.task}")
    if args.nproc is not None:
        from .launch import relaunch

        return relaunch(args)
    try:
        init_from_env()  # joins torchrun's process group; nothing to do for a single process
        return train(args)
    except (DistributedError, RunLockedError) as exc:
        print(f"mamlbook train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown()


def train(args: argparse.Namespace) -> int:
    from ..train.distributed import TaskParallel, folder_lock
    from ..train.trainer import Trainer

    parallel = TaskParallel.resolve(None)
    rank0 = parallel is None or parallel.rank == 0
    say = print if rank0 else (lambda *_, **__: None)
    say(f"world size {1 if parallel is None else parallel.world}")

    overrides = {
        key: value
        for key, value in {
            "model": args.model,
            "k_shot": args.k_shot,
            "meta_batch": args.meta_batch,
            "inner_steps": args.inner_steps,
            "inner_lr": args.inner_lr,
            "meta_lr": args.meta_lr,
            "order": args.order,
            "algorithm": args.algorithm,
            "strategy": args.strategy,
            "precision": args.precision,
            "eval_every": args.eval_every,
            "eval_tasks": args.eval_tasks,
            "seed": args.seed,
            "iterations": args.iterations,
            "clip_grad_norm": args.clip_grad_norm,
        }.items()
        if value is not None
    }
    if args.without:
        if args.algorithm != "mamlpp":
            raise ValueError("--without switches off a piece of MAML++: it needs --algorithm mamlpp")
        overrides["algorithm_options"] = {k: v for piece in args.without for k, v in MAMLPP_PIECES[piece].items()}
    # The folder's lock is held (by rank 0) from before the first look at it to the end.
    with folder_lock(args.out, parallel):
        if args.resume:
            changed = sorted(set(overrides) - {"iterations"})
            if changed:
                raise ValueError(
                    f"--resume continues the saved run; these options would change it: {', '.join(changed)}"
                )
            trainer = Trainer.resume(args.out, **overrides)
            say(f"resuming {args.out} at iteration {trainer.iteration} of {trainer.config.iterations}")
        else:
            checkpoint = args.out / "checkpoint.pt"

            def fresh() -> None:
                if checkpoint.exists():
                    raise ValueError(f"{checkpoint} exists; pass --resume to continue it or choose another --out")

            if parallel is None:
                fresh()
            else:
                parallel.on_rank0(fresh)  # rank 0's folder decides, for every rank
            config = named_config(args.task, args.preset, overrides)
            trainer = Trainer(config, args.out)
        task = PRESETS[args.task]["cpu"]["task"] if args.task in PRESETS else args.task
        if trainer.config.task != task:
            raise ValueError(f"{args.out} holds a {trainer.config.task!r} run, not {task!r}")
        say(f"strategy: {trainer.strategy}")
        trainer.fit(progress=not args.no_progress)
        if not rank0:
            return 0  # the baseline and the report are rank 0's
        return _finish(args, trainer)


def _finish(args: argparse.Namespace, trainer: Trainer) -> int:
    """The pretrained baseline (rank 0 alone) and the closing report."""
    from ..train.baseline import pretrain

    baseline_path = args.out / "baseline.pt"
    # Joint pretraining means nothing for classification tasks whose labels are shuffled per task.
    default_baseline = 0 if trainer.loss == "ce" else trainer.config.iterations
    iterations = default_baseline if args.baseline_iterations is None else args.baseline_iterations
    if iterations > 0 and not baseline_path.exists():
        c = trainer.config
        params = pretrain(
            c.make_model(),
            trainer.tasks,
            iterations,
            c.meta_batch,
            c.meta_lr,
            trainer.loss,
            torch.Generator().manual_seed(c.seed + 1),
            progress=not args.no_progress,
        )
        save_checkpoint(
            baseline_path,
            {
                "kind": "pretrained",
                "config": c.to_dict(),
                "iteration": iterations,
                "params": {k: v.cpu() for k, v in params.items()},
            },
        )
    last = trainer.history[-1] if trainer.history else {}
    print(
        f"done: iteration {trainer.iteration}, "
        f"held-out loss after adapting {last.get('val_loss_post', float('nan')):.4f}"
    )
    print(
        f"wrote {args.out}/checkpoint.pt, metrics.jsonl, learning_curve.png"
        + (", baseline.pt" if baseline_path.exists() else "")
    )
    return 0
