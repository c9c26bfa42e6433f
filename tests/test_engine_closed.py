"""The closed-form strategy (engine/mlp_closed.py) computes the loop's meta-gradient on MLP chains.

Compared in float64, where the explicit inner gradient and autograd's agree to rounding; a central
finite difference checks the loop and the closed form against the meta-loss itself.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from conftest import relative_error
from torch import nn

import mamlbook as mb
from mamlbook.engine import NotClosedForm, UnverifiedStrategyWarning, available_strategies
from mamlbook.engine.mlp_closed import is_mlp_chain, mlp_plan
from mamlbook.meta import LSLR, SGD, MetaSGD, Subset
from mamlbook.models import Conv4

EXACT = 1e-10


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: timings and compiles on one thread


def mlp(hidden: tuple[int, ...], activation: type[nn.Module], inputs: int = 1, outputs: int = 1) -> nn.Module:
    torch.manual_seed(0)
    sizes = [inputs, *hidden, outputs]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers).double()


def sine_batch(tasks: int = 4, dtype: torch.dtype = torch.float64) -> mb.TaskBatch:
    return mb.Sinusoid(k_shot=5, k_query=7).sample(tasks, torch.Generator().manual_seed(3)).to(dtype=dtype)


def class_batch(tasks: int = 3, classes: int = 3, features: int = 6) -> mb.TaskBatch:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tasks, 9, features, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (tasks, 9), generator=g)
    return mb.TaskBatch(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])


def both(model, batch, loss, steps, lr, order, rule=None, strategy="closed"):
    params = mb.params_of(model)
    ref_loss, ref = mb.meta_gradient(model, params, batch, loss, steps, lr, order, "loop", rule)
    loss_value, grads = mb.meta_gradient(model, params, batch, loss, steps, lr, order, strategy, rule)
    return float(ref_loss), ref, float(loss_value), grads


@pytest.mark.parametrize("order", [2, 1])
@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])
@pytest.mark.parametrize("hidden", [(8,), (8, 8), (6, 7, 5)], ids=["depth2", "depth3", "depth4"])
def test_equals_the_loop(hidden, activation, steps, order) -> None:
    ref_loss, ref, loss, grads = both(mlp(hidden, activation), sine_batch(), "mse", steps, 0.1, order)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert relative_error(grads, ref) < EXACT
    assert sum(float(g.abs().sum()) for g in ref.values()) > 0


def test_second_order_differs_from_first_order() -> None:
    """Otherwise the comparisons above could not tell a first-order bug from a second-order one."""
    model, batch = mlp((8, 8), nn.Tanh), sine_batch()
    _, second = mb.meta_gradient(model, mb.params_of(model), batch, "mse", 2, 0.1, 2, "closed")
    _, first = mb.meta_gradient(model, mb.params_of(model), batch, "mse", 2, 0.1, 1, "closed")
    assert relative_error(first, second) > 1e-4


def test_sine_mlp_identity_and_linear_without_bias() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8, bias=False), nn.Identity(), nn.Tanh(), nn.Linear(8, 1)).double()
    assert [s.kind for s in mlp_plan(model)] == ["linear", "tanh", "linear"]
    for net in (model, mb.SineMLP().double()):
        _, ref, _, grads = both(net, sine_batch(), "mse", 3, 0.1, 2)
        assert relative_error(grads, ref) < EXACT


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_classification_losses(loss: str) -> None:
    batch = class_batch()
    if loss == "bce":
        batch = mb.TaskBatch(batch.support_x, (batch.support_y > 0).double().unsqueeze(-1), batch.query_x,
                             (batch.query_y > 0).double().unsqueeze(-1))  # fmt: skip
    model = mlp((5,), nn.Tanh, inputs=6, outputs=3 if loss == "ce" else 1)
    for order in (2, 1):
        ref_loss, ref, value, grads = both(model, batch, loss, 2, 0.4, order)
        assert value == pytest.approx(ref_loss, rel=1e-12)
        assert relative_error(grads, ref) < EXACT


def rules(model: nn.Module):
    params = mb.params_of(model)
    return {
        "sgd": SGD(0.2),
        "metasgd": MetaSGD({k: torch.rand_like(v) * 0.2 for k, v in params.items()}),
        "lslr": LSLR.like(params, 0.2, steps=2),
        "subset": Subset(SGD(0.2), [k for k in params if k.startswith("2.")]),
    }


@pytest.mark.parametrize("name", ["sgd", "metasgd", "lslr", "subset"])
def test_inner_rules(name: str) -> None:
    model = mlp((8,), nn.ReLU)
    rule = rules(model)[name]
    _, ref, _, grads = both(model, sine_batch(), "mse", 2, 0.2, 2, rule)
    assert relative_error(grads, ref) < EXACT


def test_learned_rates_get_the_loops_gradient() -> None:
    model = mlp((8,), nn.Tanh)
    params = mb.params_of(model)
    rates = {k: (torch.rand_like(v) * 0.2).requires_grad_() for k, v in params.items()}
    batch = sine_batch()
    found = {}
    for strategy in ("loop", "closed"):
        loss = mb.meta_loss(model, params, batch, "mse", 2, 0.2, 2, strategy, MetaSGD(rates))
        found[strategy] = dict(zip(rates, torch.autograd.grad(loss, list(rates.values())), strict=True))
    assert relative_error(found["closed"], found["loop"]) < EXACT


def test_central_finite_difference() -> None:
    """The meta-gradient is the derivative of the meta-loss: checked along a random direction."""
    model, batch = mlp((6, 6), nn.Tanh), sine_batch()
    params = mb.params_of(model)
    _, grads = mb.meta_gradient(model, params, batch, "mse", 3, 0.1, 2, "closed")
    direction = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(7), dtype=v.dtype)
                 for k, v in params.items()}  # fmt: skip
    eps = 1e-5

    def at(sign: float) -> float:
        shifted = {k: v.detach() + sign * eps * direction[k] for k, v in params.items()}
        return float(mb.meta_loss(model, shifted, batch, "mse", 3, 0.1, 2, "closed"))

    numeric = (at(1) - at(-1)) / (2 * eps)
    analytic = float(sum((grads[k] * direction[k]).sum() for k in params))
    assert numeric == pytest.approx(analytic, rel=1e-7)


def test_order_zero_gives_the_losses_and_no_meta_gradient() -> None:
    model, batch = mlp((8,), nn.ReLU), sine_batch()
    params = mb.params_of(model)
    loss, grads = mb.meta_gradient(model, params, batch, "mse", 2, 0.1, 0, "closed")
    ref_loss, _ = mb.meta_gradient(model, params, batch, "mse", 2, 0.1, 0, "loop")
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
    assert all(float(g.abs().sum()) == 0 for g in grads.values())


def test_float32() -> None:
    model = mb.SineMLP()
    batch = mb.Sinusoid(k_shot=10).sample(25, torch.Generator().manual_seed(0))
    _, ref, loss, grads = both(model, batch, "mse", 5, 0.01, 2)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert relative_error(grads, ref) < 1e-4


def test_params_are_left_untouched() -> None:
    model, batch = mlp((8,), nn.ReLU), sine_batch()
    params = {k: v.detach().clone() for k, v in mb.params_of(model).items()}
    before = {k: v.clone() for k, v in params.items()}
    mb.meta_gradient(model, params, batch, "mse", 3, 0.1, 2, "closed")
    assert all(torch.equal(params[k], before[k]) for k in params)


def test_unsupported_model_rule_and_loss_are_named() -> None:
    batch = sine_batch()
    conv = Conv4(n_way=3, hidden=4, image_size=16)
    images = mb.TaskBatch(torch.rand(2, 3, 1, 16, 16), torch.arange(3).repeat(2, 1),
                          torch.rand(2, 3, 1, 16, 16), torch.arange(3).repeat(2, 1))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedStrategyWarning)
        with pytest.raises(NotClosedForm, match="has Conv2d"):
            mb.meta_loss(conv, mb.params_of(conv), images, "ce", 1, 0.4, 2, "closed")
        sigmoid = nn.Sequential(nn.Linear(1, 4), nn.Sigmoid(), nn.Linear(4, 1)).double()
        with pytest.raises(NotClosedForm, match="has Sigmoid"):
            mb.meta_loss(sigmoid, mb.params_of(sigmoid), batch, "mse", 1, 0.1, 2, "closed")

    class Momentum:
        def __call__(self, params, grads, step):
            return {k: p - 0.1 * grads[k] for k, p in params.items()}

    model = mlp((8,), nn.ReLU)
    with pytest.raises(NotClosedForm, match="got Momentum"):
        mb.meta_loss(model, mb.params_of(model), batch, "mse", 1, 0.1, 2, "closed", Momentum())
    with pytest.raises(NotClosedForm, match="got the loss l1_loss"):
        mb.meta_loss(model, mb.params_of(model), batch, torch.nn.functional.l1_loss, 1, 0.1, 2, "closed")


def test_listed_where_verified_and_not_for_other_models() -> None:
    assert "closed" in available_strategies(mb.SineMLP())
    assert "closed" not in available_strategies(Conv4(hidden=4))
    assert "closed-compiled" not in available_strategies(mb.SineMLP())  # never on a list: see registry

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.out = nn.Linear(1, 4), nn.Linear(4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.inp(x)) + x)

    assert is_mlp_chain(mb.SineMLP()) and not is_mlp_chain(Residual()) and not is_mlp_chain(Conv4(hidden=4))


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("cc")), reason="torch.compile needs a C++ compiler")
@pytest.mark.filterwarnings("ignore::mamlbook.engine.UnverifiedStrategyWarning")
def test_compiled_variant_equals_the_loop() -> None:
    """One compile (about 30 s on two cores): second order, two inner steps, float64."""
    model, batch = mb.SineMLP().double(), sine_batch()
    ref_loss, ref, loss, grads = both(model, batch, "mse", 2, 0.1, 2, strategy="closed-compiled")
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert relative_error(grads, ref) < EXACT
    with pytest.raises(NotClosedForm, match="plain SGD only"):
        mb.meta_loss(model, mb.params_of(model), batch, "mse", 1, 0.1, 2, "closed-compiled",
                     MetaSGD.like(mb.params_of(model), 0.1))  # fmt: skip
