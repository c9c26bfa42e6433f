"""The Trainer: meta-training with validation, progress, atomic checkpoints, exact resume and metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .engine import meta_loss, resolve_strategy
from .evaluate import adaptation_curve
from .functional import Params, check_params, params_of
from .runconfig import DTYPES, TrainConfig
from .tasks import TaskBatch

VALIDATION_SEED_OFFSET = 10_000


class Trainer:
    """Meta-trains `config.model` on `config.task` with Adam on the MAML objective.

    With `out`, writes `checkpoint.pt`, `metrics.jsonl`, `config.json` and `learning_curve.png`
    there. The same seed gives the same run, and a resumed run continues it exactly.
    """

    def __init__(self, config: TrainConfig, out: str | os.PathLike | None = None) -> None:
        self.config = config
        self.out = Path(out) if out is not None else None
        self.tasks = config.make_task().for_split("train")
        self.model = config.make_model()
        self.loss = self.tasks.loss
        self.strategy = resolve_strategy(config.strategy, self.model)
        self.params: Params = params_of(self.model)
        self.optimizer = torch.optim.Adam(self.params.values(), lr=config.meta_lr)
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
        """One meta-iteration: sample a meta-batch, compute the meta-loss, take an Adam step."""
        c = self.config
        batch = self._to_device(self.tasks.sample(c.meta_batch, self.generator))
        loss = meta_loss(self.model, self.params, batch, self.loss, c.inner_steps, c.inner_lr, c.order, self.strategy)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return loss.item()

    def validate(self) -> dict[str, float]:
        """Query loss (and accuracy, for classification) of the held-out tasks before and after adapting."""
        c = self.config
        classify = self.loss in ("ce", "bce")
        curve = adaptation_curve(
            self.model, self.params, self.validation, self.loss, c.inner_steps, c.inner_lr, with_accuracy=classify
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
            "kind": "maml",
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
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

        return plot_learning_curve(self.history, self.out / "learning_curve.png", title=f"MAML on {self.config.task}")
