"""The Trainer: meta-training with validation, progress, atomic checkpoints, exact resume and metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .algorithms import any_batch_norm, learned_rates
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import adaptation_curve
from .functional import Params, check_params, params_of
from .meta.reptile import reptile_pseudo_gradient
from .runconfig import DTYPES, TrainConfig
from .tasks import TaskBatch

VALIDATION_SEED_OFFSET = 10_000


class Trainer:
    """Meta-trains `config.model` on `config.task` with Adam, by `config.algorithm` (MAML by default).

    Learned inner rates (Meta-SGD, LSLR) are trained by the same Adam and saved with the weights.

    With `out`, writes `checkpoint.pt`, `metrics.jsonl`, `config.json` and `learning_curve.png`
    there. The same seed gives the same run, and a resumed run continues it exactly.
    """

    def __init__(self, config: TrainConfig, out: str | os.PathLike | None = None) -> None:
        self.config = config
        self.out = Path(out) if out is not None else None
        self.tasks = config.make_task().for_split("train")
        self.algorithm = config.make_algorithm()
        self.model = self.algorithm.prepare_model(config.make_model(), config.inner_steps)
        self.loss = self.tasks.loss
        self.params: Params = params_of(self.model)
        self.rule = self.algorithm.make_rule(self.model, self.params, config.inner_lr, config.inner_steps)
        self.strategy = self.algorithm.resolve_strategy(config.strategy, self.model, self.rule)
        self.rates: Params = learned_rates(self.rule)
        self.optimizer = torch.optim.Adam([*self.params.values(), *self.rates.values()], lr=config.meta_lr)
        self.schedule = self.algorithm.schedule(config.iterations)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self.validation = self._validation_tasks()

    # ----- data -----
    def _validation_tasks(self) -> TaskBatch:
        """A fixed set of held-out tasks, drawn from a seed of their own, the same on every resume."""
        g = torch.Generator().manual_seed(self.config.seed + VALIDATION_SEED_OFFSET)
        return self._to_device(self.tasks.for_split("val").sample(self.config.eval_tasks, g))

    def _to_device(self, batch: TaskBatch) -> TaskBatch:
        return batch.to(self.config.device, DTYPES[self.config.dtype])

    # ----- training -----
    def step(self) -> float:
        """One meta-iteration: sample a meta-batch, compute the meta-loss, take an Adam step.

        The algorithm's schedules (derivative order, loss weights, meta lr) are functions of the
        iteration, so a resumed run recomputes them exactly.
        """
        c, a = self.config, self.algorithm
        batch = self._to_device(self.tasks.sample(c.meta_batch, self.generator))
        for group in self.optimizer.param_groups:
            group["lr"] = a.meta_lr_at(c.meta_lr, self.iteration, self.schedule)
        self.optimizer.zero_grad(set_to_none=True)
        if a.reptile:
            vectorized = self.strategy != "loop" and not any_batch_norm(self.model)
            loss, pseudo = reptile_pseudo_gradient(
                self.model, self.params, batch, self.loss, c.inner_steps, self.rule, vectorized
            )
            for k, v in self.params.items():
                v.grad = pseudo[k]
        else:
            order = a.order_at(self.iteration, c.order, self.schedule)
            weights = a.loss_weights(c.inner_steps, self.iteration, self.schedule)
            loss = a.meta_loss(
                self.model, self.params, batch, self.loss, c.inner_steps, self.rule, order, self.strategy, weights
            )
            loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return loss.item()

    def validate(self) -> dict[str, float]:
        """Query loss (and accuracy, for classification) of the held-out tasks before and after adapting."""
        c = self.config
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
        )
        row = {
            f"val_{name}_{when}": values.mean(0)[index].item()
            for name, values in curve.items()
            for when, index in (("pre", 0), ("post", -1))
        }
        return row

    def fit(self, iterations: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
        """Train until `iterations` meta-iterations in total (default: the config's), then save."""
        c = self.config
        target = c.iterations if iterations is None else iterations
        window: list[float] = []
        started = time.perf_counter()
        bar = tqdm(total=target, initial=self.iteration, desc=f"meta-train {c.task}", disable=not progress)
        try:
            while self.iteration < target:
                window.append(self.step())
                bar.update(1)
                if self.iteration % c.eval_every == 0 or self.iteration == target:
                    row = {"iteration": self.iteration, "train_loss": sum(window) / len(window), **self.validate()}
                    row["seconds"] = round(time.perf_counter() - started, 3)
                    self.history.append(row)
                    self._append_metrics(row)
                    window.clear()
                    bar.set_postfix(meta_loss=f"{row['train_loss']:.3f}", val=f"{row['val_loss_post']:.3f}")
                if self.out is not None and self.iteration % c.checkpoint_every == 0:
                    self.save()
        except KeyboardInterrupt:
            if self.out is not None:
                self.save()
                bar.write(f"interrupted: saved iteration {self.iteration} to {self.out}; continue with --resume")
            raise
        finally:
            bar.close()
        if self.out is not None:
            self.save()
            self.plot()
        return self.history

    # ----- persistence -----
    def state(self) -> dict[str, Any]:
        return {
            "kind": self.config.algorithm,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "rates": {k: v.detach().cpu() for k, v in self.rates.items()},
            "buffers": {k: v.detach().cpu() for k, v in self.model.named_buffers()},
            "schedule": dict(self.schedule),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
            "strategy": self.strategy,
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        if path is None:
            if self.out is None:
                raise ValueError("Trainer has no output folder; pass a path to save()")
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            path = self.out / "checkpoint.pt"
        return save_checkpoint(path, self.state())

    @classmethod
    def resume(cls, source: str | os.PathLike, out: str | os.PathLike | None = None, **overrides: Any) -> Trainer:
        """Rebuild a Trainer from a checkpoint (file or run folder) to continue exactly where it stopped.

        `overrides` may change settings that do not alter the run's past, such as `iterations`.
        """
        payload = load_checkpoint(source)
        config = TrainConfig.from_dict({**payload["config"], **overrides})
        if out is None:
            source = Path(source)
            out = source if source.is_dir() else source.parent
        trainer = cls(config, out)
        trainer.load_state(payload)
        trainer._rewrite_metrics()
        return trainer

    def load_state(self, payload: dict[str, Any]) -> None:
        check_params(self.model, payload["params"])
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(payload["params"][k])
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

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _rewrite_metrics(self) -> None:
        """Make metrics.jsonl match the checkpoint: rows logged after it will be logged again."""
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(row) + "\n" for row in self.history)
        (self.out / "metrics.jsonl").write_text(lines)

    def plot(self) -> Path | None:
        if self.out is None or not self.history:
            return None
        from .plots import plot_learning_curve

        return plot_learning_curve(
            self.history, self.out / "learning_curve.png", title=f"{self.config.algorithm} on {self.config.task}"
        )
