"""Transductive and non-transductive evaluation: with batch norm on batch statistics (Conv4), a query
scored in one batch with the other queries depends on them; scored alone with the support set
(Nichol et al. 2018), it does not."""

import pytest
import torch

from mamlbook.functional import forward, params_of
from mamlbook.meta import adapt
from mamlbook.models import Conv4, SineMLP
from mamlbook.tasks import TaskBatch
from mamlbook.train.evaluate import accuracy, adaptation_curve, query_accuracy, query_outputs

WAYS, SHOTS, QUERIES = 5, 1, 2


def image_tasks(tasks: int, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return TaskBatch(
        support_x=torch.rand(tasks, WAYS * SHOTS, 1, 28, 28, generator=g),
        support_y=labels.repeat(SHOTS).expand(tasks, -1).clone(),
        query_x=torch.rand(tasks, WAYS * QUERIES, 1, 28, 28, generator=g),
        query_y=labels.repeat(QUERIES).expand(tasks, -1).clone(),
    )


def vector_tasks(tasks: int, features: int = 6, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return TaskBatch(
        support_x=torch.randn(tasks, WAYS * SHOTS, features, generator=g),
        support_y=labels.repeat(SHOTS).expand(tasks, -1).clone(),
        query_x=torch.randn(tasks, WAYS * QUERIES, features, generator=g),
        query_y=labels.repeat(QUERIES).expand(tasks, -1).clone(),
    )


@pytest.fixture
def conv4():
    torch.manual_seed(0)
    model = Conv4(n_way=WAYS, hidden=8)
    return model, params_of(model, requires_grad=False)


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    model = SineMLP(in_features=6, hidden=(16, 16), out_features=WAYS)
    return model, params_of(model, requires_grad=False)


@pytest.mark.parametrize("net", ["conv4", "mlp"])
@pytest.mark.parametrize("steps", [0, 2])
def test_transductive_accuracy_is_adaptation_curves(net, steps, request):
    model, params = request.getfixturevalue(net)
    batch = image_tasks(4) if net == "conv4" else vector_tasks(4)
    curve = adaptation_curve(model, params, batch, "ce", steps, 0.4, with_accuracy=True)["accuracy"]
    assert torch.equal(query_accuracy(model, params, batch, "ce", steps, 0.4), curve[:, steps])


def test_without_batch_norm_both_protocols_predict_the_same(mlp):
    model, params = mlp
    batch = vector_tasks(6)
    for task in range(len(batch)):
        sx, sy, qx = batch.support_x[task], batch.support_y[task], batch.query_x[task]
        adapted = adapt(model, params, sx, sy, "ce", 2, 0.4, order=0)
        together = query_outputs(model, adapted, sx, qx, transductive=True)
        alone = query_outputs(model, adapted, sx, qx, transductive=False)
        assert torch.allclose(together, alone, atol=1e-6)
        assert torch.equal(together.argmax(-1), alone.argmax(-1))
    transductive = query_accuracy(model, params, batch, "ce", 2, 0.4)
    assert torch.equal(query_accuracy(model, params, batch, "ce", 2, 0.4, transductive=False), transductive)


def test_conv4_non_transductive_query_ignores_the_other_queries(conv4):
    model, params = conv4
    batch = image_tasks(1)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    adapted = adapt(model, params, sx, sy, "ce", 2, 0.4, order=0)
    noisy = qx.clone()
    noisy[1:] = 50 * torch.randn(noisy[1:].shape, generator=torch.Generator().manual_seed(0))
    # Alone with the support set, query 0 gives the same output, bit for bit, whatever the others are.
    alone, alone_noisy = (query_outputs(model, adapted, sx, q, transductive=False)[0] for q in (qx, noisy))
    assert torch.equal(alone, alone_noisy)
    # In one batch, the noise moves the batch-norm statistics, and with them query 0's prediction:
    # the same check fails for the transductive protocol.
    together, together_noisy = (query_outputs(model, adapted, sx, q, transductive=True)[0] for q in (qx, noisy))
    assert not torch.allclose(together, together_noisy, atol=1e-2)
    assert together.argmax() != together_noisy.argmax()


def test_conv4_non_transductive_accuracy_scores_each_query_alone(conv4):
    model, params = conv4
    batch = image_tasks(3, seed=1)
    expected = []
    for task in range(len(batch)):
        sx, sy, qx = batch.support_x[task], batch.support_y[task], batch.query_x[task]
        adapted = adapt(model, params, sx, sy, "ce", 1, 0.4, order=0)
        # Nichol et al.'s protocol by hand: a batch of the support set and one query, keep the last row.
        outputs = torch.stack([forward(model, adapted, torch.cat([sx, qx[j : j + 1]]))[-1] for j in range(len(qx))])
        expected.append(accuracy(outputs, batch.query_y[task]))
    got = query_accuracy(model, params, batch, "ce", 1, 0.4, transductive=False)
    assert torch.equal(got, torch.stack(expected))
