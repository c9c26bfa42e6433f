"""Objects in: a user's own model, task distribution, algorithm and optimizer train, checkpoint and
resume exactly like the registered names, and a resume with the wrong objects is a clear error."""

import json

import pytest
import torch
from torch import nn

import mamlbook as mb
from mamlbook.train.checkpoint import CheckpointError
from mamlbook.train.restore import restore_run


def config(**overrides):
    values = {"iterations": 4, "meta_batch": 3, "eval_every": 2, "eval_tasks": 6, "checkpoint_every": 2, "seed": 5}
    return mb.TrainConfig(**{**values, **overrides})


class Slopes:
    """A user's task distribution: y = a * x with a per-task slope. No `for_split`, which is optional."""

    loss = "mse"

    def sample(self, batch_size, generator=None):
        a = torch.rand(batch_size, 1, 1, generator=generator) * 4 - 2
        x = torch.rand(batch_size, 10, 1, generator=generator) * 2 - 1
        return mb.TaskBatch(x[:, :5], a * x[:, :5], x[:, 5:], a * x[:, 5:])


class TinyNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x):
        return self.body(x)


def test_objects_equal_to_the_named_ones_train_the_same_run():
    named = mb.Trainer(config())
    named.fit(progress=False)
    given = mb.Trainer(config(), model=config().make_model(), tasks=mb.Sinusoid(k_shot=10))
    given.fit(progress=False)
    for k in named.params:
        assert torch.equal(named.params[k], given.params[k]), k
    assert given.config.task is None and given.config.model is None


def seeded_net(seed=0, width=8):
    torch.manual_seed(seed)
    return TinyNet(width)


def test_a_users_model_and_tasks_learn_and_resume_exactly(tmp_path):
    straight = mb.Trainer(config(iterations=6, inner_lr=0.3), tmp_path / "straight", model=seeded_net(), tasks=Slopes())
    straight.fit(progress=False)
    first = mb.Trainer(config(iterations=3, inner_lr=0.3), tmp_path / "split", model=seeded_net(), tasks=Slopes())
    first.fit(progress=False)
    saved = json.loads((tmp_path / "split" / "config.json").read_text())
    assert saved["task"] is None and saved["model"] is None

    resumed = mb.Trainer.resume(tmp_path / "split", model=seeded_net(seed=1), tasks=Slopes(), iterations=6)
    assert resumed.iteration == 3
    resumed.fit(progress=False)
    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k]), k
    # and it learned: adapting to held-out slopes lowers their query loss
    batch = Slopes().sample(50, torch.Generator().manual_seed(123))
    curve = mb.adaptation_curve(resumed.model, resumed.params, batch, "mse", 1, 0.3)["loss"].mean(0)
    assert curve[1] < curve[0], curve


def test_resuming_an_object_run_needs_the_same_kinds_of_objects(tmp_path):
    mb.Trainer(config(iterations=2), tmp_path, model=TinyNet(), tasks=Slopes()).fit(progress=False)
    with pytest.raises(CheckpointError, match="pass model="):
        mb.Trainer.resume(tmp_path, tasks=Slopes())
    with pytest.raises(CheckpointError, match="pass tasks="):
        mb.Trainer.resume(tmp_path, model=TinyNet())
    with pytest.raises(CheckpointError, match="of type .*TinyNet, not .*SineMLP"):
        mb.Trainer.resume(tmp_path, model=mb.SineMLP(), tasks=Slopes())
    with pytest.raises(CheckpointError, match="does not fit"):
        mb.Trainer.resume(tmp_path, model=TinyNet(width=16), tasks=Slopes())
    with pytest.raises(CheckpointError, match="given as Python objects"):
        restore_run(torch.load(tmp_path / "checkpoint.pt", weights_only=True))


def test_bad_objects_are_refused_with_the_reason():
    class NoLoss:
        def sample(self, batch_size, generator=None):
            return Slopes().sample(batch_size, generator)

    with pytest.raises(ValueError, match="no `loss` attribute"):
        mb.Trainer(config(), model=TinyNet(), tasks=NoLoss())
    assert mb.Trainer(config(), model=TinyNet(), tasks=NoLoss(), loss="mse").loss == "mse"
    with pytest.raises(TypeError, match="sample"):
        mb.Trainer(config(), tasks=[1, 2, 3])
    with pytest.raises(TypeError, match="nn.Module"):
        mb.Trainer(config(), model=lambda x: x)
    with pytest.raises(TypeError, match="Optimizer"):
        mb.Trainer(config(), optimizer=lambda params: "sgd")


def test_an_algorithm_object_and_an_optimizer_factory(tmp_path):
    algorithm = mb.make_algorithm("mamlpp", msl=False)

    def sgd(params):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)

    run = mb.Trainer(config(iterations=2), tmp_path, algorithm=algorithm, optimizer=sgd)
    assert isinstance(run.optimizer, torch.optim.SGD)
    assert run.config.algorithm == "mamlpp" and run.config.algorithm_options == {"msl": False}
    run.fit(progress=False)
    with pytest.raises(CheckpointError, match="pass optimizer="):
        mb.Trainer.resume(tmp_path)
    resumed = mb.Trainer.resume(tmp_path, optimizer=sgd, iterations=3)
    assert resumed.algorithm == algorithm and isinstance(resumed.optimizer, torch.optim.SGD)
    resumed.fit(progress=False)
    assert resumed.iteration == 3
