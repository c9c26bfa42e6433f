"""Inner-loop rules: one signature; Meta-SGD's rates learn, LSLR keeps one rate per layer and step."""

import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.meta import LSLR, SGD, MetaSGD, Shifted, Subset


def support_and_query(batch, i=0):
    return batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i]


def test_metasgd_starts_as_maml_and_never_modifies_inputs(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    before = {k: v.clone() for k, v in theta.items()}
    sx, sy, _, _ = support_and_query(sine_batch64)
    rule = MetaSGD.like(theta, 0.03)
    learned = mb.adapt(sine_model64, theta, sx, sy, "mse", 2, rule=rule)
    plain = mb.adapt(sine_model64, theta, sx, sy, "mse", 2, 0.03)
    for k in theta:
        torch.testing.assert_close(learned[k], plain[k])
        assert torch.equal(theta[k], before[k])
        assert rule.learned[k].shape == theta[k].shape


def test_metasgd_rates_get_the_analytic_gradient_and_change(sine_model64, sine_batch64):
    """One step: theta' = theta - a*g, so dL_q/da = -grad L_q(theta') * g, elementwise."""
    theta = mb.params_of(sine_model64)
    sx, sy, qx, qy = support_and_query(sine_batch64)
    rule = MetaSGD.like(theta, 0.02)
    loss = mb.task_query_loss(sine_model64, theta, sx, sy, qx, qy, "mse", 1, order=2, rule=rule)
    rate_grads = torch.autograd.grad(loss, list(rule.learned.values()))

    g = torch.autograd.grad(F.mse_loss(mb.forward(sine_model64, theta, sx), sy), list(theta.values()))
    adapted = {k: (p - 0.02 * gk).detach().requires_grad_() for (k, p), gk in zip(theta.items(), g, strict=True)}
    gq = torch.autograd.grad(F.mse_loss(mb.forward(sine_model64, adapted, qx), qy), list(adapted.values()))
    for got, gs, gqk in zip(rate_grads, g, gq, strict=True):
        torch.testing.assert_close(got, -gqk * gs)
    assert sum(float(r.abs().sum()) for r in rate_grads) > 0

    optimizer = torch.optim.Adam(rule.learned.values(), lr=1e-3)
    for r, gr in zip(rule.learned.values(), rate_grads, strict=True):
        r.grad = gr
    optimizer.step()
    changed = [not torch.all(r == 0.02) for r in rule.learned.values()]
    assert all(changed)


def test_lslr_keeps_one_rate_per_layer_and_step(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    rule = LSLR.like(theta, 0.01, steps=3)
    assert sorted(rule.learned) == ["net.0", "net.2", "net.4"]  # weight and bias of a layer share
    assert all(r.shape == (3,) for r in rule.learned.values())


def test_lslr_step_s_uses_rate_s_and_only_used_steps_get_gradients(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    sx, sy, qx, qy = support_and_query(sine_batch64)
    rates = {
        layer: torch.tensor([0.01, 0.05, 0.2], dtype=torch.float64, requires_grad=True)
        for layer in ("net.0", "net.2", "net.4")
    }
    rule = LSLR(rates)
    adapted = mb.adapt(sine_model64, theta, sx, sy, "mse", 2, rule=rule, order=2)

    manual = dict(theta)
    for lr in (0.01, 0.05):
        manual = mb.adapt(sine_model64, manual, sx, sy, "mse", 1, lr, order=2)
    for k in theta:
        torch.testing.assert_close(adapted[k], manual[k])

    loss = F.mse_loss(mb.forward(sine_model64, adapted, qx), qy)
    for g in torch.autograd.grad(loss, list(rates.values())):
        assert g[0] != 0 and g[1] != 0 and g[2] == 0  # step 3 never ran


def test_lslr_reuses_its_last_rate_beyond_the_trained_steps(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    grads = {k: torch.ones_like(v) for k, v in theta.items()}
    rule = LSLR({layer: torch.tensor([0.1, 0.3], dtype=torch.float64) for layer in ("net.0", "net.2", "net.4")})
    late = rule(theta, grads, step=7)
    torch.testing.assert_close(late["net.0.bias"], theta["net.0.bias"] - 0.3)


def test_shifted_and_subset_compose(sine_model64):
    theta = mb.params_of(sine_model64)
    grads = {k: torch.ones_like(v) for k, v in theta.items()}
    rule = LSLR({layer: torch.tensor([0.1, 0.3], dtype=torch.float64) for layer in ("net.0", "net.2", "net.4")})
    shifted = Shifted(rule, 1)(theta, grads, 0)
    torch.testing.assert_close(shifted["net.2.weight"], theta["net.2.weight"] - 0.3)
    only_head = Subset(SGD(0.5), ["net.4.weight", "net.4.bias"])(theta, grads, 0)
    assert only_head["net.0.weight"] is theta["net.0.weight"]
    torch.testing.assert_close(only_head["net.4.bias"], theta["net.4.bias"] - 0.5)


@pytest.mark.parametrize("rule", ["metasgd", "lslr"])
def test_learned_rules_agree_across_strategies(sine_model64, sine_batch64, rule):
    theta = mb.params_of(sine_model64)
    made = MetaSGD.like(theta, 0.01) if rule == "metasgd" else LSLR.like(theta, 0.01, 2)
    losses = {
        s: mb.meta_loss(sine_model64, theta, sine_batch64, "mse", 2, 0.01, 2, strategy=s, rule=made)
        for s in ("loop", "vmap")
    }
    grads = {s: torch.autograd.grad(v, list(made.learned.values())) for s, v in losses.items()}
    torch.testing.assert_close(losses["loop"], losses["vmap"])
    for a, b in zip(grads["loop"], grads["vmap"], strict=True):
        torch.testing.assert_close(a, b)


def test_a_rate_must_start_positive(sine_model64):
    with pytest.raises(ValueError, match="inner_lr must be positive"):
        MetaSGD.like(mb.params_of(sine_model64), 0.0)
