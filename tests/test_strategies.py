"""Every execution strategy computes the loop's meta-loss and meta-gradient (float64)."""

import dataclasses

import pytest
import torch
from conftest import relative_error

import mamlbook as mb


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("steps", [1, 3])
def test_vmap_equals_loop_on_mlp(sine_model64, sine_batch64, order, steps):
    theta = mb.params_of(sine_model64)
    loss_loop, g_loop = mb.meta_gradient(sine_model64, theta, sine_batch64, "mse", steps, 0.05, order, "loop")
    loss_vmap, g_vmap = mb.meta_gradient(sine_model64, theta, sine_batch64, "mse", steps, 0.05, order, "vmap")
    assert abs(loss_loop.item() - loss_vmap.item()) <= 1e-12 * abs(loss_loop.item())
    assert relative_error(g_vmap, g_loop) < 1e-10


def test_vmap_equals_loop_for_logistic_regression():
    torch.manual_seed(0)
    model = mb.LogisticRegression().double()
    theta = mb.params_of(model)
    batch = mb.HalfPlanes(k_shot=6).sample(5, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    _, g_loop = mb.meta_gradient(model, theta, batch, "bce", 2, 0.5, 2, "loop")
    _, g_vmap = mb.meta_gradient(model, theta, batch, "bce", 2, 0.5, 2, "vmap")
    assert relative_error(g_vmap, g_loop) < 1e-10


def test_vmap_is_refused_for_batch_norm_and_auto_falls_back_to_the_loop():
    from mamlbook.models import Conv4

    model = Conv4(hidden=4)
    assert mb.resolve_strategy("auto", model) == "loop"
    assert mb.resolve_strategy("auto", mb.SineMLP()) == "folded"
    batch = mb.TaskBatch(
        torch.randn(2, 5, 1, 28, 28),
        torch.randint(0, 5, (2, 5)),
        torch.randn(2, 5, 1, 28, 28),
        torch.randint(0, 5, (2, 5)),
    )
    with pytest.raises(ValueError, match="batch norm"):
        mb.meta_loss(model, mb.params_of(model), batch, "ce", 1, 0.4, 2, "vmap")


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="unknown strategy 'warp'"):
        mb.resolve_strategy("warp", mb.SineMLP())


@pytest.mark.parametrize("settings", [{"steps": 0}, {"steps": -2}, {"steps": 1.5}, {"steps": True}, {"order": 3}])
def test_inner_loop_refuses_bad_settings_as_query_losses_did(sine_model64, sine_batch64, settings):
    with pytest.raises(ValueError, match="steps must be an integer >= 1|order must be 2") as made:
        mb.InnerLoop(**settings)
    with pytest.raises(ValueError) as called:
        mb.query_losses(sine_model64, mb.params_of(sine_model64), sine_batch64, **settings)
    assert str(made.value) == str(called.value)


def test_inner_loop_is_frozen():
    inner = mb.InnerLoop("mse", steps=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        inner.steps = 3  # type: ignore[misc]
    assert inner.steps == 2


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("strategy", [s for s in mb.STRATEGIES if s != "closed-compiled"])  # compiles for minutes
def test_a_strategy_called_with_an_inner_loop_gives_query_losses(sine_model64, sine_batch64, strategy, learned):
    theta = mb.params_of(sine_model64)
    rule = mb.MetaSGD.like(theta, 0.05) if learned else None
    inner = mb.InnerLoop("mse", steps=2, inner_lr=0.05, order=2, rule=rule)
    direct = mb.STRATEGIES[strategy](sine_model64, theta, sine_batch64, inner)
    by_keywords = mb.query_losses(
        sine_model64, theta, sine_batch64, loss_fn="mse", steps=2, inner_lr=0.05, order=2, strategy=strategy, rule=rule
    )
    assert direct.shape == (len(sine_batch64),)
    assert torch.allclose(direct, by_keywords, rtol=1e-12, atol=0)
