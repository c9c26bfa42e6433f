"""Reptile: the update is the mean of (adapted - initial) times the step size, and nothing else."""

import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.meta import SGD
from mamlbook.meta.reptile import reptile_pseudo_gradient, reptile_step


def test_reptile_update_is_the_mean_displacement_times_the_step_size(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    before = {k: v.clone() for k, v in theta.items()}
    _, pseudo = reptile_pseudo_gradient(sine_model64, theta, sine_batch64, "mse", 3, SGD(0.02))
    updated = reptile_step(theta, pseudo, step_size=0.5)

    adapted = [
        mb.adapt(sine_model64, theta, sine_batch64.support_x[i], sine_batch64.support_y[i], "mse", 3, 0.02, order=0)
        for i in range(len(sine_batch64))
    ]
    for k in theta:
        mean_move = torch.stack([a[k] - theta[k] for a in adapted]).mean(0)
        torch.testing.assert_close(updated[k], theta[k] + 0.5 * mean_move)
        assert torch.equal(theta[k], before[k])
        assert not pseudo[k].requires_grad


def test_plain_sgd_on_the_pseudo_gradient_is_reptile(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    _, pseudo = reptile_pseudo_gradient(sine_model64, theta, sine_batch64, "mse", 2, SGD(0.02))
    want = reptile_step(theta, pseudo, step_size=0.1)
    optimizer = torch.optim.SGD(theta.values(), lr=0.1)
    for k, v in theta.items():
        v.grad = pseudo[k]
    optimizer.step()
    for k in theta:
        torch.testing.assert_close(theta[k].detach(), want[k])


def test_one_step_reptile_follows_the_mean_support_gradient(sine_model64, sine_batch64):
    """With one inner step, theta - theta' = alpha * grad: Reptile is then joint training's gradient."""
    theta = mb.params_of(sine_model64)
    _, pseudo = reptile_pseudo_gradient(sine_model64, theta, sine_batch64, "mse", 1, SGD(0.05))
    grads = [
        torch.autograd.grad(
            F.mse_loss(mb.forward(sine_model64, theta, sine_batch64.support_x[i]), sine_batch64.support_y[i]),
            list(theta.values()),
        )
        for i in range(len(sine_batch64))
    ]
    for j, k in enumerate(theta):
        torch.testing.assert_close(pseudo[k], 0.05 * torch.stack([g[j] for g in grads]).mean(0))


def test_reptile_trainer_moves_the_initialization_and_reports_the_query_loss():
    config = mb.TrainConfig(algorithm="reptile", iterations=3, meta_batch=3, eval_every=3, eval_tasks=4, inner_steps=2)
    trainer = mb.Trainer(config)
    start = {k: v.detach().clone() for k, v in trainer.params.items()}
    history = trainer.fit(progress=False)
    assert all(not torch.equal(start[k], trainer.params[k]) for k in start)
    assert history[-1]["train_loss"] > 0 and trainer.rates == {}
