"""Which layers each execution strategy is known to differentiate exactly as the loop does.

Every strategy is meant to compute the loop's meta-gradient, but the fast ones get there through
machinery that can be wrong on particular layers without raising: `torch.func.vmap`'s batching rules
give a wrong second-order gradient through batch norm, layer norm and instance norm (float64, 1e-4
to 3e-2 relative to the loop, depending on the model). So a strategy is trusted on a model only when
every layer of the model is on that strategy's allow-list, `VERIFIED_LAYERS`, and a layer goes on a
list only when tests/test_verified_layers.py measures it in float64, orders 2 and 1, one and two
inner steps, within 1e-8 of the loop (in practice within 1e-15: rounding).

For a model with a layer off the list, `probe` measures the one model instead: a float64 copy on a
tiny random meta-batch, the candidate against the loop, with the verdict cached per model structure.

Containers (`nn.Sequential`, `nn.ModuleList`, `nn.ModuleDict`, and any module that holds children
but no parameters or buffers of its own) are judged by the modules they hold. What a container's
`forward` does between its children is part of the model too: when torch.fx can trace the model,
calls of the functional norms vmap gets wrong (`F.layer_norm`, ...) are caught; and given an example
batch, the forward is run once and every `torch.autograd.Function` it puts in the graph (a backward
of its own, which torch.func cannot run without `setup_context` and which no list vouches for)
makes the model unverified, so it is probed or runs the loop. Without a batch those go unseen.
"""

from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.func import functional_call
from torch.utils._pytree import tree_leaves

from ..meta import InnerLoop
from ..tasks import TaskBatch
from .mlp_closed import SUPPORTED_LAYERS as _CLOSED_FORM
from .registry import STRATEGIES, QueryLosses

# Layers on which the per-task loop, run in threads, is exact: each task's graph is the loop's own.
_LOOP_EXACT: frozenset[type[nn.Module]] = frozenset(
    {
        nn.Linear,
        nn.Bilinear,
        nn.Conv1d,
        nn.Conv2d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.RMSNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.ReLU,
        nn.LeakyReLU,
        nn.ELU,
        nn.GELU,
        nn.SiLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Softplus,
        nn.Identity,
        nn.Flatten,
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.Dropout,
        nn.Embedding,
        nn.MultiheadAttention,
    }
)

# What folding supports (engine/chain.py); every one of them measured exact, batch norm included.
_FOLDED_EXACT: frozenset[type[nn.Module]] = frozenset(
    {
        nn.Linear,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.LeakyReLU,
        nn.ELU,
        nn.GELU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Identity,
        nn.Flatten,
        nn.MaxPool2d,
        nn.AvgPool2d,
    }
)

_VMAP_WRONG = "torch.func's batching rule gives a wrong second-order gradient"

# Measured wrong (float64, order 2, worst of 1 and 2 inner steps), kept apart from the layers never
# measured so that messages can say what is wrong. Order 1 is exact, and so are these norms without
# an affine weight: the error is in the second derivative through the per-task weight.
WRONG_LAYERS: dict[str, dict[type[nn.Module], str]] = {
    "vmap": {
        nn.BatchNorm1d: f"{_VMAP_WRONG}, 2e-2 off the loop",
        nn.BatchNorm2d: f"{_VMAP_WRONG}, 7e-3 off the loop",
        nn.LayerNorm: f"{_VMAP_WRONG}, 3e-2 off the loop",
        nn.InstanceNorm1d: f"{_VMAP_WRONG}, 2e-2 off the loop",
        nn.InstanceNorm2d: f"{_VMAP_WRONG}, 8e-3 off the loop",
    },
}

VERIFIED_LAYERS: dict[str, frozenset[type[nn.Module]]] = {
    "vmap": _LOOP_EXACT - WRONG_LAYERS["vmap"].keys(),
    "folded": _FOLDED_EXACT,
    "checkpointed": _FOLDED_EXACT,
    "threads": _LOOP_EXACT,
    # Only what engine/mlp_closed.py writes gradients for: Linear, ReLU, Tanh, Identity.
    "closed": _CLOSED_FORM,
}
"""Per strategy, the module types (exact types, not subclasses) measured to give the loop's meta-gradient."""

# Free functions that vmap differentiates wrongly (F.layer_norm with a weight: 3e-2 off the loop), as a
# container's forward may call them directly.
_VMAP_WRONG_FUNCTIONS: dict[Callable[..., Tensor], str] = {
    F.layer_norm: "F.layer_norm",
    F.batch_norm: "F.batch_norm",
    F.instance_norm: "F.instance_norm",
    torch.layer_norm: "torch.layer_norm",
    torch.batch_norm: "torch.batch_norm",
    torch.instance_norm: "torch.instance_norm",
}

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_JUDGED_WHOLE = frozenset().union(*VERIFIED_LAYERS.values(), *WRONG_LAYERS.values())


class UnverifiedStrategyWarning(UserWarning):
    """A strategy was asked for on a model with layers it is not verified on: it runs, unchecked."""


def _is_container(module: nn.Module) -> bool:
    """A module whose only state is its children: it computes nothing the children do not."""
    if isinstance(module, _CONTAINERS):
        return True
    has_children = next(module.children(), None) is not None
    own_state = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return has_children and not own_state


def judged_layers(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The modules a verdict is made of: known layers as a whole (MultiheadAttention holds a Linear
    of its own), containers opened up, anything else as the unknown layer it is."""
    if type(model) not in _JUDGED_WHOLE and _is_container(model):
        for name, child in model.named_children():
            yield from judged_layers(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix, model


def _layer_label(module: nn.Module) -> str:
    return type(module).__name__


_IN_TRAINING = " in training mode"
_RANDOM = "random masks, drawn differently by each strategy"


def _random_in_training(module: nn.Module) -> bool:
    """Dropout in training mode draws masks that differ from strategy to strategy (vmap refuses to draw
    them at all): there is no one right meta-gradient to compare with, so only evaluation mode is verified."""
    return type(module) is nn.Dropout and module.training


_FREE_CALLS: weakref.WeakKeyDictionary[nn.Module, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _vmap_wrong_free_calls(model: nn.Module) -> tuple[str, ...]:
    """Functional norms that a container's forward calls directly, where torch.fx can see them."""
    if model not in _FREE_CALLS:
        try:
            graph = fx.symbolic_trace(model).graph
        except Exception:  # fx refuses dynamic control flow in many ways; then only modules are judged
            found: tuple[str, ...] = ()
        else:
            found = tuple(
                sorted(
                    {
                        _VMAP_WRONG_FUNCTIONS[node.target]
                        for node in graph.nodes
                        if node.op == "call_function" and node.target in _VMAP_WRONG_FUNCTIONS
                    }
                )
            )
        _FREE_CALLS[model] = found
    return _FREE_CALLS[model]


# Label suffix of an autograd.Function found in the forward, and what is unknown about it.
_APPLY = ".apply"
_OWN_BACKWARD = "a torch.autograd.Function with a backward of its own, never measured against the loop"

_FUNCTIONS: weakref.WeakKeyDictionary[nn.Module, tuple[str, ...]] = weakref.WeakKeyDictionary()


def autograd_functions(model: nn.Module, batch: TaskBatch) -> tuple[str, ...]:
    """The `torch.autograd.Function`s that `model`'s forward on `batch`'s first support set puts in the
    autograd graph, as `Name.apply`; cached per model object.

    The graph is the one reliable witness: torch.fx traces through `apply` into the Function's own
    forward, and a `TorchFunctionMode` sees the same inner ops, so neither shows the custom backward
    that vmap and grad would have to run. The forward runs on a copy of the buffers (batch norm's
    running statistics stay as they were) with the random state restored afterwards. A forward that
    raises finds nothing here: the strategy that runs it raises the same error.
    """
    if model in _FUNCTIONS:
        return _FUNCTIONS[model]
    state = {k: p.detach().requires_grad_() for k, p in model.named_parameters()}
    state.update({k: b.clone() for k, b in model.named_buffers()})
    x = batch.support_x[0]
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.enable_grad():
            outputs = functional_call(model, state, (x,))
    except Exception:  # not ours to report: the loop raises it too, with the user's own traceback
        return ()
    found: set[str] = set()
    pending = [t.grad_fn for t in tree_leaves(outputs) if isinstance(t, Tensor) and t.grad_fn is not None]
    seen: set[int] = set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            found.add(f"{node._forward_cls.__name__}{_APPLY}")
        pending.extend(child for child, _ in node.next_functions)
    _FUNCTIONS[model] = tuple(sorted(found))
    return _FUNCTIONS[model]


def has_own_forward(model: nn.Module) -> bool:
    """Whether a container of a class of its own runs code of its own between the layers judged."""
    return any(type(c) not in _CONTAINERS for c in _opened_containers(model))


def unverified_layers(model: nn.Module, strategy: str, batch: TaskBatch | None = None) -> list[str]:
    """The layer types of `model` that `strategy` is not verified on, sorted; empty for the loop.

    With `batch`, a forward of the model's own is run once to find autograd.Functions in it."""
    if strategy == "loop":
        return []
    verified = VERIFIED_LAYERS.get(strategy, frozenset())
    missing: set[str] = set()
    for _, module in judged_layers(model):
        if type(module) not in verified:
            missing.add(_layer_label(module))
        elif _random_in_training(module):
            missing.add(f"{_layer_label(module)}{_IN_TRAINING}")
    if strategy == "vmap" and has_own_forward(model):
        missing.update(_vmap_wrong_free_calls(model))
    if batch is not None and has_own_forward(model):
        missing.update(autograd_functions(model, batch))
    return sorted(missing)


def _opened_containers(model: nn.Module) -> Iterator[nn.Module]:
    """The containers `judged_layers` opens: those of a class of their own have a forward that may call
    free functions; torch's own only chain or hold their children."""
    if type(model) not in _JUDGED_WHOLE and _is_container(model):
        yield model
        for child in model.children():
            yield from _opened_containers(child)


def is_verified(model: nn.Module, strategy: str, batch: TaskBatch | None = None) -> bool:
    """Whether every layer of `model` is on `strategy`'s list (always, for the loop)."""
    return not unverified_layers(model, strategy, batch)


def why_unverified(layers: list[str], strategy: str) -> str:
    """A sentence naming `layers` and, for those measured wrong, what is wrong with them."""
    wrong = {t.__name__: reason for t, reason in WRONG_LAYERS.get(strategy, {}).items()}
    if strategy == "vmap":
        wrong.update({name: f"{_VMAP_WRONG} through a weight" for name in _VMAP_WRONG_FUNCTIONS.values()})
    wrong.update({name: _RANDOM for name in layers if name.endswith(_IN_TRAINING)})
    wrong.update({name: _OWN_BACKWARD for name in layers if name.endswith(_APPLY)})
    by_reason: dict[str, list[str]] = {}
    for name in layers:
        by_reason.setdefault(wrong.get(name, "never measured against the loop"), []).append(name)
    if len(by_reason) == 1:
        because = next(iter(by_reason))
    else:
        because = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in by_reason.items())
    verb = "is" if len(layers) == 1 else "are"
    return f"{', '.join(layers)} {verb} not verified for {strategy} ({because})"


def structure_key(model: nn.Module) -> Hashable:
    """What a verdict depends on: each module's type, configuration, mode and tensor shapes.

    Two models with the same key run the same code on the same shapes, so one probe serves both.
    """
    return tuple(
        (
            name,
            type(module),
            module.extra_repr(),
            module.training,
            tuple((k, tuple(p.shape), p.dtype) for k, p in module.named_parameters(recurse=False)),
            tuple((k, tuple(b.shape), b.dtype) for k, b in module.named_buffers(recurse=False)),
        )
        for name, module in model.named_modules()
    )


_WARNED: set[tuple[Hashable, str]] = set()


def warn_if_unverified(model: nn.Module, strategy: str, batch: TaskBatch | None = None) -> None:
    """Warn, once per model structure and strategy, that `strategy` runs on layers it is not verified on."""
    missing = unverified_layers(model, strategy, batch)
    if not missing:
        return
    key = (structure_key(model), strategy)
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(
        f"strategy {strategy!r} on {type(model).__name__}: {why_unverified(missing, strategy)}; it runs as asked, "
        "but its meta-gradient may differ from the loop's (strategy 'auto' checks it or falls back to 'loop')",
        UnverifiedStrategyWarning,
        stacklevel=3,
    )


# --- the probe: measure the one model instead of the layer lists ---------------------------------


def first_line(exc: BaseException) -> str:
    """`Type: message` up to the message's first line break: enough to name a cause in one sentence."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


PROBE_TOLERANCE = 1e-8
PROBE_TASKS = 3
PROBE_EXAMPLES = 4
PROBE_INNER_LR = 0.3


@dataclass(frozen=True)
class Probe:
    """A strategy measured against the loop on one model: the relative error, or why it could not run."""

    strategy: str
    error: float | None
    failure: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is not None and self.error < PROBE_TOLERANCE

    def describe(self) -> str:
        if self.error is None:
            return f"the float64 probe against the loop failed: {self.failure}"
        return f"probed in float64 against the loop: {self.error:.0e}"


_PROBES: dict[tuple[Hashable, str, str], Probe] = {}


def _like(x: Tensor, examples: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Random `[PROBE_TASKS, examples, *x_shape]` like `x`: normal floats, or integers in `x`'s range."""
    shape = (PROBE_TASKS, examples, *x.shape[2:])
    if x.is_floating_point():
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(device)
    high = int(x.max()) + 1 if x.numel() else 2
    return torch.randint(0, max(high, 1), shape, generator=generator).to(device=device, dtype=x.dtype)


def probe_batch(model: nn.Module, batch: TaskBatch, device: torch.device) -> TaskBatch:
    """A tiny random float64 meta-batch shaped like `batch`, with regression targets shaped like the
    model's output: the MSE exercises every second derivative of the network, whatever the user's loss."""
    generator = torch.Generator().manual_seed(0)
    support = min(PROBE_EXAMPLES, batch.support_x.shape[1])
    query = min(PROBE_EXAMPLES, batch.query_x.shape[1])
    sx = _like(batch.support_x, support, generator, device)
    qx = _like(batch.query_x, query, generator, device)
    with torch.no_grad():
        out_shape = model(sx[0]).shape[1:]

    def targets(n: int) -> Tensor:
        return torch.randn(PROBE_TASKS, n, *out_shape, generator=generator, dtype=torch.float64).to(device)

    return TaskBatch(sx, targets(support), qx, targets(query))


def _meta_gradient(run: QueryLosses, model: nn.Module, leaves: dict[str, Tensor], batch: TaskBatch):
    with torch.enable_grad():
        loss = run(model, leaves, batch, InnerLoop("mse", steps=1, inner_lr=PROBE_INNER_LR, order=2)).mean()
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return [torch.zeros_like(v) if g is None else g for v, g in zip(leaves.values(), grads, strict=True)]


def measure(model: nn.Module, strategy: str, batch: TaskBatch) -> Probe:
    """`strategy` against the loop on a float64 copy of `model`: order 2, one inner step, no cache."""
    try:
        twin = copy.deepcopy(model).double()
        device = next((p.device for p in twin.parameters()), torch.device("cpu"))
        tiny = probe_batch(twin, batch, device)
        leaves = {k: p.detach().requires_grad_() for k, p in twin.named_parameters()}
        reference = _meta_gradient(STRATEGIES["loop"], twin, leaves, tiny)
        candidate = _meta_gradient(STRATEGIES[strategy], twin, leaves, tiny)
    except Exception as exc:  # any failure means the candidate is not shown right: the verdict says why
        return Probe(strategy, None, first_line(exc))
    norm = math.sqrt(sum(float((r**2).sum()) for r in reference))
    diff = math.sqrt(sum(float(((c - r) ** 2).sum()) for c, r in zip(candidate, reference, strict=True)))
    if not math.isfinite(diff) or norm == 0:
        return Probe(strategy, None, f"the loop's meta-gradient is {'zero' if norm == 0 else 'not finite'}")
    return Probe(strategy, diff / norm)


def probe(model: nn.Module, strategy: str, batch: TaskBatch) -> Probe:
    """`measure`, once per model structure, strategy and device: a probe costs a few meta-gradients."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    key = (structure_key(model), strategy, device.type)
    if key not in _PROBES:
        _PROBES[key] = measure(model, strategy, batch)
    return _PROBES[key]
