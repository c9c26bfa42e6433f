"""iMAML: the implicit meta-gradient, checked against differentiating a converged inner loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mamlbook.engine.imaml import conjugate_gradient, imaml_query_losses, proximal_adapt
from mamlbook.meta import InnerLoop
from mamlbook.tasks import Sinusoid, TaskBatch


def small_problem() -> tuple[nn.Module, dict, TaskBatch]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    batch = Sinusoid(k_shot=6).sample(3, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    return model, dict(model.named_parameters()), batch


def test_conjugate_gradient_solves_each_task_block() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 4 * torch.eye(4, dtype=torch.float64)
    rhs = torch.randn(2, 4, generator=g, dtype=torch.float64)
    (x,) = conjugate_gradient(lambda v: [torch.einsum("bij,bj->bi", spd, v[0])], [rhs], iterations=4)
    assert torch.allclose(torch.einsum("bij,bj->bi", spd, x), rhs, atol=1e-10)


def test_implicit_gradient_matches_unrolled_converged_inner_loop() -> None:
    """At a converged proximal solution, differentiating through the unrolled steps gives (I + H/lam)^-1 g."""
    model, params, batch = small_problem()
    lam, lr, steps = 2.0, 0.1, 400
    theta = {k: v.detach().requires_grad_() for k, v in params.items()}
    losses = imaml_query_losses(model, theta, batch, InnerLoop("mse", steps, lr, 2), lam=lam, cg_steps=40)
    implicit = torch.autograd.grad(losses.sum(), list(theta.values()))

    from mamlbook.engine.chain import fold_input
    from mamlbook.engine.folded import expand_params, folded_forward, per_task_loss

    phi = expand_params(theta, len(batch))
    anchor = dict(phi)
    for _ in range(steps):
        out = folded_forward(model, phi, fold_input(batch.support_x), len(batch))
        loss = per_task_loss("mse", out, batch.support_y).sum()
        grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
        phi = {k: p - lr * (g + lam * (p - anchor[k])) for (k, p), g in zip(phi.items(), grads, strict=True)}
    unrolled_loss = per_task_loss(
        "mse", folded_forward(model, phi, fold_input(batch.query_x), len(batch)), batch.query_y
    )
    unrolled = torch.autograd.grad(unrolled_loss.sum(), list(theta.values()))
    assert torch.allclose(losses, unrolled_loss.detach(), rtol=1e-10)
    for a, b in zip(implicit, unrolled, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_first_order_and_order_zero() -> None:
    model, params, batch = small_problem()
    theta = {k: v.detach().requires_grad_() for k, v in params.items()}
    first, second = (
        torch.autograd.grad(
            imaml_query_losses(model, theta, batch, InnerLoop("mse", 5, 0.1, order)).sum(), list(theta.values())
        )
        for order in (1, 2)
    )
    assert any(not torch.allclose(a, b) for a, b in zip(first, second, strict=True))
    assert not imaml_query_losses(model, theta, batch, InnerLoop("mse", 5, 0.1, 0)).requires_grad


def test_proximal_adapt_lowers_support_loss_and_leaves_theta_alone() -> None:
    model, params, batch = small_problem()
    before = {k: v.detach().clone() for k, v in params.items()}
    phi = proximal_adapt(model, params, batch.support_x, batch.support_y, InnerLoop("mse", 20, 0.1), 1.0)
    from mamlbook.engine.chain import fold_input
    from mamlbook.engine.folded import expand_params, folded_forward, per_task_loss

    def support(p):
        return per_task_loss("mse", folded_forward(model, p, fold_input(batch.support_x), 3), batch.support_y)

    assert bool((support(phi) < support(expand_params(params, 3))).all())
    assert all(torch.equal(params[k], before[k]) for k in params)


def test_rejects_rules_and_bad_lambda() -> None:
    model, params, batch = small_problem()
    with pytest.raises(ValueError, match="rule"):
        imaml_query_losses(model, params, batch, InnerLoop("mse", 1, 0.1, 2, rule=object()))
    with pytest.raises(ValueError, match="lam"):
        imaml_query_losses(model, params, batch, InnerLoop("mse", 1, 0.1, 2), lam=0.0)
