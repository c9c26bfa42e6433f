"""Properties every inner loop must have (the list learn2learn's tests check, applied to ours)."""

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb


def support_loss(model, params, batch):
    return F.mse_loss(mb.forward(model, params, batch.support_x[0]), batch.support_y[0]).item()


@pytest.mark.parametrize("order", [0, 1, 2])
def test_adapt_never_modifies_its_inputs(sine_model64, sine_batch64, order):
    theta = mb.params_of(sine_model64)
    before = {k: v.clone() for k, v in theta.items()}
    model_before = {k: v.clone() for k, v in sine_model64.state_dict().items()}
    adapted = mb.adapt(sine_model64, theta, sine_batch64.support_x[0], sine_batch64.support_y[0], "mse", 3, 0.01, order)
    for k in theta:
        assert torch.equal(theta[k], before[k])
        assert torch.equal(sine_model64.state_dict()[k], model_before[k])
        assert not torch.equal(adapted[k], theta[k])


def test_adaptation_lowers_the_support_loss(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    losses = [support_loss(sine_model64, theta, sine_batch64)]
    for steps in (1, 5, 20):
        adapted = mb.adapt(
            sine_model64, theta, sine_batch64.support_x[0], sine_batch64.support_y[0], "mse", steps, 0.01
        )
        losses.append(support_loss(sine_model64, adapted, sine_batch64))
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.8 * losses[0]


def test_one_step_is_exactly_theta_minus_alpha_grad(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    x, y = sine_batch64.support_x[0], sine_batch64.support_y[0]
    loss = F.mse_loss(mb.forward(sine_model64, theta, x), y)
    grads = torch.autograd.grad(loss, list(theta.values()))
    adapted = mb.adapt(sine_model64, theta, x, y, "mse", 1, 0.05)
    for (k, p), g in zip(theta.items(), grads, strict=True):
        torch.testing.assert_close(adapted[k], p - 0.05 * g)


def test_order_controls_the_graph(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    x, y = sine_batch64.support_x[0], sine_batch64.support_y[0]
    assert all(v.requires_grad for v in mb.adapt(sine_model64, theta, x, y, "mse", 2, 0.01, order=2).values())
    assert all(v.requires_grad for v in mb.adapt(sine_model64, theta, x, y, "mse", 2, 0.01, order=1).values())
    assert not any(v.requires_grad for v in mb.adapt(sine_model64, theta, x, y, "mse", 2, 0.01, order=0).values())


def test_order_zero_gives_no_meta_gradient(sine_model64, sine_batch64):
    _, grads = mb.meta_gradient(sine_model64, mb.params_of(sine_model64), sine_batch64, "mse", 2, 0.01, order=0)
    assert all(torch.count_nonzero(g) == 0 for g in grads.values())


def test_adapt_works_without_requires_grad_inputs(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64, requires_grad=False)
    adapted = mb.adapt(sine_model64, theta, sine_batch64.support_x[0], sine_batch64.support_y[0], "mse", 1, 0.01, 1)
    assert support_loss(sine_model64, adapted, sine_batch64) < support_loss(sine_model64, theta, sine_batch64)


@pytest.mark.parametrize("steps", [0, -2, 1.5, True])
def test_bad_step_counts_are_refused(sine_model64, sine_batch64, steps):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        mb.adapt(
            sine_model64,
            mb.params_of(sine_model64),
            sine_batch64.support_x[0],
            sine_batch64.support_y[0],
            "mse",
            steps,
            0.01,
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [({"order": 3}, "order must be"), ({"inner_lr": 0.0}, "inner_lr"), ({"loss_fn": "hinge"}, "unknown loss")],
)
def test_bad_settings_are_refused(sine_model64, sine_batch64, kwargs, message):
    args = {"loss_fn": "mse", "steps": 1, "inner_lr": 0.01, "order": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        mb.adapt(sine_model64, mb.params_of(sine_model64), sine_batch64.support_x[0], sine_batch64.support_y[0], **args)
