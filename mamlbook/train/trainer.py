"""The Trainer: meta-training with validation, progress, atomic checkpoints, exact resume and metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..functional import Params, load_params_, params_of
from ..losses import LossFn
from ..meta.prototypes import prototype_accuracy, prototype_head
from ..meta.reptile import reptile_pseudo_gradient
from ..precision import reduced_precision
from ..progress import tqdm
from ..tasks import TaskBatch
from .algorithms import Algorithm, any_batch_norm, learned_rates, make_algorithm
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .distributed import TaskParallel, folder_lock, run_lock
from .evaluate import adaptation_curve
from .runconfig import DTYPES, TrainConfig

VALIDATION_SEED_OFFSET = 10_000

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


@runtime_checkable
class TaskSource(Protocol):
    """What the Trainer needs of a task distribution handed to it as an object.

    `sample(batch_size, generator)` returns a `TaskBatch` of `batch_size` tasks (support_x
    `[B, S, ...]`, support_y `[B, S, ...]`, query_x `[B, Q, ...]`, query_y `[B, Q, ...]`) and must
    draw its randomness from `generator` alone, so that a seed fixes the run and resume is exact.
    Optional: `loss` ("mse", "ce" or "bce"; else pass `loss=` to the Trainer) and `for_split(split)`
    returning the distribution of held-out "val" tasks (else validation tasks come from the same
    distribution, drawn with a seed of their own).
    """

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch: ...


class DivergenceError(RuntimeError):
    """Meta-training produced a non-finite meta-loss or meta-gradient; no parameter was updated with it."""


def _qualname(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def wall_seconds_of(history: list[dict[str, Any]]) -> float:
    """The training time a history records, for checkpoints saved before CPU time was: each row's
    "seconds" is the wall time since its call of `fit` began and restarts with the next call, so the
    stretches are summed (a drop marks a new call). Wall time stands in for CPU time; with one torch
    thread, as the studies train, the two agree closely."""
    total = previous = 0.0
    for row in history:
        seconds = float(row.get("seconds", 0.0))
        total += seconds - previous if seconds >= previous else seconds
        previous = seconds
    return total


def trained_cpu_seconds(payload: dict[str, Any]) -> float:
    """The training time a checkpoint records: its CPU-time count, or for a checkpoint saved before
    that count existed, the wall time its history records (`wall_seconds_of`)."""
    saved = payload.get("cpu_seconds")
    return float(saved) if saved is not None else wall_seconds_of(payload["history"])


class Trainer:
    """Meta-trains `config.model` on `config.task` with Adam, by `config.algorithm` (MAML by default).

    Learned inner rates (Meta-SGD, LSLR) are trained by the same Adam and saved with the weights.

    With `out`, writes `checkpoint.pt`, `metrics.jsonl`, `config.json`, `run.json` and
    `learning_curve.png` there, holding `run.lock` while it writes (another run into the folder is
    refused). The same seed gives the same run, and a resumed run continues it exactly.

    `cpu_seconds` counts the process CPU time spent in `fit` since the run began, across resumes (it is
    saved with the checkpoint, and each metrics row carries it), so a run cut short and resumed reports
    what an uninterrupted one would have cost, not only its last stretch.

    Under torchrun (or in an initialized process group) it trains task-parallel: each process takes
    its share of every meta-batch and one all-reduce combines the meta-gradients, which equal the
    single-process ones (see `train.distributed`); only rank 0 writes.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | os.PathLike | None = None,
        *,
        model: nn.Module | None = None,
        tasks: TaskSource | None = None,
        algorithm: str | Algorithm | None = None,
        optimizer: OptimizerFactory | None = None,
        loss: str | LossFn | None = None,
        distributed: bool | TaskParallel | None = None,
    ) -> None:
        """`config` holds the settings; the objects, where given, replace what its names would build.

        `model` is trained from its current weights (moved to the config's device and dtype),
        `tasks` is any `TaskSource`, `algorithm` an `Algorithm` or a name (default `config.algorithm`
        with `config.algorithm_options`), `optimizer` a function from the list of meta-parameters to
        a `torch.optim.Optimizer` (default Adam at `config.meta_lr`), `loss` overrides `tasks.loss`.
        `distributed`: None trains task-parallel when there is a process group of 2+ processes (or
        torchrun describes one, which it then joins), True insists on one, False never.
        """
        if tasks is not None and not isinstance(tasks, TaskSource):
            raise TypeError(f"tasks must have a sample(batch_size, generator) method; got {type(tasks).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(algorithm, str):
            algorithm = make_algorithm(algorithm, **(config.algorithm_options if algorithm == config.algorithm else {}))
        if algorithm is not None and not isinstance(algorithm, Algorithm):
            raise TypeError(f"algorithm must be an Algorithm or a name; got {type(algorithm).__name__}")
        # The run's config says what it was made of: names stay only where they still describe it.
        changes: dict[str, Any] = {}
        if model is not None:
            changes["model"] = None
        if tasks is not None:
            changes["task"] = None
        if algorithm is not None:
            changes.update(algorithm=algorithm.name, algorithm_options=_algorithm_options(algorithm))
        if changes:
            config = dataclasses.replace(config, **changes)
        self.config = config
        self.out = Path(out) if out is not None else None
        self.objects = {
            "model": None if model is None else _qualname(model),
            "tasks": None if tasks is None else _qualname(tasks),
            "optimizer": optimizer is not None,
        }
        source = tasks if tasks is not None else config.make_task()
        self.tasks = source.for_split("train") if hasattr(source, "for_split") else source
        self.loss = loss if loss is not None else getattr(self.tasks, "loss", None)
        if self.loss is None:
            raise ValueError(f"{type(self.tasks).__name__} has no `loss` attribute: pass loss='mse', 'ce' or 'bce'")
        self.algorithm = algorithm if algorithm is not None else config.make_algorithm()
        if model is not None:
            base = model.to(device=config.device, dtype=DTYPES[config.dtype])
        else:
            base = config.make_model()
        self.model = self.algorithm.prepare_model(base, config.inner_steps)
        self.params: Params = params_of(self.model)
        self.rule = self.algorithm.make_rule(self.model, self.params, config.inner_lr, config.inner_steps)
        self.validation = self._validation_tasks()
        # An example batch lets "auto" probe a model with layers off its verified lists (engine.verified).
        self.strategy = self.algorithm.resolve_strategy(config.strategy, self.model, self.rule, batch=self.validation)
        self.rates: Params = learned_rates(self.rule)
        meta_parameters = [*self.params.values(), *self.rates.values()]
        if optimizer is None:
            self.optimizer = torch.optim.Adam(meta_parameters, lr=config.meta_lr)
        else:
            self.optimizer = optimizer(meta_parameters)
            if not isinstance(self.optimizer, torch.optim.Optimizer):
                raise TypeError("optimizer must be a function that returns a torch.optim.Optimizer for the parameters")
        self.schedule = self.algorithm.schedule(config.iterations)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.iteration = 0
        self.cpu_seconds = 0.0
        self.saved_iteration: int | None = None
        self.history: list[dict[str, Any]] = []
        self.parallel = TaskParallel.resolve(distributed)
        self.world_size = 1 if self.parallel is None else self.parallel.world
        self.launches = [{"iteration": 0, "world_size": self.world_size}]
        if self.parallel is not None:
            self.parallel.start(self)

    # ----- data -----
    def _validation_tasks(self) -> TaskBatch:
        """A fixed set of held-out tasks, drawn from a seed of their own, the same on every resume."""
        g = torch.Generator().manual_seed(self.config.seed + VALIDATION_SEED_OFFSET)
        held_out = self.tasks.for_split("val") if hasattr(self.tasks, "for_split") else self.tasks
        return self._to_device(held_out.sample(self.config.eval_tasks, g))

    def _to_device(self, batch: TaskBatch) -> TaskBatch:
        return batch.to(self.config.device, DTYPES[self.config.dtype])

    # ----- training -----
    def step(self) -> float:
        """One meta-iteration: sample a meta-batch, compute the meta-loss, take an Adam step.

        The algorithm's schedules (derivative order, loss weights, meta lr) are functions of the
        iteration, so a resumed run recomputes them exactly. A non-finite meta-loss or meta-gradient
        raises `DivergenceError` before the optimizer moves: the parameters stay the last finite ones.
        """
        c, a = self.config, self.algorithm
        batch = self.tasks.sample(c.meta_batch, self.generator)
        if self.parallel is not None:  # every rank draws the whole meta-batch and keeps its share
            batch = self.parallel.share(batch, self.model)
        batch = self._to_device(batch)
        if a.cosine:
            for group in self.optimizer.param_groups:
                group["lr"] = a.meta_lr_at(c.meta_lr, self.iteration, self.schedule)
        self.optimizer.zero_grad(set_to_none=True)
        if a.reptile:
            vectorized = self.strategy != "loop" and not any_batch_norm(self.model)
            with reduced_precision(c.precision, c.device):
                loss, pseudo = reptile_pseudo_gradient(
                    self.model, self.params, batch, self.loss, c.inner_steps, self.rule, vectorized
                )
            for k, v in self.params.items():
                v.grad = pseudo[k].to(v.dtype)
        else:
            loss = self.meta_objective(batch)
            loss.backward()
        if self.parallel is not None:  # the meta-batch's loss and gradient, the same on every rank
            loss = self.parallel.reduce(loss, self._meta_parameters(), self.model)
        self._check_finite(loss)
        if c.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self._meta_parameters(), c.clip_grad_norm)
        self.optimizer.step()
        self.iteration += 1
        return loss.item()

    def meta_objective(self, batch: TaskBatch, iteration: int | None = None) -> Tensor:
        """The meta-loss of `batch` at `iteration` (default: the run's current one) by this run's
        algorithm, schedules, strategy and precision; differentiating it is the caller's (`step`)."""
        c, a = self.config, self.algorithm
        if a.reptile:
            raise ValueError("reptile has no meta-loss to differentiate: its update is the adapted weights' mean")
        at = self.iteration if iteration is None else iteration
        order = a.order_at(at, c.order, self.schedule)
        weights = a.loss_weights(c.inner_steps, at, self.schedule)
        # Reduced precision covers the forward and the inner loops; the outer backward leaves it.
        with reduced_precision(c.precision, c.device):
            loss = a.meta_loss(
                self.model, self.params, batch, self.loss, c.inner_steps, self.rule, order, self.strategy, weights
            )
        return loss.to(next(iter(self.params.values())).dtype)

    def meta_parameters(self) -> dict[str, Tensor]:
        """What the outer loop updates, by name: the model's parameters and learned rates (`rate:NAME`)."""
        return {**self.params, **{f"rate:{k}": v for k, v in self.rates.items()}}

    def _meta_parameters(self) -> list[Tensor]:
        return [*self.params.values(), *self.rates.values()]

    def _check_finite(self, loss: Tensor) -> None:
        """Stop at the first non-finite meta-loss or meta-gradient, saying where and what to try."""
        names = [*self.params, *(f"rate:{k}" for k in self.rates)]
        bad = None if torch.isfinite(loss).all() else f"the meta-loss is {loss.item()}"
        for name, value in zip(names, self._meta_parameters(), strict=True):
            if bad is None and value.grad is not None and not torch.isfinite(value.grad).all():
                bad = f"the meta-gradient of {name!r} is not finite"
        if bad is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        c = self.config
        if self.saved_iteration is not None and self.out is not None:
            last = f"the last good checkpoint is {self.out / 'checkpoint.pt'} (iteration {self.saved_iteration})"
        else:
            last = "no checkpoint was saved" + ("" if self.out is None else f" in {self.out}")
        clip = "" if c.clip_grad_norm is None else f" (now {c.clip_grad_norm})"
        raise DivergenceError(
            f"meta-training diverged at iteration {self.iteration + 1}: {bad}; the parameters were not updated, and "
            f"{last}. Try a lower inner learning rate (now {c.inner_lr}) or meta learning rate (now {c.meta_lr}), "
            f"or clip the meta-gradient norm (clip_grad_norm{clip})."
        )

    def validate(self) -> dict[str, float]:
        """Query loss (and accuracy, for classification) of the held-out tasks before and after adapting."""
        c = self.config
        if self.algorithm.prototypes:  # no adaptation: before and after are the prototype classifier's
            with reduced_precision(c.precision, c.device):
                losses, accuracies = prototype_accuracy(self.model, self.params, self.validation)
            loss, acc = losses.mean().item(), accuracies.mean().item()
            return {"val_loss_pre": loss, "val_loss_post": loss, "val_accuracy_pre": acc, "val_accuracy_post": acc}
        classify = self.loss in ("ce", "bce")
        curve = adaptation_curve(
            self.model,
            self.params,
            self.validation,
            self.loss,
            c.inner_steps,
            c.inner_lr,
            with_accuracy=classify,
            rule=self.rule,
            init=self._prototype_init(),
        )
        row = {
            f"val_{name}_{when}": values.mean(0)[index].item()
            for name, values in curve.items()
            for when, index in (("pre", 0), ("post", -1))
        }
        return row

    def _prototype_init(self):
        """ProtoMAML's per-task starting point (the head set from the task's prototypes), else None."""
        if not self.algorithm.prototype_head:
            return None
        return lambda params, sx, sy: prototype_head(self.model, params, sx, sy)

    def fit(self, iterations: int | None = None, progress: bool = True, plot: bool = True) -> list[dict[str, Any]]:
        """Train until `iterations` meta-iterations in total (default: the config's), then save (and,
        with `plot`, draw learning_curve.png: studies of many tiny runs skip it)."""
        c = self.config
        target = c.iterations if iterations is None else iterations
        window: list[float] = []
        started = time.perf_counter()
        counted = time.process_time()

        def count_cpu() -> float:
            nonlocal counted
            now = time.process_time()
            self.cpu_seconds += now - counted
            counted = now
            return round(self.cpu_seconds, 3)

        where = "" if self.parallel is None else f" on {self.world_size} processes"
        writer = self.parallel is None or self.parallel.rank == 0
        with folder_lock(self.out, self.parallel):
            bar = tqdm(
                total=target,
                initial=self.iteration,
                desc=f"meta-train {c.task}{where}",
                disable=not (progress and writer),
            )
            try:
                while self.iteration < target:
                    window.append(self.step())
                    bar.update(1)
                    if self.iteration % c.eval_every == 0 or self.iteration == target:
                        row = {"iteration": self.iteration, "train_loss": sum(window) / len(window), **self.validate()}
                        row["seconds"] = round(time.perf_counter() - started, 3)
                        row["cpu_seconds"] = count_cpu()
                        self.history.append(row)
                        self._append_metrics(row)
                        window.clear()
                        bar.set_postfix(meta_loss=f"{row['train_loss']:.3f}", val=f"{row['val_loss_post']:.3f}")
                    if self.out is not None and self.iteration % c.checkpoint_every == 0:
                        count_cpu()
                        self._on_rank0(self.save)
            except KeyboardInterrupt:
                count_cpu()
                if self.out is not None and writer:
                    self.save()
                    bar.write(f"interrupted: saved iteration {self.iteration} to {self.out}; continue with --resume")
                raise
            finally:
                bar.close()
            count_cpu()
            if self.out is not None:
                self._on_rank0(self.save)
                if writer and plot:
                    self.plot()
        return self.history

    def _on_rank0(self, fn: Callable[[], Any]) -> Any:
        """`fn()` here, or on rank 0 alone with its outcome (result or error) on every rank."""
        return fn() if self.parallel is None else self.parallel.on_rank0(fn)

    # ----- persistence -----
    def state(self) -> dict[str, Any]:
        return {
            "kind": self.config.algorithm,
            "objects": self.objects,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "cpu_seconds": self.cpu_seconds,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "rates": {k: v.detach().cpu() for k, v in self.rates.items()},
            "buffers": {k: v.detach().cpu() for k, v in self.model.named_buffers()},
            "schedule": dict(self.schedule),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
            "strategy": self.strategy,
            "world_size": self.world_size,
            "launches": self.launches,
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the run's state atomically; refuses non-finite parameters rather than overwrite a good file.

        Without `path`, into the run folder (holding its lock); in a distributed run only rank 0 does.
        """
        for name, value in [*self.params.items(), *self.rates.items()]:
            if not torch.isfinite(value).all():
                raise DivergenceError(f"parameter {name!r} is not finite at iteration {self.iteration}: not saved")
        if path is not None:
            return save_checkpoint(path, self.state())
        if self.out is None:
            raise ValueError("Trainer has no output folder; pass a path to save()")
        self.saved_iteration = self.iteration
        if self.parallel is not None and self.parallel.rank != 0:
            return self.out / "checkpoint.pt"
        with run_lock(self.out):
            (self.out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            run = {"world_size": self.world_size, "launches": self.launches}
            (self.out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
            return save_checkpoint(self.out / "checkpoint.pt", self.state())

    @classmethod
    def resume(
        cls,
        source: str | os.PathLike,
        out: str | os.PathLike | None = None,
        *,
        model: nn.Module | None = None,
        tasks: TaskSource | None = None,
        algorithm: str | Algorithm | None = None,
        optimizer: OptimizerFactory | None = None,
        loss: str | LossFn | None = None,
        distributed: bool | TaskParallel | None = None,
        **overrides: Any,
    ) -> Trainer:
        """Rebuild a Trainer from a checkpoint (file or run folder) to continue exactly where it stopped.

        A run made from objects is resumed by passing the same kinds of objects again (its weights
        come from the checkpoint); a missing or different one is a `CheckpointError`. `overrides`
        may change settings that do not alter the run's past, such as `iterations`. The number of
        processes may change: a step's result does not depend on it (up to floating-point rounding).
        """
        parallel = TaskParallel.resolve(distributed)
        payload = load_checkpoint(source) if parallel is None else parallel.load(source)
        saved = payload.get("objects") or {}
        given = {"model": model, "tasks": tasks}
        for kind, obj in given.items():
            if saved.get(kind) is not None and obj is None:
                raise CheckpointError(
                    f"{source} was trained on a {kind} given as an object ({saved[kind]}): pass {kind}=..."
                )
            if saved.get(kind) is not None and _qualname(obj) != saved[kind]:
                raise CheckpointError(f"{source} was trained on a {kind} of type {saved[kind]}, not {_qualname(obj)}")
        if saved.get("optimizer") and optimizer is None:
            raise CheckpointError(f"{source} was trained with an optimizer given as a function: pass optimizer=...")
        config = TrainConfig.from_dict({**payload["config"], **overrides})
        if out is None:
            source = Path(source)
            out = source if source.is_dir() else source.parent
        if algorithm is None and payload["config"].get("algorithm") not in (None, config.algorithm):
            algorithm = config.algorithm
        trainer = cls(
            config,
            out,
            model=model,
            tasks=tasks,
            algorithm=algorithm,
            optimizer=optimizer,
            loss=loss,
            distributed=False if parallel is None else parallel,
        )
        try:
            trainer.load_state(payload)
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{source} does not fit the objects given to resume it: {error}") from None
        trainer.saved_iteration = trainer.iteration
        trainer._on_rank0(trainer._rewrite_metrics)
        return trainer

    def load_state(self, payload: dict[str, Any]) -> None:
        load_params_(self.model, self.params, payload["params"])
        with torch.no_grad():
            for k, v in self.rates.items():
                v.copy_(payload["rates"][k])
            for k, v in self.model.named_buffers():
                v.copy_(payload["buffers"][k])
        # Schedules were fixed at the run's start; a longer resumed run keeps them.
        self.schedule = dict(payload.get("schedule", self.schedule))
        self.optimizer.load_state_dict(payload["optimizer"])
        self.generator.set_state(payload["generator"])
        self.iteration = int(payload["iteration"])
        self.history = list(payload["history"])
        self.cpu_seconds = trained_cpu_seconds(payload)
        previous = payload.get("launches", [{"iteration": 0, "world_size": payload.get("world_size", 1)}])
        self.launches = [*previous, {"iteration": self.iteration, "world_size": self.world_size}]
        if self.parallel is not None:
            self.parallel.broadcast(self)

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if self.out is None or (self.parallel is not None and self.parallel.rank != 0):
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _rewrite_metrics(self) -> None:
        """Make metrics.jsonl match the checkpoint: rows logged after it will be logged again."""
        if self.out is None:
            return
        lines = "".join(json.dumps(row) + "\n" for row in self.history)
        with run_lock(self.out):
            (self.out / "metrics.jsonl").write_text(lines)

    def plot(self) -> Path | None:
        if self.out is None or not self.history:
            return None
        from .plots import plot_learning_curve

        task = self.config.task or type(self.tasks).__name__
        return plot_learning_curve(
            self.history, self.out / "learning_curve.png", title=f"{self.config.algorithm} on {task}"
        )


def _algorithm_options(algorithm: Algorithm) -> dict[str, Any]:
    """The fields of `algorithm` that differ from the registered algorithm of its name (all, if unregistered)."""
    try:
        base = make_algorithm(algorithm.name)
    except ValueError:
        return {f.name: getattr(algorithm, f.name) for f in dataclasses.fields(algorithm) if f.name != "name"}
    return {
        f.name: getattr(algorithm, f.name)
        for f in dataclasses.fields(algorithm)
        if f.name != "name" and getattr(algorithm, f.name) != getattr(base, f.name)
    }
