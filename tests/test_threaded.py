"""The threads strategy (tasks spread over CPU cores) is the loop, computed elsewhere (float64)."""

import pytest
import torch
from conftest import relative_error

import mamlbook as mb
from mamlbook.engine.threaded import _shares, threaded_query_losses
from mamlbook.models import Conv4
from mamlbook.train.algorithms import make_algorithm


def conv_batch(tasks, generator):
    sx = torch.rand(tasks, 3, 1, 28, 28, generator=generator, dtype=torch.float64)
    qx = torch.rand(tasks, 6, 1, 28, 28, generator=generator, dtype=torch.float64)
    sy = torch.arange(3).repeat(tasks, 1)
    qy = torch.arange(3).repeat(tasks, 2)
    return mb.TaskBatch(sx, sy, qx, qy)


@pytest.fixture
def conv64():
    torch.manual_seed(0)
    return Conv4(n_way=3, hidden=6).double()


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("steps", [1, 2])
def test_threads_equal_the_loop_on_conv4_with_batch_norm(conv64, order, steps):
    theta = mb.params_of(conv64)
    batch = conv_batch(5, torch.Generator().manual_seed(1))
    loss_loop, g_loop = mb.meta_gradient(conv64, theta, batch, "ce", steps, 0.4, order, "loop")
    loss_thr, g_thr = mb.meta_gradient(conv64, theta, batch, "ce", steps, 0.4, order, "threads")
    assert abs(loss_loop.item() - loss_thr.item()) <= 1e-12 * abs(loss_loop.item())
    assert relative_error(g_thr, g_loop) < 1e-10
    assert max(g.abs().max().item() for g in g_loop.values()) > 0


def test_threads_pass_learned_rates_their_gradient(conv64):
    theta = {k: v.detach().requires_grad_() for k, v in mb.params_of(conv64).items()}
    algorithm = make_algorithm("metasgd")
    rule = algorithm.make_rule(conv64, theta, 0.4, 1)
    batch = conv_batch(4, torch.Generator().manual_seed(2))
    rates = list(rule.learned.values())
    per_strategy = {}
    for strategy in ("loop", "threads"):
        loss = mb.meta_loss(conv64, theta, batch, "ce", 1, 1.0, 2, strategy, rule)
        per_strategy[strategy] = torch.autograd.grad(loss, [*theta.values(), *rates])
    for a, b in zip(per_strategy["loop"], per_strategy["threads"], strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    assert any(g.abs().max() > 0 for g in per_strategy["threads"][len(theta) :]), "rates get a gradient"


def test_threads_work_with_more_workers_than_tasks_and_keep_task_order(conv64):
    theta = mb.params_of(conv64)
    batch = conv_batch(3, torch.Generator().manual_seed(3))
    loop = mb.query_losses(conv64, theta, batch, "ce", 1, 0.4, 2, "loop")
    for workers in (2, 3, 7):
        losses = threaded_query_losses(conv64, theta, batch, mb.InnerLoop("ce", 1, 0.4, 2), workers=workers)
        assert torch.allclose(losses, loop, rtol=1e-12)
    assert _shares(5, 2) == [[0, 2, 4], [1, 3]]
    with pytest.raises(ValueError, match="at least 1"):
        threaded_query_losses(conv64, theta, batch, mb.InnerLoop("ce", 1, 0.4, 2), workers=0)


def test_threads_restore_the_intra_op_thread_count(conv64):
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        batch = conv_batch(2, torch.Generator().manual_seed(4))
        mb.meta_gradient(conv64, mb.params_of(conv64), batch, "ce", 1, 0.4, 2, "threads")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_threads_refuse_per_step_batch_norm(conv64):
    algorithm = make_algorithm("mamlpp")
    model = algorithm.prepare_model(conv64, 2)
    batch = conv_batch(2, torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="loop strategy"):
        threaded_query_losses(model, mb.params_of(model), batch, mb.InnerLoop("ce", 2, 0.4, 2), workers=2)


def test_threads_without_grad_give_the_losses_and_keep_no_graph(conv64):
    theta = mb.params_of(conv64)
    batch = conv_batch(4, torch.Generator().manual_seed(6))
    loop = mb.query_losses(conv64, theta, batch, "ce", 2, 0.4, 2, "loop")
    with torch.no_grad():
        losses = threaded_query_losses(conv64, theta, batch, mb.InnerLoop("ce", 2, 0.4, 2), workers=2)
    assert not losses.requires_grad
    assert torch.allclose(losses, loop.detach(), rtol=1e-12)


def test_threads_weigh_each_task_by_the_incoming_gradient(conv64):
    theta = {k: v.detach().requires_grad_() for k, v in mb.params_of(conv64).items()}
    batch = conv_batch(3, torch.Generator().manual_seed(7))
    weights = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    grads = {}
    for strategy in ("loop", "threads"):
        losses = mb.query_losses(conv64, theta, batch, "ce", 1, 0.4, 2, strategy)
        grads[strategy] = torch.autograd.grad((losses * weights).sum(), list(theta.values()))
    for a, b in zip(grads["loop"], grads["threads"], strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
