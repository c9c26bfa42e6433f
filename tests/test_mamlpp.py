"""MAML++ pieces, each switched on alone: MSL weights, DA, per-step BN (BNRS/BNWB) and CA."""

import math

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.meta import SGD
from mamlbook.meta.mamlpp import (
    StepBatchNorm,
    at_step,
    cosine_lr,
    derivative_order,
    msl_weights,
    multi_step_query_loss,
    per_step_batch_norm,
)
from mamlbook.models import Conv4
from mamlbook.train.algorithms import Algorithm, make_algorithm


# ----- MSL -----
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_msl_weights_sum_to_one_start_uniform_and_anneal_to_the_last_step(steps):
    progress = [0.0, 0.1, 0.5, 0.9, 1.0, 2.0]
    table = [msl_weights(steps, p) for p in progress]
    for w in table:
        assert math.isclose(float(w.sum()), 1.0, abs_tol=1e-12) and bool((w > 0).all())
    torch.testing.assert_close(table[0], torch.full((steps,), 1 / steps, dtype=torch.float64))
    last = [float(w[-1]) for w in table]
    assert last == sorted(last)
    assert last[-1] == pytest.approx(1 - 0.03 * (steps - 1) / steps)
    torch.testing.assert_close(msl_weights(steps, 1.0, floor=0.0), F.one_hot(torch.tensor(steps - 1), steps).double())


def test_msl_loss_is_the_weighted_sum_of_each_steps_query_loss(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    sx, sy, qx, qy = (
        sine_batch64.support_x[0],
        sine_batch64.support_y[0],
        sine_batch64.query_x[0],
        sine_batch64.query_y[0],
    )
    weights = [0.2, 0.3, 0.5]
    got = multi_step_query_loss(sine_model64, theta, sx, sy, qx, qy, "mse", 3, SGD(0.02), 2, weights)
    want = sum(
        w * mb.task_query_loss(sine_model64, theta, sx, sy, qx, qy, "mse", s + 1, 0.02) for s, w in enumerate(weights)
    )
    torch.testing.assert_close(got, want)
    plain = multi_step_query_loss(sine_model64, theta, sx, sy, qx, qy, "mse", 3, SGD(0.02), 2, None)
    torch.testing.assert_close(plain, mb.task_query_loss(sine_model64, theta, sx, sy, qx, qy, "mse", 3, 0.02))


# ----- DA -----
def test_derivative_order_switches_at_the_configured_iteration():
    assert [derivative_order(i, 3) for i in range(6)] == [1, 1, 1, 2, 2, 2]
    algorithm = make_algorithm("maml", da=True, first_order_iterations=3)
    schedule = algorithm.schedule(10)
    assert [algorithm.order_at(i, 2, schedule) for i in range(5)] == [1, 1, 1, 2, 2]
    assert make_algorithm("maml").order_at(0, 2, schedule) == 2


def test_trainer_uses_first_order_then_second_order(monkeypatch):
    config = mb.TrainConfig(
        algorithm="mamlpp",
        algorithm_options={"first_order_iterations": 2},
        iterations=4,
        meta_batch=2,
        eval_every=4,
        eval_tasks=2,
        dtype="float64",
    )
    trainer = mb.Trainer(config)
    orders = []
    original = Algorithm.meta_loss

    def spy(self, *args):
        orders.append(args[6])
        return original(self, *args)

    monkeypatch.setattr(Algorithm, "meta_loss", spy)
    trainer.fit(progress=False)
    assert orders == [1, 1, 2, 2]


# ----- BNRS / BNWB -----
def tiny_conv(steps, weights=True, stats=True):
    torch.manual_seed(0)
    return per_step_batch_norm(Conv4(n_way=3, hidden=4, image_size=16).double(), steps, weights, stats)


def tiny_task(n=6):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 1, 16, 16, generator=g, dtype=torch.float64)
    return x, torch.arange(n) % 3


def test_per_step_bn_starts_as_the_plain_model():
    torch.manual_seed(0)
    plain = Conv4(n_way=3, hidden=4, image_size=16).double()
    model = per_step_batch_norm(plain, 3)
    x, _ = tiny_task()
    assert not any(isinstance(m, StepBatchNorm) for m in plain.modules())
    assert mb.params_of(model)["body.0.1.weight"].shape == (3, 4)
    for step in range(3):
        with at_step(model, step):
            torch.testing.assert_close(mb.forward(model, mb.params_of(model), x), plain(x))


def test_per_step_bn_keeps_separate_statistics_per_step():
    model = tiny_conv(3)
    theta = mb.params_of(model)
    sx, sy = tiny_task()
    qx, qy = tiny_task(9)
    bn = model.body[0][1]
    start = bn.running_mean.clone()
    multi_step_query_loss(model, theta, sx, sy, qx, qy, "ce", 1, SGD(0.1), 2)
    assert not torch.equal(bn.running_mean[0], start[0])
    assert torch.equal(bn.running_mean[1:], start[1:])  # only step 0 ran
    multi_step_query_loss(model, theta, sx, sy, qx, qy, "ce", 3, SGD(0.1), 2)
    rows = bn.running_mean
    assert not torch.equal(rows[1], start[1]) and not torch.equal(rows[2], start[2])
    assert not torch.allclose(rows[1], rows[2])  # adapted weights see different features per step
    model.eval()
    outputs = []
    for step in range(3):
        with at_step(model, step):
            outputs.append(mb.forward(model, theta, qx))
    assert not torch.allclose(outputs[0], outputs[2])


def test_per_step_statistics_change_nothing_while_batches_normalize_themselves():
    """Why BNRS is a no-op in our Omniglot runs: the model never leaves training mode, where batch
    norm reads the batch's own statistics; the running ones only matter to a model in eval mode."""
    with_stats, without = tiny_conv(3), tiny_conv(3, stats=False)
    theta = mb.params_of(with_stats)
    sx, sy = tiny_task()
    qx, qy = tiny_task(9)
    for _ in range(2):  # the second pass runs after the first has moved the running statistics
        a = multi_step_query_loss(with_stats, theta, sx, sy, qx, qy, "ce", 3, SGD(0.1), 2)
        b = multi_step_query_loss(without, theta, sx, sy, qx, qy, "ce", 3, SGD(0.1), 2)
        assert torch.equal(a, b)
    with_stats.eval()
    c = multi_step_query_loss(with_stats, theta, sx, sy, qx, qy, "ce", 3, SGD(0.1), 2)
    assert not torch.allclose(c, b), "in eval mode the per-step statistics are read"


def test_per_step_bn_weights_learn_per_step():
    model = tiny_conv(2, weights=True, stats=False)
    theta = mb.params_of(model)
    sx, sy = tiny_task()
    qx, qy = tiny_task(9)
    one = multi_step_query_loss(model, theta, sx, sy, qx, qy, "ce", 1, SGD(0.1), 2)
    (grad,) = torch.autograd.grad(one, [theta["body.1.1.weight"]])
    assert grad[0].abs().sum() > 0 and torch.count_nonzero(grad[1]) == 0
    two = multi_step_query_loss(model, theta, sx, sy, qx, qy, "ce", 2, SGD(0.1), 2)
    (grad,) = torch.autograd.grad(two, [theta["body.1.1.weight"]])
    assert grad[1].abs().sum() > 0


def test_plain_models_are_left_alone():
    algorithm = make_algorithm("mamlpp")
    sine = mb.SineMLP()
    assert algorithm.prepare_model(sine, 3) is sine


# ----- CA -----
def test_cosine_annealing_runs_from_the_base_to_the_minimum():
    assert cosine_lr(1e-3, 0, 100, 1e-5) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 50, 100, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(1e-3, 100, 100, 1e-5) == pytest.approx(1e-5)
    assert cosine_lr(1e-3, 300, 100, 1e-5) == pytest.approx(1e-5)


def test_trainer_anneals_the_meta_lr():
    config = mb.TrainConfig(
        algorithm="maml", algorithm_options={"cosine": True}, iterations=4, meta_batch=2, eval_every=4, eval_tasks=2
    )
    trainer = mb.Trainer(config)
    trainer.fit(progress=False)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cosine_lr(1e-3, 3, 4, 1e-5))
