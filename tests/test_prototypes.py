"""Prototypical networks: the logits are minus squared distances to class means, the loss's gradient is
right in float64, and the Trainer meta-trains them (and refuses what they cannot be)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mamlbook.functional import params_of
from mamlbook.meta.prototypes import prototype_accuracy, prototype_loss, prototypes, task_logits
from mamlbook.tasks import TaskBatch
from mamlbook.train.algorithms import make_algorithm
from mamlbook.train.runconfig import TrainConfig
from mamlbook.train.trainer import Trainer


class Embedder(nn.Module):
    """A model with a `body` (the embedding) and a head the prototypes never use."""

    def __init__(self, dim: int = 4, features: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, features))
        self.head = nn.Linear(features, 2)

    def forward(self, x):
        return self.head(self.body(x))


class Clusters:
    """2-way tasks, each class a tight Gaussian blob around a random centre in the first two of `dim`
    coordinates; the other coordinates are large noise, so an embedding must learn to ignore them."""

    loss = "ce"

    def __init__(self, dim: int = 4, shots: int = 3, queries: int = 5) -> None:
        self.dim, self.shots, self.queries = dim, shots, queries

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TaskBatch:
        centres = torch.zeros(batch_size, 2, self.dim)
        centres[..., :2] = torch.randn(batch_size, 2, 2, generator=generator)
        scale = torch.tensor([0.2, 0.2] + [3.0] * (self.dim - 2))
        rows = torch.arange(batch_size)[:, None]

        def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.arange(2).repeat_interleave(count).expand(batch_size, -1).clone()
            x = centres[rows, y] + scale * torch.randn(batch_size, 2 * count, self.dim, generator=generator)
            return x, y

        (sx, sy), (qx, qy) = draw(self.shots), draw(self.queries)
        return TaskBatch(sx, sy, qx, qy)


def test_logits_are_minus_squared_distances_to_the_class_means():
    torch.manual_seed(0)
    model = Embedder()
    params = params_of(model)
    sx, sy, qx = torch.randn(6, 4), torch.tensor([0, 1, 1, 0, 1, 1]), torch.randn(5, 4)
    with torch.no_grad():
        feats = model.body(torch.cat([sx, qx]))
    means = torch.stack([feats[:6][sy == c].mean(0) for c in (0, 1)])
    expected = -(torch.cdist(feats[6:], means) ** 2)
    assert torch.allclose(task_logits(model, params, sx, sy, qx), expected, atol=1e-5)
    assert torch.allclose(prototypes(feats[:6], sy, 2), means)
    with pytest.raises(ValueError, match="at least one support example"):
        prototypes(feats[:6], torch.zeros(6, dtype=torch.long), 2)


def test_the_loss_gradient_matches_finite_differences_in_float64():
    torch.manual_seed(1)
    model = Embedder().double()
    batch = Clusters().sample(2, torch.Generator().manual_seed(0))
    batch = TaskBatch(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y)
    params = params_of(model)
    (grad,) = torch.autograd.grad(prototype_loss(model, params, batch), [params["body.0.weight"]])
    eps, numeric = 1e-6, torch.zeros_like(grad)
    for index in [(0, 0), (3, 2), (7, 1)]:
        for sign in (1, -1):
            shifted = dict(params)
            moved = params["body.0.weight"].detach().clone()
            moved[index] += sign * eps
            shifted["body.0.weight"] = moved
            numeric[index] += sign * prototype_loss(model, shifted, batch).item() / (2 * eps)
        assert grad[index].item() == pytest.approx(numeric[index].item(), rel=1e-6, abs=1e-9)
    assert grad[:, :].abs().sum() > 0
    head = params_of(model)["head.weight"]
    assert torch.autograd.grad(prototype_loss(model, {**params, "head.weight": head}, batch), [head],
                               allow_unused=True)[0] is None, "the head plays no part"  # fmt: skip


def test_the_trainer_meta_trains_prototypes_and_they_learn_to_ignore_the_noise(one_thread):
    torch.manual_seed(0)
    config = TrainConfig(task=None, model=None, algorithm="protonet", iterations=150, meta_batch=8, eval_every=150,
                         eval_tasks=64, meta_lr=0.01)  # fmt: skip
    trainer = Trainer(config, model=Embedder(), tasks=Clusters())
    before = trainer.validate()["val_accuracy_post"]
    history = trainer.fit(progress=False)
    after = history[-1]["val_accuracy_post"]
    assert after > before + 0.15 and after > 0.9, (before, after)
    assert history[-1]["val_accuracy_pre"] == after, "no adaptation: before and after are the same classifier"


def test_prototypes_are_refused_where_they_cannot_run():
    with pytest.raises(ValueError, match="no inner loop"):
        make_algorithm("protonet", rule="metasgd")
    config = TrainConfig(task=None, model=None, algorithm="protonet", iterations=1, eval_tasks=2)
    with pytest.raises(ValueError, match="has none: give it a `body`"):
        Trainer(config, model=nn.Sequential(nn.Linear(4, 2)), tasks=Clusters())
    trainer = Trainer(config, model=Embedder(), tasks=Clusters(), loss="mse")
    with pytest.raises(ValueError, match="the loss must be 'ce'"):
        trainer.step()


def test_mamlbook_eval_scores_a_prototype_run_as_prototypes_at_every_step(tmp_path, one_thread):
    """`mamlbook eval` on a ProtoNets run: SGD steps would score another classifier (its unused head)."""
    import os

    from mamlbook.reports.run import evaluate_run
    from mamlbook.train.presets import preset_config

    if not (os.environ.get("MAMLBOOK_DATA") and os.path.isdir(os.path.join(os.environ["MAMLBOOK_DATA"], "pbc"))):
        pytest.skip("the PBC images are not in MAMLBOOK_DATA")
    config = preset_config("pbc-3w1s", algorithm="protonet", iterations=2, eval_every=2, eval_tasks=2,
                           checkpoint_every=2, model_options={"n_way": 3, "in_channels": 3, "hidden": 4})  # fmt: skip
    trainer = Trainer(config, tmp_path)
    trainer.fit(progress=False, plot=False)
    report = evaluate_run(tmp_path, tasks=4, steps=2)
    protonets = report["methods"]["ProtoNets"]
    assert protonets["accuracy_mean"] == [protonets["accuracy_mean"][0]] * 3
    batch = config.make_task().for_split("test").sample(4, torch.Generator().manual_seed(20_000))
    _, accuracies = prototype_accuracy(trainer.model, trainer.params, batch)
    assert protonets["accuracy_mean"][0] == pytest.approx(accuracies.mean().item(), abs=1e-6)
