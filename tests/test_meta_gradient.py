"""MAML's meta-gradient checked against finite differences, and first order against second order."""

import pytest
import torch
import torch.nn.functional as F
from conftest import relative_error

import mamlbook as mb


def central_differences(f, params, eps=1e-6):
    """d f / d params by central differences, one coordinate at a time (float64)."""
    grads = {}
    for name, p in params.items():
        g = torch.zeros_like(p)
        for i in range(p.numel()):
            plus = {k: v.clone() for k, v in params.items()}
            minus = {k: v.clone() for k, v in params.items()}
            plus[name].view(-1)[i] += eps
            minus[name].view(-1)[i] -= eps
            g.view(-1)[i] = (f(plus) - f(minus)) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_of_linear_model_equals_finite_differences(steps):
    torch.manual_seed(0)
    model = mb.LinearModel().double()
    theta = mb.params_of(model)
    batch = mb.Lines(k_shot=5, k_query=6, noise=0.1).sample(4, torch.Generator().manual_seed(3)).to(dtype=torch.float64)

    def objective(p):
        with torch.no_grad():
            return mb.meta_loss(model, {k: v.detach() for k, v in p.items()}, batch, "mse", steps, 0.3, order=0).item()

    # order=0 gives the same *value* as order 2 (only the graph differs), so it serves finite differences.
    _, analytic = mb.meta_gradient(model, theta, batch, "mse", steps, 0.3, order=2)
    numeric = central_differences(objective, {k: v.detach() for k, v in theta.items()})
    assert relative_error(analytic, numeric) < 1e-6


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_of_mlp_equals_finite_differences(sine_model64, steps):
    theta = mb.params_of(sine_model64)
    batch = mb.Sinusoid(k_shot=5).sample(2, torch.Generator().manual_seed(5)).to(dtype=torch.float64)
    _, analytic = mb.meta_gradient(sine_model64, theta, batch, "mse", steps, 0.05, order=2)
    direction = {
        k: torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for k, v in theta.items()
    }
    eps = 1e-6

    def at(t):
        p = {k: v.detach() + t * direction[k] for k, v in theta.items()}
        return mb.meta_loss(sine_model64, p, batch, "mse", steps, 0.05, order=0).item()

    numeric = (at(eps) - at(-eps)) / (2 * eps)
    directional = sum((analytic[k] * direction[k]).sum() for k in theta).item()
    assert directional == pytest.approx(numeric, rel=1e-6)


def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_point(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    _, fo = mb.meta_gradient(sine_model64, theta, sine_batch64, "mse", 2, 0.05, order=1)
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(len(sine_batch64)):
        adapted = mb.adapt(sine_model64, theta, sine_batch64.support_x[i], sine_batch64.support_y[i], "mse", 2, 0.05, 0)
        leaves = {k: v.requires_grad_() for k, v in adapted.items()}
        q = F.mse_loss(mb.forward(sine_model64, leaves, sine_batch64.query_x[i]), sine_batch64.query_y[i])
        for k, g in zip(leaves, torch.autograd.grad(q, list(leaves.values())), strict=True):
            expected[k] += g / len(sine_batch64)
    assert relative_error(fo, expected) < 1e-12


def test_first_and_second_order_differ_where_the_hessian_matters(sine_model64, sine_batch64):
    theta = mb.params_of(sine_model64)
    _, second = mb.meta_gradient(sine_model64, theta, sine_batch64, "mse", 1, 0.05, order=2)
    _, first = mb.meta_gradient(sine_model64, theta, sine_batch64, "mse", 1, 0.05, order=1)
    # The difference is alpha * H g: small for small alpha, but far above rounding.
    assert relative_error(first, second) > 1e-3
