"""MAML, first-order MAML and Reptile to second order in the inner learning rate.

Nichol, Achiam & Schulman (2018), "On First-Order Meta-Learning Algorithms", section 5, expand the
three updates in a Taylor series in alpha. Take k minibatches of one task, x_1 ... x_k, and k-1 inner
SGD steps of size alpha on x_1 ... x_{k-1} (Reptile takes all k steps). With g_i and H_i the gradient
and Hessian of minibatch i's loss, all at the initialization theta, to first order in alpha:

  MAML     g_k - alpha * sum_{j<k} (H_k g_j + H_j g_k)
  FOMAML   g_k - alpha * sum_{j<k} H_k g_j
  Reptile  (theta - phi_{k+1}) / alpha = sum_i g_i - alpha * sum_i sum_{j<i} H_i g_j

with a remainder O(alpha^2). Averaged over minibatches, E[g_i] = AvgGrad and E[H_i g_j] = AvgGradInner
(i != j), the paper's k(k-1)/2 and 2(k-1) coefficients. The exact updates are computed with the
package's own functions (`adapt`, `task_query_loss`, `reptile_pseudo_gradient`); the predictions
with Hessian-vector products. `taylor_check` measures both over a range of alpha, so that the
remainder's log-log slope (2) can be read off.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..functional import Params, forward
from ..losses import LossFn, get_loss
from ..tasks import TaskBatch
from .inner import adapt, autograd_grads
from .objective import task_query_loss
from .reptile import reptile_pseudo_gradient
from .rules import SGD

ALGORITHMS = ("maml", "fomaml", "reptile")
Minibatch = tuple[Tensor, Tensor]

__all__ = ["ALGORITHMS", "TaylorCheck", "TaylorTerms", "exact_update", "smooth_copy", "taylor_check", "taylor_terms"]


def smooth_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every ReLU replaced by tanh (same parameter names and shapes).

    The expansion needs a loss with continuous derivatives. A ReLU network's gradient jumps where a
    unit's pre-activation changes sign on some input, and a unit that sits near zero flips after an
    arbitrarily small step, so no Taylor series of fixed order holds across it.
    """
    smooth = copy.deepcopy(model)
    for parent in smooth.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Tanh())
    return smooth


def _flat(params: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def _check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm


def _check_minibatches(minibatches: Sequence[Minibatch]) -> Sequence[Minibatch]:
    if len(minibatches) < 2:
        raise ValueError(f"the expansion needs at least two minibatches, got {len(minibatches)}")
    return minibatches


@dataclass(frozen=True)
class TaylorTerms:
    """The pieces of the expansion at theta, flattened in the model's parameter order.

    `grads[i]` is g_i; `hvp[i][j]` is H_i g_j (i != j; the diagonal is never used).
    """

    grads: tuple[Tensor, ...]
    hvp: tuple[tuple[Tensor | None, ...], ...]

    def leading(self, algorithm: str) -> Tensor:
        """The order-alpha^0 term: g_k for MAML and FOMAML, sum_i g_i for Reptile."""
        _check_algorithm(algorithm)
        return torch.stack(self.grads).sum(0) if algorithm == "reptile" else self.grads[-1]

    def first_order(self, algorithm: str) -> Tensor:
        """The coefficient of -alpha (a sum of H_i g_j with i != j)."""
        _check_algorithm(algorithm)
        k = len(self.grads) - 1
        zero = torch.zeros_like(self.grads[0])
        if algorithm == "reptile":
            return sum((self.hvp[i][j] for i in range(k + 1) for j in range(i)), zero)
        fomaml = sum((self.hvp[k][j] for j in range(k)), zero)
        return fomaml + sum((self.hvp[j][k] for j in range(k)), zero) if algorithm == "maml" else fomaml

    def predict(self, algorithm: str, alpha: float) -> Tensor:
        """The expansion to first order in alpha, as one flat vector."""
        return self.leading(algorithm) - alpha * self.first_order(algorithm)


def taylor_terms(
    model: nn.Module, params: Mapping[str, Tensor], minibatches: Sequence[Minibatch], loss_fn: str | LossFn = "mse"
) -> TaylorTerms:
    """g_i and every H_i g_j at `params`, each Hessian-vector product by one double backward."""
    loss = get_loss(loss_fn)
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    graphs = []
    for x, y in _check_minibatches(minibatches):
        graphs.append(autograd_grads(lambda p, x=x, y=y: loss(forward(model, p, x), y), leaves, create_graph=True))
    grads = tuple(_flat(g).detach() for g in graphs)
    hvp = []
    for i, g_i in enumerate(graphs):
        row: list[Tensor | None] = []
        for j, g_j in enumerate(grads):
            if i == j:
                row.append(None)
                continue
            with torch.enable_grad():
                inner = torch.dot(_flat(g_i), g_j)
                parts = torch.autograd.grad(inner, list(leaves.values()), retain_graph=True, allow_unused=True)
            hessian_vector = {
                k: torch.zeros_like(v) if h is None else h for (k, v), h in zip(leaves.items(), parts, strict=True)
            }
            row.append(_flat(hessian_vector).detach())
        hvp.append(tuple(row))
    return TaylorTerms(grads, tuple(hvp))


def exact_update(
    model: nn.Module,
    params: Mapping[str, Tensor],
    minibatches: Sequence[Minibatch],
    algorithm: str,
    alpha: float,
    loss_fn: str | LossFn = "mse",
) -> Tensor:
    """The algorithm's exact update direction for one task, flat.

    MAML and FOMAML: the gradient of the last minibatch's loss after one inner step (`order` 2 or 1)
    on each earlier minibatch in turn. Reptile: (theta - phi) / alpha after one SGD step on every
    minibatch in turn, from `reptile_pseudo_gradient`.
    """
    _check_algorithm(algorithm)
    _check_minibatches(minibatches)
    if algorithm == "reptile":
        current = {k: v.detach() for k, v in params.items()}
        total = torch.zeros_like(_flat(current))
        for x, y in minibatches:
            one_task = TaskBatch(x[None], y[None], x[None], y[None])
            _, pseudo = reptile_pseudo_gradient(model, current, one_task, loss_fn, 1, SGD(alpha))
            total = total + _flat(pseudo)
            current = {k: current[k] - pseudo[k] for k in current}
        return total / alpha
    order = 2 if algorithm == "maml" else 1
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    with torch.enable_grad():
        current: Params = dict(leaves)
        for x, y in minibatches[:-2]:
            current = adapt(model, current, x, y, loss_fn, 1, alpha, order)
        (sx, sy), (qx, qy) = minibatches[-2], minibatches[-1]
        query = task_query_loss(model, current, sx, sy, qx, qy, loss_fn, 1, alpha, order)
        grads = torch.autograd.grad(query, list(leaves.values()))
    return _flat(dict(zip(leaves, grads, strict=True))).detach()


@dataclass(frozen=True)
class TaylorCheck:
    """Exact updates against their expansion over a range of inner learning rates.

    `remainder[a][n]` is |exact - prediction| / |exact| for algorithm a at `alphas[n]`; `leading[a][n]`
    the same for the order-alpha^0 term alone (what remains without the Hessian-vector products).
    `maml_as_fomaml[n]` compares MAML's exact update with FOMAML's prediction: it keeps an order-alpha
    error, the H_j g_k terms FOMAML lacks, so the three predictions are not interchangeable.
    """

    alphas: tuple[float, ...]
    remainder: dict[str, tuple[float, ...]]
    leading: dict[str, tuple[float, ...]]
    maml_as_fomaml: tuple[float, ...]

    def slope(self, errors: Sequence[float], up_to: float = math.inf) -> float:
        """The least-squares slope of log(error) against log(alpha) over the alphas <= `up_to`: 2 for
        a remainder, 1 for an expansion that misses its order-alpha term. At a large alpha the
        higher orders bend the line, so the slope is read where the expansion holds."""
        pairs = [(math.log(a), math.log(e)) for a, e in zip(self.alphas, errors, strict=True) if a <= up_to]
        if len(pairs) < 2:
            raise ValueError(f"need at least two alphas <= {up_to}, got {len(pairs)}")
        mx = sum(x for x, _ in pairs) / len(pairs)
        my = sum(y for _, y in pairs) / len(pairs)
        return sum((x - mx) * (y - my) for x, y in pairs) / sum((x - mx) ** 2 for x, _ in pairs)


def _relative(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def taylor_check(
    model: nn.Module,
    params: Mapping[str, Tensor],
    minibatches: Sequence[Minibatch],
    alphas: Sequence[float],
    loss_fn: str | LossFn = "mse",
) -> TaylorCheck:
    """Compare `exact_update` with `TaylorTerms.predict` for every algorithm at every alpha.

    Run it in float64: at the smallest alphas the remainder is a tiny fraction of the update, far
    above float64 rounding but close to float32's.
    """
    terms = taylor_terms(model, params, minibatches, loss_fn)
    remainder: dict[str, list[float]] = {a: [] for a in ALGORITHMS}
    leading: dict[str, list[float]] = {a: [] for a in ALGORITHMS}
    swapped = []
    for alpha in alphas:
        for algorithm in ALGORITHMS:
            exact = exact_update(model, params, minibatches, algorithm, alpha, loss_fn)
            remainder[algorithm].append(_relative(terms.predict(algorithm, alpha), exact))
            leading[algorithm].append(_relative(terms.leading(algorithm), exact))
            if algorithm == "maml":
                swapped.append(_relative(terms.predict("fomaml", alpha), exact))
    return TaylorCheck(
        tuple(float(a) for a in alphas),
        {a: tuple(v) for a, v in remainder.items()},
        {a: tuple(v) for a, v in leading.items()},
        tuple(swapped),
    )
