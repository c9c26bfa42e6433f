"""The folded and checkpointed strategies compute the loop's meta-gradient, batch norm included.

Compared in float64: at float32 rounding, correct implementations differ by more than a wrong one.
"""

from __future__ import annotations

import pytest
import torch
from conftest import image_batch
from torch import nn

from mamlbook import meta_gradient, query_losses
from mamlbook.engine import STRATEGIES, resolve_strategy
from mamlbook.engine.chain import NotFoldable, is_foldable
from mamlbook.engine.folded import folded_query_losses
from mamlbook.engine.strategy import auto_strategy, available_strategies, explain_auto
from mamlbook.meta import InnerLoop, MetaSGD
from mamlbook.models import Conv4, SineMLP
from mamlbook.tasks import Sinusoid

FAST = ("folded", "checkpointed")


def conv4() -> Conv4:
    """Small enough to run in seconds; batch norm and max-pooling as in the full model."""
    torch.manual_seed(0)
    return Conv4(n_way=3, hidden=4, image_size=16).double()


def relative(a: dict, b: dict) -> float:
    num = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    den = sum((a[k] ** 2).sum() for k in a).sqrt()
    return float(num / den)


@pytest.mark.parametrize("strategy", FAST)
@pytest.mark.parametrize("order", [2, 1])
@pytest.mark.parametrize("steps", [1, 2])
def test_matches_loop_on_conv4_with_batch_norm(strategy: str, order: int, steps: int) -> None:
    model, batch = conv4(), image_batch()
    params = dict(model.named_parameters())
    ref_loss, ref = meta_gradient(model, params, batch, "ce", steps, 0.4, order, "loop")
    loss, grads = meta_gradient(model, params, batch, "ce", steps, 0.4, order, strategy)
    assert torch.allclose(loss, ref_loss, rtol=1e-12, atol=0)
    assert relative(ref, grads) < 1e-8
    assert sum(float(g.abs().sum()) for g in ref.values()) > 0


def test_second_order_differs_from_first_order() -> None:
    """Otherwise the comparisons above could not tell a first-order bug from a second-order one."""
    model, batch = conv4(), image_batch()
    params = dict(model.named_parameters())
    _, second = meta_gradient(model, params, batch, "ce", 2, 0.4, 2, "folded")
    _, first = meta_gradient(model, params, batch, "ce", 2, 0.4, 1, "folded")
    assert relative(second, first) > 1e-4


@pytest.mark.parametrize("strategy", FAST)
def test_order_zero_losses_match_and_carry_no_meta_gradient(strategy: str) -> None:
    model, batch = conv4(), image_batch()
    params = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}
    ref = query_losses(model, params, batch, "ce", 2, 0.4, 0, "loop")
    losses = query_losses(model, params, batch, "ce", 2, 0.4, 0, strategy)
    assert torch.allclose(losses, ref, rtol=1e-12, atol=0)
    assert losses.shape == (len(batch),)


@pytest.mark.parametrize("strategy", FAST)
def test_sinusoid_mlp_and_learned_rates(strategy: str) -> None:
    """Vectors fold as batched matmuls; a per-weight learned rate broadcasts over the task dimension."""
    torch.manual_seed(0)
    model = SineMLP().double()
    batch = Sinusoid(k_shot=5).sample(4, torch.Generator().manual_seed(1)).to(dtype=torch.float64)
    params = dict(model.named_parameters())
    rule = MetaSGD.like(params, 0.01)
    for order in (2, 1):
        ref = query_losses(model, params, batch, "mse", 3, 0.01, order, "loop", rule)
        losses = query_losses(model, params, batch, "mse", 3, 0.01, order, strategy, rule)
        rates = list(rule.learned.values())
        g_ref = torch.autograd.grad(ref.sum(), [*params.values(), *rates])
        g_new = torch.autograd.grad(losses.sum(), [*params.values(), *rates])
        assert torch.allclose(losses, ref, rtol=1e-12, atol=1e-15)
        for a, b in zip(g_ref, g_new, strict=True):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-14)


def test_chunks_give_the_same_meta_gradient() -> None:
    model, batch = conv4(), image_batch()
    params = dict(model.named_parameters())
    whole_loss, whole = meta_gradient(model, params, batch, "ce", 1, 0.4, 2, "folded")
    loss, chunked = meta_gradient(model, params, batch, "ce", 1, 0.4, 2, "folded", chunk=2)
    assert torch.allclose(loss, whole_loss, rtol=1e-12, atol=0)
    assert relative(whole, chunked) < 1e-12


def test_inputs_are_not_modified() -> None:
    model, batch = conv4(), image_batch()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    before = {k: v.clone() for k, v in params.items()}
    query_losses(model, params, batch, "ce", 2, 0.4, 2, "folded")
    assert all(torch.equal(params[k], before[k]) for k in params)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(1, 4), nn.Linear(1, 4)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_unsupported_models_are_refused_clearly() -> None:
    batch = Sinusoid(k_shot=5).sample(2, torch.Generator().manual_seed(0))
    model = Branchy()
    assert not is_foldable(model)
    with pytest.raises(NotFoldable, match="chain|no rule|calls"):
        folded_query_losses(model, dict(model.named_parameters()), batch, InnerLoop("mse", 1, 0.01, 2))
    assert "folded" not in available_strategies(model)
    assert is_foldable(Conv4(hidden=4))


def test_auto_picks_a_right_strategy() -> None:
    conv = Conv4(hidden=4)
    assert auto_strategy(conv, "cpu") == "loop"
    assert auto_strategy(conv, "cuda") == "folded"
    assert resolve_strategy("auto", conv) == "loop"  # the model lives on the CPU
    assert auto_strategy(SineMLP(), "cpu") == "folded"
    assert auto_strategy(SineMLP(), "cuda") == "folded"
    assert resolve_strategy("auto", Branchy()) == "vmap"
    name, reason = explain_auto(conv, "cpu")
    assert name == "loop" and "cpu" in reason
    assert "checkpointed" in STRATEGIES
    # vmap is never offered for a model with batch norm: its second-order gradient there is wrong.
    assert "vmap" not in available_strategies(conv)


def test_auto_runs_anil_folded_and_a_full_rule_as_before() -> None:
    from mamlbook import TrainConfig, Trainer
    from mamlbook.meta import SGD, Subset
    from mamlbook.meta.anil import anil_rule

    conv = Conv4(hidden=4)
    assert resolve_strategy("auto", conv, anil_rule(conv, 0.4)) == "folded"
    assert "adapts only the last layers" in explain_auto(conv, "cpu", anil_rule(conv, 0.4))[1]
    everything = Subset(SGD(0.4), [k for k, _ in conv.named_parameters()])
    assert resolve_strategy("auto", conv, everything) == "loop", "a subset that adapts the first layer saves nothing"
    sine = dict(task="sinusoid", model="sine-mlp", iterations=1)
    assert Trainer(TrainConfig(**sine, algorithm="anil")).strategy == "folded"
    assert Trainer(TrainConfig(**sine, algorithm="maml")).strategy == "folded"  # on the CPU, for any foldable MLP
    mlp = SineMLP()
    assert "adapts only the last layers" in explain_auto(mlp, "cpu", anil_rule(mlp, 0.4))[1]
    assert "adapts only the last layers" not in explain_auto(mlp, "cpu")[1]
