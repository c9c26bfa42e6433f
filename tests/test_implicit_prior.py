"""k gradient steps equal the MAP estimate under the implied Gaussian prior (Grant et al. 2018; Santos 1996)."""

import pytest
import torch

from mamlbook.meta.implicit_prior import (
    gradient_descent,
    implicit_prior_check,
    implied_precision,
    implied_precision_per_direction,
    map_estimate,
)


def regression(seed: int, n: int = 40, d: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random least-squares problem with spread-out curvatures (columns on different scales)."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1.5, 0.5, d, dtype=torch.float64)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * scales
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    start = torch.randn(d, generator=gen, dtype=torch.float64)
    return x, y, start


def safe_step(x: torch.Tensor, fraction: float = 0.9) -> float:
    return fraction / torch.linalg.eigvalsh(x.T @ x / len(x)).max().item()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("steps", [1, 3, 10, 40])
def test_gradient_steps_equal_the_map_estimate(seed, steps):
    x, y, start = regression(seed)
    alpha = safe_step(x)
    check = implicit_prior_check(x, y, start, alpha, steps)
    assert check.max_difference < 1e-10
    assert torch.allclose(check.precision, check.precision.T, atol=1e-12)
    # Positive definite: positive in every eigen-direction (in the steepest ones it can be far below 1e-16).
    assert (implied_precision_per_direction(check.curvatures, alpha, steps) > 0).all()
    # The check is not vacuous: the steps moved the parameters away from the start.
    assert (check.descent - start).abs().max() > 1e-2


@pytest.mark.parametrize("seed", range(3))
def test_a_prior_built_for_the_wrong_number_of_steps_disagrees(seed):
    x, y, start = regression(seed)
    for wrong in (4, 6):
        check = implicit_prior_check(x, y, start, safe_step(x), 5, prior_steps=wrong)
        assert check.max_difference > 1e-4


def test_the_eigen_directions_shrink_by_one_minus_alpha_lambda_to_the_k():
    x, y, start = regression(0)
    alpha, steps = safe_step(x), 7
    hessian = x.T @ x / len(y)
    curvatures, basis = torch.linalg.eigh(hessian)
    optimum = torch.linalg.solve(hessian, x.T @ y / len(y))
    kept = basis.T @ (gradient_descent(x, y, start, alpha, steps) - optimum) / (basis.T @ (start - optimum))
    assert torch.allclose(kept, (1 - alpha * curvatures) ** steps, atol=1e-10)
    per_direction = implied_precision_per_direction(curvatures, alpha, steps)
    assert torch.allclose(
        basis.T @ implied_precision(hessian, alpha, steps) @ basis, torch.diag(per_direction), atol=1e-10
    )


def test_the_precision_has_the_limits_of_flat_and_steep_directions():
    alpha, steps = 0.1, 5
    flat = implied_precision_per_direction(torch.tensor([1e-9]), alpha, steps)
    assert flat.item() == pytest.approx(1 / (steps * alpha), rel=1e-6)
    curvatures = torch.linspace(1e-3, 9.999, 200, dtype=torch.float64)
    precision = implied_precision_per_direction(curvatures, alpha, steps)
    assert (precision.diff() < 0).all(), "the prior is weaker where the loss is more curved"
    assert precision[-1] < 1e-15
    # More steps give a weaker prior everywhere.
    assert (implied_precision_per_direction(curvatures, alpha, 25) < precision).all()


def test_a_zero_precision_gives_the_least_squares_solution():
    x, y, start = regression(1)
    least_squares = torch.linalg.lstsq(x, y).solution
    assert torch.allclose(map_estimate(x, y, start, torch.zeros(5, 5, dtype=torch.float64)), least_squares, atol=1e-10)


def test_a_step_too_large_for_the_curvature_is_refused():
    hessian = torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="lambda_max"):
        implied_precision(hessian, 0.5, 3)  # alpha * lambda_max = 1 exactly
    x, y, start = regression(0)
    with pytest.raises(ValueError, match="lambda_max"):
        implicit_prior_check(x, y, start, safe_step(x, fraction=1.5), 3)
    with pytest.raises(ValueError, match="positive"):
        implied_precision(hessian, 0.0, 3)


@pytest.mark.parametrize("steps", [0, -2])
def test_fewer_than_one_step_is_refused(steps):
    x, y, start = regression(0)
    with pytest.raises(ValueError, match="at least 1"):
        implicit_prior_check(x, y, start, safe_step(x), steps)
    with pytest.raises(TypeError, match="integer"):
        implied_precision(x.T @ x / len(y), safe_step(x), 2.5)


def test_a_hessian_that_is_not_symmetric_positive_definite_is_refused():
    with pytest.raises(ValueError, match="positive definite"):
        implied_precision(torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64)), 0.1, 2)
    with pytest.raises(ValueError, match="symmetric"):
        implied_precision(torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=torch.float64), 0.1, 2)
    with pytest.raises(ValueError, match="square"):
        implied_precision(torch.ones(2, 3, dtype=torch.float64), 0.1, 2)
