"""`strategy="auto"` never fails where the loop works, and never gives a meta-gradient other than the loop's.

Code that runs between verified layers is part of the model too. A `torch.autograd.Function` in the
forward is found in the autograd graph and sends the model through the float64 probe (an old-style one,
without `setup_context`, made auto pick vmap, which raised); a batched strategy that raises anyway
gives way to the loop, once per model structure, with a warning and a reason in `explain_auto`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
from test_engine_folded import Branchy
from test_user_objects import Slopes, TinyNet
from test_verified_layers import CASES, tasks_like
from torch import Tensor, nn

import mamlbook as mb
from mamlbook.engine import AutoFallbackWarning, UnverifiedStrategyWarning, explain_auto, fallback, verified
from mamlbook.models import Conv4

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

SETUP_CONTEXT = "must override the setup_context staticmethod"


class OldCube(torch.autograd.Function):
    """x**3 the old way: `forward(ctx, x)`, no `setup_context`, so torch.func cannot run it."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class NewCube(torch.autograd.Function):
    """The same with `setup_context` and a generated vmap rule: torch.func runs it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return x**3

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class CubeNet(nn.Module):
    """Two verified Linear layers with a custom Function between them: what a new user writes."""

    def __init__(self, function: type[torch.autograd.Function] = OldCube) -> None:
        super().__init__()
        self.function = function
        self.inp, self.out = nn.Linear(1, 8), nn.Linear(8, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.function.apply(torch.tanh(self.inp(x))))


class ItemScaled(nn.Module):
    """Verified layers and no Function, but `.item()` in the forward: vmap raises, the loop runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(1, 8), nn.Linear(8, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.inp(x))
        return self.out(h / h.abs().max().item())


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees its own probes, warnings and fallbacks."""
    monkeypatch.setattr(verified, "_WARNED", set())
    monkeypatch.setattr(verified, "_PROBES", {})
    monkeypatch.setattr(fallback, "_FAILED", {})
    yield


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build().double()


def regression(
    shape: tuple[int, ...] = (1,), out: int = 1, tasks: int = 3, support: int = 5, query: int = 6
) -> mb.TaskBatch:
    """A seeded float64 regression meta-batch: inputs `[tasks, n, *shape]`, targets `[tasks, n, ..., out]`."""
    g = torch.Generator().manual_seed(0)

    def pair(n: int) -> tuple[Tensor, Tensor]:
        x = torch.randn(tasks, n, *shape, generator=g, dtype=torch.float64)
        return x, torch.randn(tasks, n, *shape[:-1], out, generator=g, dtype=torch.float64)

    return mb.TaskBatch(*pair(support), *pair(query))


def assert_auto_is_the_loop(model: nn.Module, batch: mb.TaskBatch, loss: str = "mse", steps: int = 1) -> None:
    params = mb.params_of(model)
    loop_loss, loop = mb.meta_gradient(model, params, batch, loss, steps, 0.3, 2, "loop")
    auto_loss, auto = mb.meta_gradient(model, params, batch, loss, steps, 0.3, 2, "auto")
    torch.testing.assert_close(auto_loss, loop_loss)
    torch.testing.assert_close(auto, loop)
    assert any(g.abs().sum() > 0 for g in loop.values())


def test_an_old_style_autograd_function_gets_the_loops_meta_gradient() -> None:
    model, batch = seeded(CubeNet), regression()
    # What a new user met: both layers verified, so auto picked vmap, and vmap raises on the Function.
    assert explain_auto(model)[0] == "vmap"
    with pytest.raises(RuntimeError, match=SETUP_CONTEXT), pytest.warns(UnverifiedStrategyWarning, match="OldCube"):
        mb.meta_gradient(model, mb.params_of(model), batch, "mse", 1, 0.3, 2, "vmap")
    name, reason = explain_auto(model, batch=batch)
    assert name == "loop"
    assert "OldCube.apply is not verified for vmap" in reason and "autograd.Function" in reason
    assert SETUP_CONTEXT in reason, "the probe's error names the cause"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # found before it runs: no fallback needed
        for steps in (1, 2):
            assert_auto_is_the_loop(model, batch, steps=steps)


def test_a_function_with_setup_context_and_a_vmap_rule_still_runs_batched() -> None:
    model, batch = seeded(lambda: CubeNet(NewCube)), regression()
    name, reason = explain_auto(model, batch=batch)
    assert name == "vmap" and "probed in float64 against the loop" in reason and "NewCube.apply" in reason
    assert_auto_is_the_loop(model, batch)


def test_a_named_strategy_warns_about_the_function() -> None:
    model, batch = seeded(lambda: CubeNet(NewCube)), regression()
    with pytest.warns(UnverifiedStrategyWarning, match="NewCube.apply"):
        mb.meta_gradient(model, mb.params_of(model), batch, "mse", 1, 0.3, 2, "threads")


def test_the_trainer_runs_the_old_style_function_in_the_loop() -> None:
    torch.manual_seed(0)
    config = mb.TrainConfig(iterations=1, meta_batch=2, eval_tasks=3, strategy="auto", seed=5)
    trainer = mb.Trainer(config, model=CubeNet(), tasks=Slopes())
    assert trainer.strategy == "loop"
    assert torch.isfinite(torch.tensor(trainer.step()))


@pytest.mark.parametrize(
    ("build", "shape", "chosen"),
    [
        (ItemScaled, (1,), "vmap"),  # vmap cannot batch .item()
        (lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)), (2, 3), "folded"),  # [B, N, L, F]
    ],
    ids=["item-under-vmap", "sequence-input-folded"],
)
def test_a_strategy_that_raises_gives_way_to_the_loop_once(
    build: Callable[[], nn.Module], shape: tuple[int, ...], chosen: str
) -> None:
    model, batch = seeded(build), regression(shape)
    assert explain_auto(model, batch=batch)[0] == chosen
    with pytest.warns(AutoFallbackWarning, match=f"chose '{chosen}' for {type(model).__name__}, which raised"):
        assert_auto_is_the_loop(model, batch)
    name, reason = explain_auto(model, batch=batch)
    assert name == "loop" and f"but {chosen} raised on {type(model).__name__}" in reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the loop is the choice now, for any model of this structure
        assert_auto_is_the_loop(seeded(build), batch)
        mb.meta_loss(model, mb.params_of(model), batch, "mse", 1, 0.3, 2, "auto")


def test_an_error_the_loop_raises_too_is_the_models_own() -> None:
    model = seeded(ItemScaled)
    wrong = regression((2,))  # the model takes one feature
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        mb.meta_gradient(model, mb.params_of(model), wrong, "mse", 1, 0.3, 2, "auto")
    assert fallback._FAILED == {}, "nothing to fall back to: the loop failed as well"


def test_running_out_of_memory_is_not_a_reason_to_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(name: str) -> None:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        fallback.with_fallback(seeded(ItemScaled), "vmap", exhausted)
    assert fallback._FAILED == {}


# Every model the package's own tests run: one per verified or measured layer, and the named models.
NAMED: dict[str, tuple[Callable[[], nn.Module], Callable[[], mb.TaskBatch], str]] = {
    "SineMLP": (mb.SineMLP, lambda: regression(), "mse"),
    "LinearModel": (mb.LinearModel, lambda: regression(), "mse"),
    "TinyNet": (TinyNet, lambda: regression(), "mse"),
    "Branchy": (Branchy, lambda: regression(out=4), "mse"),
    "Conv4": (lambda: Conv4(n_way=3, hidden=4), lambda: tasks_like((1, 16, 16)), "ce"),
    "OldCube": (CubeNet, lambda: regression(), "mse"),
    "NewCube": (lambda: CubeNet(NewCube), lambda: regression(), "mse"),
    "ItemScaled": (ItemScaled, lambda: regression(), "mse"),
}
MODELS = {
    **{layer.__name__: (build, lambda shape=shape: tasks_like(shape), "ce") for layer, (build, shape) in CASES.items()},
    **NAMED,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_test_model_gets_the_loops_meta_gradient_under_auto(name: str) -> None:
    build, batch, loss = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AutoFallbackWarning)
        assert_auto_is_the_loop(seeded(build), batch(), loss)
