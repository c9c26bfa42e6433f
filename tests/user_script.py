"""Meta-train your own model on your own tasks with mamlbook, using only its public API.

Run it with `python user_script.py [FOLDER]`: it trains MAML for a few iterations with checkpoints
in FOLDER (a temporary folder by default), resumes the run where it stopped, checks on held-out
tasks that adapting lowers their loss, and prints a one-line summary. It asserts its own results,
so it doubles as the test that an installed wheel works (tests/test_wheel.py runs it).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import mamlbook


class AffineTasks:
    """A task distribution of your own: each task is a line y = a * x + b with its own a and b.

    All the Trainer needs is `sample(batch_size, generator) -> mamlbook.TaskBatch` (randomness
    from `generator` only, so that a seed fixes the run and a resume is exact) and `loss`.
    """

    loss = "mse"

    def __init__(self, k_shot: int = 5, k_query: int = 10) -> None:
        self.k_shot, self.k_query = k_shot, k_query

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> mamlbook.TaskBatch:
        a = torch.rand(batch_size, 1, 1, generator=generator) * 4 - 2
        b = torch.rand(batch_size, 1, 1, generator=generator) * 2 - 1
        x = torch.rand(batch_size, self.k_shot + self.k_query, 1, generator=generator) * 4 - 2
        y = a * x + b
        k = self.k_shot
        return mamlbook.TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])


class SmallNet(nn.Module):
    """A model of your own: any `nn.Module` whose forward is a function of its parameters."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def main(folder: Path) -> str:
    torch.manual_seed(0)
    # The config holds the settings; its task and model names are ignored when objects are given.
    config = mamlbook.TrainConfig(
        iterations=40, meta_batch=8, inner_steps=1, inner_lr=0.05, meta_lr=3e-3,
        eval_every=10, eval_tasks=20, checkpoint_every=20, seed=1,
    )  # fmt: skip
    trainer = mamlbook.Trainer(config, out=folder, model=SmallNet(), tasks=AffineTasks())
    trainer.fit(progress=False)
    assert (folder / "checkpoint.pt").exists() and trainer.iteration == 40

    # Later, in another process: the same kinds of objects again, weights and optimizer from the checkpoint.
    resumed = mamlbook.Trainer.resume(folder, model=SmallNet(), tasks=AffineTasks(), iterations=80)
    start = resumed.iteration
    assert start == 40, f"resume started at iteration {start}, not the saved 40"
    resumed.fit(progress=False)
    assert resumed.iteration == 80
    logged = [json.loads(line)["iteration"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(10, 81, 10)), f"metrics.jsonl does not continue the run: {logged}"

    # Meta-test on held-out tasks (a seed training never used): query loss after 0..5 inner steps.
    held_out = AffineTasks().sample(200, torch.Generator().manual_seed(12345))
    curve = mamlbook.adaptation_curve(resumed.model, resumed.params, held_out, "mse", steps=5, inner_lr=0.05)
    loss = curve["loss"].mean(0)  # [steps + 1], averaged over the tasks
    assert loss[-1] < loss[0], f"adapting did not help: query loss {loss.tolist()}"

    return (
        f"mamlbook {mamlbook.__version__} (torch {torch.__version__}): trained 40 iterations, "
        f"resumed at {start} to {resumed.iteration}; held-out query MSE "
        f"{loss[0]:.3f} before adapting, {loss[-1]:.3f} after 5 steps"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print(main(Path(tmp) / "run"))
