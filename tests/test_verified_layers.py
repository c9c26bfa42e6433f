"""The layer lists of engine/verified.py, each entry measured: a strategy listed for a layer gives the
loop's meta-gradient through it (float64, orders 2 and 1, one and two inner steps), and `auto` trusts a
strategy only where every layer of the model is listed, or a probe on the model itself says so.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from conftest import relative_error
from torch import nn

import mamlbook as mb
from mamlbook.engine import (
    VERIFIED_LAYERS,
    WRONG_LAYERS,
    Probe,
    UnverifiedStrategyWarning,
    available_strategies,
    chain,
    explain_auto,
    meta_gradient,
    resolve_strategy,
    threaded,
    unverified_layers,
    verified,
    vmapped,
)

# vmap runs Bilinear through a slow fallback, and says so: correct, only slower.
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

TOLERANCE = 1e-8
CONFIGS = [(order, steps) for order in (2, 1) for steps in (1, 2)]


class BilinearNet(nn.Module):
    """A bilinear layer needs two inputs: here the same features twice."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.bilinear, self.head = nn.Linear(6, 4), nn.Bilinear(4, 4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        return self.head(torch.tanh(self.bilinear(h, h)))


class SelfAttention(nn.Module):
    """Self-attention on `[N, L, E]`, averaged over the sequence.

    With the default `need_weights=True`: attention by explicit matmuls. Without it, on the CPU,
    torch's fused kernel has no double backward, and order 2 fails in every strategy, the loop included.
    """

    def __init__(self, embed: int = 4) -> None:
        super().__init__()
        self.inp, self.head = nn.Linear(embed, embed), nn.Linear(embed, 3)
        self.attention = nn.MultiheadAttention(embed, num_heads=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        attended, _ = self.attention(h, h, h)
        return self.head(attended.mean(1))


def vector(layer: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(6, 4), layer, nn.Tanh(), nn.Linear(4, 3))


def signal(layer: nn.Module, length_after: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 2, 3, padding=1), layer, nn.Tanh(), nn.Flatten(), nn.Linear(2 * length_after, 3))


def image(layer: nn.Module, side_after: int = 6) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), layer, nn.Tanh(), nn.Flatten(), nn.Linear(2 * side_after**2, 3))


VECTOR, SIGNAL, IMAGE, TOKENS, SEQUENCE = (6,), (2, 8), (1, 6, 6), (4,), (3, 4)

# One small model per layer type, and the shape of one input example (tokens are integers).
CASES: dict[type[nn.Module], tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    nn.Linear: (lambda: vector(nn.Linear(4, 4)), VECTOR),
    nn.Bilinear: (BilinearNet, VECTOR),
    nn.Conv1d: (lambda: signal(nn.Conv1d(2, 2, 3, padding=1)), SIGNAL),
    nn.Conv2d: (lambda: image(nn.Conv2d(2, 2, 3, padding=1)), IMAGE),
    nn.BatchNorm1d: (lambda: vector(nn.BatchNorm1d(4, track_running_stats=False)), VECTOR),
    nn.BatchNorm2d: (lambda: image(nn.BatchNorm2d(2, track_running_stats=False)), IMAGE),
    nn.LayerNorm: (lambda: vector(nn.LayerNorm(4)), VECTOR),
    nn.GroupNorm: (lambda: image(nn.GroupNorm(1, 2)), IMAGE),  # on vectors, groups of two normalize to +-1
    nn.RMSNorm: (lambda: vector(nn.RMSNorm(4)), VECTOR),
    nn.InstanceNorm1d: (lambda: signal(nn.InstanceNorm1d(2, affine=True)), SIGNAL),
    nn.InstanceNorm2d: (lambda: image(nn.InstanceNorm2d(2, affine=True)), IMAGE),
    nn.ReLU: (lambda: vector(nn.ReLU()), VECTOR),
    nn.LeakyReLU: (lambda: vector(nn.LeakyReLU(0.1)), VECTOR),
    nn.ELU: (lambda: vector(nn.ELU()), VECTOR),
    nn.GELU: (lambda: vector(nn.GELU()), VECTOR),
    nn.SiLU: (lambda: vector(nn.SiLU()), VECTOR),
    nn.Tanh: (lambda: vector(nn.Tanh()), VECTOR),
    nn.Sigmoid: (lambda: vector(nn.Sigmoid()), VECTOR),
    nn.Softplus: (lambda: vector(nn.Softplus()), VECTOR),
    nn.Identity: (lambda: vector(nn.Identity()), VECTOR),
    nn.Flatten: (lambda: nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.Tanh(), nn.Linear(4, 3)), IMAGE),
    nn.MaxPool1d: (lambda: signal(nn.MaxPool1d(2), 4), SIGNAL),
    nn.MaxPool2d: (lambda: image(nn.MaxPool2d(2), 3), IMAGE),
    nn.AvgPool1d: (lambda: signal(nn.AvgPool1d(2), 4), SIGNAL),
    nn.AvgPool2d: (lambda: image(nn.AvgPool2d(2), 3), IMAGE),
    nn.AdaptiveAvgPool2d: (lambda: image(nn.AdaptiveAvgPool2d(2), 2), IMAGE),
    nn.Dropout: (lambda: vector(nn.Dropout(0.3)).eval(), VECTOR),  # evaluation mode only: see verified.py
    nn.Embedding: (
        lambda: nn.Sequential(nn.Embedding(10, 3), nn.Flatten(), nn.Linear(12, 4), nn.Tanh(), nn.Linear(4, 3)),
        TOKENS,
    ),
    nn.MultiheadAttention: (SelfAttention, SEQUENCE),
}


def build(layer: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return CASES[layer][0]().double()


def tasks_like(shape: tuple[int, ...], tasks: int = 3, support: int = 4, query: int = 5) -> mb.TaskBatch:
    """A seeded float64 classification meta-batch (three classes); integer tokens for `TOKENS`."""
    g = torch.Generator().manual_seed(0)

    def inputs(n: int) -> torch.Tensor:
        if shape == TOKENS:
            return torch.randint(0, 10, (tasks, n, *shape), generator=g)
        return torch.randn(tasks, n, *shape, generator=g, dtype=torch.float64)

    return mb.TaskBatch(
        inputs(support),
        torch.randint(0, 3, (tasks, support), generator=g),
        inputs(query),
        torch.randint(0, 3, (tasks, query), generator=g),
    )


@functools.cache
def loop_reference(layer: type[nn.Module], order: int, steps: int) -> dict[str, torch.Tensor]:
    """The loop's meta-gradient for the layer's case, computed once for all the strategies compared with it."""
    model = build(layer)
    return meta_gradient(model, mb.params_of(model), tasks_like(CASES[layer][1]), "ce", steps, 0.3, order, "loop")[1]


def error_against_loop(layer: type[nn.Module], strategy: str, order: int, steps: int) -> float:
    model = build(layer)
    batch = tasks_like(CASES[layer][1])
    _, grads = meta_gradient(model, mb.params_of(model), batch, "ce", steps, 0.3, order, strategy)
    return relative_error(grads, loop_reference(layer, order, steps))


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees its own warnings and probe verdicts, and the threads strategy really runs threads.

    One intra-op thread: on these tiny tensors more threads only synchronize (10x slower on a busy CPU).
    """
    monkeypatch.setattr(verified, "_WARNED", set())
    monkeypatch.setattr(verified, "_PROBES", {})
    monkeypatch.setattr(threaded, "default_workers", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_listed_layer_has_a_case() -> None:
    listed = set().union(*VERIFIED_LAYERS.values(), *WRONG_LAYERS.values())
    assert listed <= CASES.keys(), f"listed but never measured: {listed - CASES.keys()}"
    # A module the folded strategy learns to run is trusted only once it is measured and listed here.
    assert VERIFIED_LAYERS["folded"] == VERIFIED_LAYERS["checkpointed"] == set(chain._SUPPORTED)


LISTED = [(layer, s) for s, layers in VERIFIED_LAYERS.items() for layer in CASES if layer in layers]


@pytest.mark.parametrize(("layer", "strategy"), LISTED, ids=[f"{t.__name__}-{s}" for t, s in LISTED])
def test_a_listed_strategy_gives_the_loops_meta_gradient(layer: type[nn.Module], strategy: str) -> None:
    errors = {config: error_against_loop(layer, strategy, *config) for config in CONFIGS}
    assert max(errors.values()) < TOLERANCE, f"(order, steps) -> relative error: {errors}"
    assert any(g.abs().sum() > 0 for g in loop_reference(layer, 2, 1).values())


WRONG = [(layer, s) for s, layers in WRONG_LAYERS.items() for layer in layers]


@pytest.mark.parametrize(("layer", "strategy"), WRONG, ids=[f"{t.__name__}-{s}" for t, s in WRONG])
def test_a_layer_measured_wrong_is_still_wrong(
    layer: type[nn.Module], strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If torch fixes one of these, this fails: move the layer onto the strategy's list."""
    monkeypatch.setattr(vmapped, "has_batch_norm", lambda model: False)  # measure vmap where it is refused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedStrategyWarning)
        assert error_against_loop(layer, strategy, order=2, steps=1) > 1e-6
        assert error_against_loop(layer, strategy, order=1, steps=1) < TOLERANCE, "only the second order is wrong"


def layer_norm_mlp() -> nn.Module:
    """The model that made `auto` pick vmap and get a meta-gradient 1e-4 off the loop's."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LayerNorm(32), nn.Tanh(), nn.Linear(32, 5)).double()


def digits(tasks: int = 3) -> mb.TaskBatch:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(tasks, 10, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.arange(5).repeat(tasks, 2)
    return mb.TaskBatch(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])


def test_auto_does_not_trust_vmap_through_layer_norm() -> None:
    model, batch = layer_norm_mlp(), digits()
    params = mb.params_of(model)
    name, reason = explain_auto(model)
    assert name == "loop" and "LayerNorm is not verified for vmap" in reason and "no example batch" in reason
    name, reason = explain_auto(model, batch=batch)
    assert name == "loop" and "probed in float64 against the loop" in reason
    for steps in (1, 2):
        _, ref = meta_gradient(model, params, batch, "ce", steps, 0.3, 2, "loop")
        _, chosen = meta_gradient(model, params, batch, "ce", steps, 0.3, 2, resolve_strategy("auto", model))
        _, auto = meta_gradient(model, params, batch, "ce", steps, 0.3, 2, "auto")
        assert relative_error(chosen, ref) < TOLERANCE and relative_error(auto, ref) < TOLERANCE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnverifiedStrategyWarning)
            _, vmapped_grads = meta_gradient(model, params, batch, "ce", steps, 0.3, 2, "vmap")
        assert relative_error(vmapped_grads, ref) > 1e-6, "the bug this guards against"


def test_a_model_of_verified_layers_keeps_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verified, "measure", lambda *args: pytest.fail("a verified model was probed"))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 5))
    assert explain_auto(model, "cpu")[0] == "folded"
    assert explain_auto(model, "cpu", batch=digits())[0] == "folded"
    assert resolve_strategy("auto", mb.SineMLP()) == "folded"
    assert available_strategies(model) == ["loop", "vmap", "folded", "checkpointed", "threads"]


def test_explicit_vmap_on_layer_norm_warns_once_and_runs() -> None:
    model, batch = layer_norm_mlp(), digits()
    with pytest.warns(UnverifiedStrategyWarning, match="LayerNorm is not verified for vmap"):
        mb.meta_loss(model, mb.params_of(model), batch, "ce", 1, 0.3, 2, "vmap")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedStrategyWarning)
        mb.meta_loss(layer_norm_mlp(), mb.params_of(model), batch, "ce", 1, 0.3, 2, "vmap")  # same structure
        mb.meta_loss(model, mb.params_of(model), batch, "ce", 1, 0.3, 2, "loop")
    with pytest.warns(UnverifiedStrategyWarning, match="for threads"):
        resolve_strategy("threads", vector(nn.Dropout(0.3)))  # training mode: random masks


def test_available_strategies_leave_out_what_is_wrong_or_unmeasured() -> None:
    for layer in (nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.BatchNorm1d):
        assert "vmap" not in available_strategies(build(layer)), layer.__name__
        assert "threads" in available_strategies(build(layer)), layer.__name__
    assert available_strategies(vector(nn.Dropout(0.3))) == ["loop"]
    assert available_strategies(vector(nn.Dropout(0.3)).eval()) == ["loop", "vmap", "threads"]


class Swish(nn.Module):
    """A layer no list knows: verified for nothing, whatever it computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class FunctionalLayerNorm(nn.Module):
    """A container of verified layers whose forward calls the functional layer norm itself."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.head = nn.Linear(6, 4), nn.Linear(4, 3)
        self.gain = nn.Linear(1, 4)  # holds the norm's weight as a child, so this stays a container

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(F.layer_norm(self.inp(x), (4,), self.gain.weight[:, 0])))


def test_containers_are_judged_by_what_they_hold() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 3), nn.ModuleList([nn.Linear(6, 3), nn.Tanh()])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b[1](self.b[0](x))

    class OwnWeight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale, self.inner = nn.Parameter(torch.ones(3)), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale * self.inner(x)

    assert unverified_layers(Branchy(), "vmap") == []
    assert unverified_layers(OwnWeight(), "vmap") == ["OwnWeight"]
    assert unverified_layers(vector(Swish()), "threads") == ["Swish"]
    assert unverified_layers(FunctionalLayerNorm(), "vmap") == ["F.layer_norm"]
    assert unverified_layers(FunctionalLayerNorm(), "threads") == []
    assert unverified_layers(build(nn.LayerNorm), "loop") == []


def test_the_probe_decides_once_per_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    measure = verified.measure

    def counted(model: nn.Module, strategy: str, batch: mb.TaskBatch) -> Probe:
        calls.append(strategy)
        return measure(model, strategy, batch)

    monkeypatch.setattr(verified, "measure", counted)
    batch = tasks_like(VECTOR)
    name, reason = explain_auto(vector(Swish()), "cpu", batch=batch)  # unknown, but right under vmap
    assert name == "vmap" and "probed in float64 against the loop" in reason and "Swish" in reason
    assert explain_auto(vector(Swish()), "cpu", batch=batch)[0] == "vmap"  # a new model of the same structure
    assert calls == ["vmap"]
    name, reason = explain_auto(FunctionalLayerNorm(), "cpu", batch=batch)
    assert name == "loop" and "F.layer_norm is not verified for vmap" in reason
    assert calls == ["vmap", "vmap"]
    assert explain_auto(vector(nn.Linear(4, 4)), "cpu", batch=batch)[0] == "folded"
    assert calls == ["vmap", "vmap"], "a verified model needs no probe"


def test_a_failed_probe_falls_back_to_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(verified, "measure", lambda model, strategy, batch: Probe(strategy, None, "boom"))
        name, reason = explain_auto(vector(Swish()), "cpu", batch=tasks_like(VECTOR))
    assert name == "loop" and "probe against the loop failed: boom" in reason
    # A probe that cannot even run (vmap refuses to draw random dropout masks) fails too.
    name, reason = explain_auto(vector(nn.Dropout(0.3)), "cpu", batch=tasks_like(VECTOR))
    assert name == "loop" and "failed" in reason
