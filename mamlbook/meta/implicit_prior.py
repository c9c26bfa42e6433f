"""Early-stopped gradient descent as a MAP estimate: the Gaussian prior that MAML's inner loop implies.

Grant, Finn, Levine, Darrell & Griffiths (2018), "Recasting Gradient-Based Meta-Learning as
Hierarchical Bayes" (ICLR), read MAML's initialization theta as the mean of a prior shared by all
tasks, following Santos (1996), "Equivalence of regularization and truncated iteration for general
ill-posed problems": for a quadratic loss, k steps of gradient descent from theta give exactly the
maximum a posteriori estimate under a Gaussian prior centred at theta.

For linear regression, L(phi) = ||X phi - y||^2 / (2n), with Hessian H = X^T X / n and minimizer
phi*, each step multiplies the distance to phi* by (I - alpha H), so after k steps

    phi_k - phi* = A (theta - phi*),   A = (I - alpha H)^k.

The minimizer of L(phi) + (phi - theta)^T Lambda (phi - theta) / 2 satisfies
H (phi - phi*) + Lambda (phi - theta) = 0, so phi - phi* = (H + Lambda)^{-1} Lambda (theta - phi*).
The two agree when (H + Lambda)^{-1} Lambda = A, that is

    Lambda = H A (I - A)^{-1},

which is symmetric positive definite when 0 < alpha * lambda_max(H) < 1. In an eigen-direction of H
with curvature lam, k steps cover a fraction 1 - (1 - alpha lam)^k of the way from theta to phi*, and
the prior's precision there is lam (1 - alpha lam)^k / (1 - (1 - alpha lam)^k), which tends to
1 / (k alpha) as lam -> 0 and to 0 as lam -> 1 / alpha.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ImplicitPriorCheck",
    "gradient_descent",
    "implicit_prior_check",
    "implied_precision",
    "implied_precision_per_direction",
    "map_estimate",
]


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an integer, got {steps!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")


def _check_step_size(inner_lr: float, largest_curvature: float) -> None:
    if not inner_lr > 0:
        raise ValueError(f"inner_lr must be positive, got {inner_lr}")
    if inner_lr * largest_curvature >= 1:
        raise ValueError(
            f"inner_lr * lambda_max(H) = {inner_lr * largest_curvature:.4g}, but the implied Gaussian prior "
            "needs it below 1 (steps that do not overshoot the minimum); take a smaller inner_lr"
        )


def _eigen(hessian: Tensor) -> tuple[Tensor, Tensor]:
    if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1]:
        raise ValueError(f"the Hessian must be a square matrix, got shape {tuple(hessian.shape)}")
    scale = hessian.abs().max().clamp_min(1)
    if not torch.allclose(hessian, hessian.T, rtol=0, atol=1e-12 * scale.item()):
        raise ValueError("the Hessian must be symmetric")
    curvatures, basis = torch.linalg.eigh(hessian)
    if curvatures[0] <= 0:
        raise ValueError(f"the Hessian must be positive definite; its smallest eigenvalue is {curvatures[0]:.4g}")
    return curvatures, basis


def implied_precision_per_direction(curvatures: Tensor, inner_lr: float, steps: int) -> Tensor:
    """The prior's precision lam (1 - alpha lam)^k / (1 - (1 - alpha lam)^k) for each curvature lam > 0."""
    _check_steps(steps)
    curvatures = torch.as_tensor(curvatures, dtype=torch.float64)
    if (curvatures <= 0).any():
        raise ValueError("every curvature must be positive")
    _check_step_size(inner_lr, curvatures.max().item())
    kept = (1 - inner_lr * curvatures) ** steps
    # 1 - (1 - x)^k computed without cancellation for small x = alpha * lam.
    moved = -torch.expm1(steps * torch.log1p(-inner_lr * curvatures))
    return curvatures * kept / moved


def implied_precision(hessian: Tensor, inner_lr: float, steps: int) -> Tensor:
    """Lambda = H (I - alpha H)^k (I - (I - alpha H)^k)^{-1}, the precision of the implied prior.

    hessian: [d, d], symmetric positive definite. Needs alpha * lambda_max(H) < 1 and steps >= 1.
    """
    curvatures, basis = _eigen(hessian)
    precision = implied_precision_per_direction(curvatures, inner_lr, steps)
    return (basis * precision) @ basis.T


def gradient_descent(x: Tensor, y: Tensor, start: Tensor, inner_lr: float, steps: int) -> Tensor:
    """`steps` steps of gradient descent on ||x phi - y||^2 / (2n) from `start`. x: [n, d], y: [n], start: [d]."""
    _check_steps(steps)
    phi = start.clone()
    for _ in range(steps):
        phi = phi - inner_lr * x.T @ (x @ phi - y) / len(y)
    return phi


def map_estimate(x: Tensor, y: Tensor, prior_mean: Tensor, precision: Tensor) -> Tensor:
    """The minimizer of ||x phi - y||^2 / (2n) + (phi - prior_mean)^T precision (phi - prior_mean) / 2."""
    n = len(y)
    return torch.linalg.solve(x.T @ x / n + precision, x.T @ y / n + precision @ prior_mean)


@dataclass(frozen=True)
class ImplicitPriorCheck:
    """k gradient steps against the MAP estimate under the implied prior, for one regression problem."""

    curvatures: Tensor  # [d] eigenvalues of H = X^T X / n
    precision: Tensor  # [d, d] the implied prior's precision Lambda
    descent: Tensor  # [d] theta_k after k steps from theta_0
    posterior_mode: Tensor  # [d] argmin L(phi) + (phi - theta_0)^T Lambda (phi - theta_0) / 2

    @property
    def max_difference(self) -> float:
        """The largest absolute difference between the two estimates, coordinate by coordinate."""
        return (self.descent - self.posterior_mode).abs().max().item()


def implicit_prior_check(
    x: Tensor, y: Tensor, start: Tensor, inner_lr: float, steps: int, prior_steps: int | None = None
) -> ImplicitPriorCheck:
    """Compare `steps` gradient steps from `start` with the MAP estimate under the implied prior.

    `prior_steps` (default: `steps`) sets the k used to build Lambda, so that a wrong prior can be
    checked to disagree. x: [n, d], y: [n], start: [d]; use float64.
    """
    hessian = x.T @ x / len(y)
    curvatures, _ = _eigen(hessian)
    precision = implied_precision(hessian, inner_lr, steps if prior_steps is None else prior_steps)
    return ImplicitPriorCheck(
        curvatures=curvatures,
        precision=precision,
        descent=gradient_descent(x, y, start, inner_lr, steps),
        posterior_mode=map_estimate(x, y, start, precision),
    )
