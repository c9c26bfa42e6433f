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


# ----- ProtoMAML: the head set from prototypes, then MAML's steps -----


def test_the_prototype_head_gives_the_prototype_classifier_up_to_a_per_query_constant():
    from mamlbook.functional import forward
    from mamlbook.meta.prototypes import embed, prototype_head, prototype_logits

    torch.manual_seed(0)
    model = Embedder()
    params = params_of(model)
    batch = Clusters().sample(1, torch.Generator().manual_seed(3))
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        headed = forward(model, prototype_head(model, params, sx, sy), qx)
        centres = prototypes(embed(model, params, sx), sy, 2)
        z = embed(model, params, qx)
        reference = prototype_logits(z, centres) + z.pow(2).sum(-1, keepdim=True)
    assert torch.allclose(headed, reference, atol=1e-5)
    # relabelling the classes relabels the head: the same predictions under any label order
    swapped = prototype_head(model, params, sx, 1 - sy)
    with torch.no_grad():
        assert torch.equal(forward(model, swapped, qx).argmax(-1), 1 - headed.argmax(-1))
    with pytest.raises(ValueError, match="has no such head"):
        prototype_head(nn.Sequential(nn.Linear(4, 2)), {"0.weight": torch.zeros(2, 4)}, sx, sy)


def test_protomaml_meta_gradient_reaches_the_body_through_the_prototypes_and_matches_finite_differences():
    torch.manual_seed(2)
    model = Embedder().double()
    raw = Clusters().sample(2, torch.Generator().manual_seed(5))
    batch = TaskBatch(raw.support_x.double(), raw.support_y, raw.query_x.double(), raw.query_y)
    algorithm = make_algorithm("protomaml")
    params = params_of(model)
    rule = algorithm.make_rule(model, params, 0.1, 1)

    def loss_of(p):
        return algorithm.meta_loss(model, p, batch, "ce", 1, rule, 2, "loop")

    (grad,) = torch.autograd.grad(loss_of(params), [params["body.2.weight"]])
    eps = 1e-6
    for index in [(0, 0), (2, 5)]:
        values = []
        for sign in (1, -1):
            moved = params["body.2.weight"].detach().clone()
            moved[index] += sign * eps
            values.append(loss_of({**params, "body.2.weight": moved}).item())
        assert grad[index].item() == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-6, abs=1e-10)
    head = torch.autograd.grad(loss_of(params), [params["head.weight"]], allow_unused=True)[0]
    assert head is None or float(head.abs().max()) == 0.0, "the head's own weights are replaced by the prototypes"


def test_the_trainer_meta_trains_protomaml_and_evaluates_from_the_prototype_head(one_thread):
    from mamlbook.meta.prototypes import prototype_head
    from mamlbook.train.evaluate import adaptation_curve

    torch.manual_seed(0)
    config = TrainConfig(task=None, model=None, algorithm="protomaml", iterations=120, meta_batch=8, eval_every=120,
                         eval_tasks=64, meta_lr=0.01, inner_lr=0.1)  # fmt: skip
    trainer = Trainer(config, model=Embedder(), tasks=Clusters())
    before = trainer.validate()["val_accuracy_post"]
    after = trainer.fit(progress=False)[-1]["val_accuracy_post"]
    assert after > before + 0.1 and after > 0.9, (before, after)
    # step 0 of the evaluation is the prototype classifier, not the (unused) trained head
    plain = adaptation_curve(trainer.model, trainer.params, trainer.validation, "ce", 0, 0.1, with_accuracy=True)
    headed = adaptation_curve(trainer.model, trainer.params, trainer.validation, "ce", 0, 0.1, with_accuracy=True,
                              init=lambda p, sx, sy: prototype_head(trainer.model, p, sx, sy))  # fmt: skip
    _, proto = __import__("mamlbook.meta.prototypes", fromlist=["prototype_accuracy"]).prototype_accuracy(
        trainer.model, trainer.params, trainer.validation
    )
    assert torch.allclose(headed["accuracy"][:, 0], proto)
    assert not torch.allclose(plain["accuracy"][:, 0], proto)
    with pytest.raises(ValueError, match="no reptile, msl or head-only"):
        make_algorithm("protomaml", msl=True)
