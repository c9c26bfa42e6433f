r"""A one-step Gaussian bandit where MAML's meta-gradient has a closed form: the estimators, checked.

The policy draws an action a ~ N(theta, sigma^2) and earns r(a) = -(a - g)^2, so the expected
return is J(theta) = -((theta - g)^2 + sigma^2). Adaptation takes one policy-gradient step on N
actions a_1..a_N drawn from the policy:

    g_hat = (1/N) sum_i s_i r_i,   s_i = d/dtheta log pi(a_i) = (a_i - theta) / sigma^2,
    theta' = theta + alpha g_hat,

and the meta-objective is F(theta) = E_{a_1..a_N ~ pi_theta}[J(theta')]. Write d = theta - g,
x = a - theta ~ N(0, sigma^2). Then E[s r] = -2d = J'(theta) and

    Var(s r) = E[x^2 (x + d)^4] / sigma^4 - 4 d^2 = 15 sigma^2 + 14 d^2 + d^4 / sigma^2 =: V(d),

so, J being quadratic, F(theta) = -(E[theta'] - g)^2 - Var(theta') - sigma^2:

    F(theta)  = -(1 - 2 alpha)^2 d^2 - (alpha^2 / N) V(d) - sigma^2,
    F'(theta) = -2 (1 - 2 alpha)^2 d - (alpha^2 / N) (28 d + 4 d^3 / sigma^2).

The exact meta-gradient is E[(1 + alpha d g_hat/d theta) J'(theta')] + E[J(theta') sum_i s_i]. The
estimators' expectations, with m1 = E[s r] = -2d, m2 = E[s^2 r] = -(3 + d^2 / sigma^2) and
m3 = E[s^3 r^2] = 60 d + 12 d^3 / sigma^2 (J'' = -2, J(theta') expanded exactly to second order):

- "dice" (magic box of the pre-adaptation log-probabilities on J(theta')): F'(theta), unbiased.
- "surrogate" drops E[J(theta') sum_i s_i] = alpha J'(theta) m2 + J'' alpha^2 (m3 / (2N) + (N-1)/N m2 m1),
  so its bias is minus that.
- "lvc" (ProMP; in one step the same as the magic box in the inner objective alone): its Hessian term
  alpha E[(1/N) sum_i s_i^2 r_i J'(theta')] is the linearization of the dropped term, off by
  J'' alpha^2 m3 / (2N) = -(alpha^2 / N)(60 d + 12 d^3 / sigma^2): a bias of order alpha^2 / N.

`meta_gradient_samples` computes each estimator with autograd exactly as the RL code does (one
sample = one draw of N actions), so their Monte-Carlo means can be held against these formulas.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .estimators import ESTIMATORS, magic_box

LOG_2PI = math.log(2 * math.pi)


def expected_return(theta: float | Tensor, goal: float, sigma: float) -> float | Tensor:
    """J(theta) = E_{a ~ N(theta, sigma^2)}[-(a - g)^2]."""
    return -((theta - goal) ** 2 + sigma**2)


def _variance(d: float, sigma: float) -> float:
    return 15 * sigma**2 + 14 * d**2 + d**4 / sigma**2


def meta_objective(theta: float, goal: float, sigma: float, alpha: float, n: int) -> float:
    """F(theta) = E[J(theta + alpha g_hat)], exactly."""
    d = theta - goal
    return -((1 - 2 * alpha) ** 2) * d**2 - alpha**2 / n * _variance(d, sigma) - sigma**2


def meta_gradient(theta: float, goal: float, sigma: float, alpha: float, n: int) -> float:
    """dF/dtheta, exactly: the true meta-gradient."""
    d = theta - goal
    return -2 * (1 - 2 * alpha) ** 2 * d - alpha**2 / n * (28 * d + 4 * d**3 / sigma**2)


def expected_estimate(estimator: str, theta: float, goal: float, sigma: float, alpha: float, n: int) -> float:
    """What each estimator's meta-gradient equals in expectation (see the module's docstring)."""
    d = theta - goal
    m1, m2, m3 = -2 * d, -(3 + d**2 / sigma**2), 60 * d + 12 * d**3 / sigma**2
    truth = meta_gradient(theta, goal, sigma, alpha, n)
    if estimator == "dice":
        return truth
    if estimator == "surrogate":
        dropped = alpha * m1 * m2 - 2 * alpha**2 * (m3 / (2 * n) + (n - 1) / n * m2 * m1)
        return truth - dropped
    if estimator == "lvc":
        return truth - 2 * alpha**2 * m3 / (2 * n)
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def meta_gradient_samples(
    estimator: str,
    theta: float,
    goal: float,
    sigma: float,
    alpha: float,
    n: int,
    samples: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """`samples` independent meta-gradient estimates `[samples]`, each from its own N inner actions.

    Autograd computes them as in MAML-RL: theta' = theta + alpha * grad(inner objective), created
    with `create_graph`, and the meta-gradient is the derivative of the outer objective J(theta')
    (exact here, so only the inner sampling is random). "dice" multiplies J(theta') by the magic box
    of the N actions' summed log-probabilities, with a leave-one-out baseline
    (`box(C) J - (box(C) - 1) b`, b the mean of the other samples' J(theta'): independent of this one).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    leaf = torch.tensor(float(theta), dtype=dtype, requires_grad=True)
    per_sample = leaf.expand(samples)  # gradients w.r.t. this view are per sample
    noise = torch.randn(samples, n, generator=generator, dtype=dtype)
    actions = leaf.detach() + sigma * noise
    rewards = -((actions - goal) ** 2)
    log_prob = -((actions - per_sample[:, None]) ** 2) / (2 * sigma**2) - math.log(sigma) - 0.5 * LOG_2PI
    weight = magic_box(log_prob) if estimator == "lvc" else log_prob
    inner = (weight * rewards).mean(1)
    (g_hat,) = torch.autograd.grad(inner.sum(), per_sample, create_graph=True)
    adapted = per_sample + alpha * g_hat
    outer = expected_return(adapted, goal, sigma)
    if estimator == "dice":
        box = magic_box(log_prob.sum(1))
        values = outer.detach()
        baseline = (values.sum() - values) / max(samples - 1, 1)
        outer = box * outer - (box - 1) * baseline
    (grads,) = torch.autograd.grad(outer.sum(), per_sample)
    return grads.detach()


def meta_gradient_bias(
    estimator: str,
    theta: float = 0.0,
    goal: float = 1.0,
    sigma: float = 1.0,
    alpha: float = 0.1,
    n: int = 10,
    samples: int = 200_000,
    seed: int = 0,
    chunk: int = 100_000,
) -> dict[str, float]:
    """The estimator's Monte-Carlo mean against the true meta-gradient: mean, standard error, truth,
    bias (mean - truth), z (bias / standard error) and the expected bias from the closed form."""
    generator = torch.Generator().manual_seed(seed)
    parts = [
        meta_gradient_samples(estimator, theta, goal, sigma, alpha, n, min(chunk, samples - start), generator)
        for start in range(0, samples, chunk)
    ]
    values = torch.cat(parts)
    mean = values.mean().item()
    se = (values.std() / math.sqrt(values.numel())).item()
    truth = meta_gradient(theta, goal, sigma, alpha, n)
    return {
        "estimator": estimator,
        "mean": mean,
        "se": se,
        "truth": truth,
        "bias": mean - truth,
        "z": (mean - truth) / se,
        "expected_bias": expected_estimate(estimator, theta, goal, sigma, alpha, n) - truth,
        "samples": samples,
    }
