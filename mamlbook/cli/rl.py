"""`mamlbook train nav2d | cheetah-vel` and `mamlbook eval nav2d | cheetah-vel`: MAML for policies on 2D
navigation or the running cheetah (`mamlbook.rl`; the cheetah needs the `mujoco` extra).

Training runs under torchrun as `mamlbook train` does (`--nproc N`, or `torchrun --standalone
--nproc_per_node N -m mamlbook train nav2d ...`): the processes train one run together, task-parallel
(`rl.parallel`); rank 0 alone prints and writes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RL_TASKS = ("nav2d", "cheetah-vel")  # `mamlbook train` and `mamlbook eval` names of `rl.registry.ENVS`

# train options that have no meaning for the RL tasks: refused rather than ignored
TRAIN_ONLY_SUPERVISED = (
    "preset",
    "model",
    "k_shot",
    "inner_steps",
    "meta_lr",
    "order",
    "algorithm",
    "without",
    "strategy",
    "eval_every",
    "eval_tasks",
    "clip_grad_norm",
)


def train_nav2d(args: argparse.Namespace) -> int:
    """Train `args.task` (nav2d or cheetah-vel; under torchrun: as one process of a distributed run);
    errors of the run end as one line."""
    from ..rl.registry import get_env
    from ..train.distributed import DistributedError, init_from_env, shutdown

    given = [name for name in TRAIN_ONLY_SUPERVISED if getattr(args, name, None) not in (None, False)]
    if given:
        raise ValueError(f"{args.task} does not take {', '.join('--' + g.replace('_', '-') for g in given)}")
    get_env(args.task).check()  # MuJoCo for the cheetah: an error that names the extra, before any launch
    if getattr(args, "nproc", None) is not None:
        from .launch import relaunch

        return relaunch(args)
    try:
        init_from_env()  # joins torchrun's process group; nothing to do for a single process
        return _train_nav2d(args)
    except DistributedError as exc:
        print(f"mamlbook train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown()


def _train_nav2d(args: argparse.Namespace) -> int:
    from ..rl.parallel import Nav2DParallel
    from ..rl.trainer import Nav2DConfig, Nav2DTrainer

    parallel = Nav2DParallel.resolve(None)
    rank0 = parallel is None or parallel.rank == 0
    say = print if rank0 else (lambda *_, **__: None)
    distributed = False if parallel is None else parallel

    def on_rank0(fn):
        return fn() if parallel is None else parallel.on_rank0(fn)

    settings = {
        "estimator": args.estimator,
        "outer": args.outer,
        "meta_batch": args.meta_batch,
        "trajectories": args.trajectories,
        "inner_lr": args.inner_lr,
        "seed": args.seed,
    }
    settings = {k: v for k, v in settings.items() if v is not None}
    env = {} if args.task == "nav2d" else {"env": args.task}
    out: Path = args.out
    if args.resume:
        if settings:
            raise ValueError(f"--resume continues the saved run; these options would change it: {', '.join(settings)}")
        extra = {} if args.iterations is None else {"iterations": args.iterations}
        trainer = Nav2DTrainer.resume(out, distributed=distributed, **extra)
        if trainer.config.env != args.task:
            raise ValueError(f"{out} holds a {trainer.config.env!r} run, not {args.task!r}")
        say(f"resuming {out} at iteration {trainer.iteration} of {trainer.config.iterations}")
    else:

        def fresh() -> None:
            checkpoint = out / "checkpoint.pt"
            if checkpoint.exists():
                raise ValueError(f"{checkpoint} exists; pass --resume to continue it or choose another --out")

        on_rank0(fresh)  # rank 0's folder decides, for every rank
        if args.iterations is not None:
            settings["iterations"] = args.iterations
        trainer = Nav2DTrainer(Nav2DConfig(**settings, **env), out, distributed=distributed)
    if parallel is not None:
        say(f"world size {parallel.world}")
    trainer.fit(progress=not args.no_progress)
    c = trainer.config
    baseline = args.baseline_iterations or 0
    if baseline > 0:  # the pretrained baseline: the same outer step on a mixture of goals, no inner loop
        folder = out / "pretrained"
        if on_rank0(lambda: (folder / "checkpoint.pt").exists()):
            pretrained = Nav2DTrainer.resume(folder, distributed=distributed, iterations=baseline)
        else:
            pretrained = Nav2DTrainer(
                Nav2DConfig.from_dict({**c.to_dict(), "inner_steps": 0, "iterations": baseline}),
                folder,
                distributed=distributed,
            )
        pretrained.fit(progress=not args.no_progress)
    if not rank0:
        return 0
    last = trainer.history[-1] if trainer.history else {}
    print(
        f"done: iteration {trainer.iteration}, return before adapting {last.get('pre_return', float('nan')):.1f}, "
        f"after one step {last.get('post_return', float('nan')):.1f}"
    )
    print(f"wrote {out}/checkpoint.pt, metrics.jsonl" + (", pretrained/" if baseline > 0 else ""))
    return 0


def eval_nav2d(args: argparse.Namespace) -> int:
    """`mamlbook eval nav2d --run DIR` (or `mamlbook eval cheetah-vel DIR`): the run against its baselines
    on the fixed test goals."""
    from ..rl.evaluate import TEST_GOALS, TEST_TRAJECTORIES, evaluate_run, format_table, test_goals
    from ..rl.registry import get_env
    from ..rl.trainer import load_policy

    task = str(args.run)
    run = args.rl_run if args.rl_run is not None else args.checkpoint
    if run is None:
        raise ValueError(f"mamlbook eval {task} needs a run folder written by `mamlbook train {task}` (or --run DIR)")
    get_env(task).check()
    config, _, _ = load_policy(run)
    if config.env != task:
        raise ValueError(f"{run} holds a {config.env!r} run, not {task!r}")
    goals = test_goals(args.tasks if args.tasks is not None else TEST_GOALS, env=task)
    trajectories = args.trajectories or TEST_TRAJECTORIES
    report = evaluate_run(run, steps=args.steps, goals=goals, trajectories=trajectories)
    print(format_table(report))
    folder = run if run.is_dir() else run.parent
    for row in report["methods"].values():
        row.pop("per_goal", None)
    path = folder / "evaluation.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return 0
