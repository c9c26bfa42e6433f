"""A whole MAML meta-iteration of an MLP chain as one compiled function: inner steps, meta-gradient, Adam.

Eager, a small model's meta-iteration is dispatch: the sinusoid's 1-40-40-1 MLP does a few MFLOP per
meta-batch, while each operator, autograd node and per-parameter optimizer update costs microseconds.
`closed-compiled` (engine/mlp_closed.py) compiles the meta-gradient alone and leaves autograd's
bookkeeping and `torch.optim.Adam` outside. Here everything a meta-iteration does is one function,

    (flat params, exp_avg, exp_avg_sq, step, support_x, support_y, query_x, query_y) -> loss,

updating the four state tensors in place inside the graph, under `torch.compile(fullgraph=True,
dynamic=False)` with Inductor's C++ wrapper (kernels called from C++, not from generated Python). The
inner steps are `mlp_closed`'s written-out gradients, so `torch.func.grad` of the query loss is the
exact second-order meta-gradient without `create_graph`; Adam is written out as `torch.optim.Adam`
computes it (betas (0.9, 0.999), eps 1e-8, bias correction, no weight decay).

Once compiled, a call's fixed cost is tens of microseconds and the rest is kernels, most of them
batched matrix products: the products' layouts (`outer_update`) bought the most, the C++ wrapper
some; `max_autotune`, skipping guard evaluation and per-parameter inputs did not pay. The speed
against jitted JAX is measured side by side by `mamlbook bench` (book/results/bench-sinusoid-fastest.json,
read by the tools chapter). The first call compiles for seconds (a C++ compiler is needed), fewer
when Inductor's on-disk cache has it.

The model's parameters become views into the flat buffer, so `model` sees every update at no copy;
a parameter whose storage was replaced since (`model.double()`, `p.data = ...`) is noticed and the
buffer rebuilt from the model's current values; the model's structure is fixed at construction.
Plain SGD inner steps, second order, mse/ce/bce only.
"""

from __future__ import annotations

import math
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses import LossFn, get_loss
from ..meta import SGD, InnerRule
from ..tasks import TaskBatch
from .folded import per_task_loss
from .mlp_closed import (
    NotClosedForm,
    OuterUpdate,
    Step,
    _inner_steps,
    _output_shape,
    _target,
    forward,
    loss_kind,
    mlp_plan,
)

__all__ = ["AdamSettings", "CompiledMetaStep", "NotClosedForm"]


@dataclass(frozen=True)
class AdamSettings:
    """`torch.optim.Adam`'s defaults, no weight decay, no amsgrad."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class _Slot:
    """Where one parameter lives in the flat buffer."""

    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _views(flat: Tensor, slots: tuple[_Slot, ...]) -> dict[str, Tensor]:
    return {s.name: flat[s.offset : s.offset + s.numel].view(s.shape) for s in slots}


def adam_update(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: Tensor, adam: AdamSettings
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Adam step, functional: `(param, exp_avg, exp_avg_sq, step)` after it, in the order of
    operations of `torch.optim.Adam`'s single-tensor path, so that float64 results agree to rounding.
    `step` is a 0-d float64 tensor (a tensor, so that the compiled graph does not specialize on it)."""
    beta1, beta2 = adam.betas
    step = step + 1
    exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + grad * grad * (1 - beta2)
    bias_correction1 = 1 - torch.pow(beta1, step)
    bias_correction2_sqrt = (1 - torch.pow(beta2, step)).sqrt()
    step_size = (adam.lr / bias_correction1).to(param.dtype)
    denom = exp_avg_sq.sqrt() / bias_correction2_sqrt.to(param.dtype) + adam.eps
    return param - step_size * (exp_avg / denom), exp_avg, exp_avg_sq, step


def outer_update(w: Tensor, g: Tensor, a: Tensor, alpha: float) -> Tensor:
    """`w + alpha * g^T a` (`g [B, N, out]`, `a [B, N, in]`, `w [out, in]` or `[B, out, in]`): one SGD
    step on a weight. Autograd's own backward of `g^T a` computes `dC a^T`, an `[out, N]` product that
    the CPU's batched GEMM runs about 5x slower than its transpose (75 us against 14 us for the
    sinusoid's 25 x [40, 40] x [40, 10]), so the weight update is `mlp_closed.OuterUpdate`, whose
    backward is out of place (in place, the graph compiled under `torch.func.grad` got weight gradients
    70% off in torch 2.14). A layer with one
    input or one output (the sinusoid's first and last) is a broadcast product summed over `N`, which
    Inductor fuses with its neighbours instead of calling a matrix-vector product."""
    if g.shape[-1] == 1 or a.shape[-1] == 1:
        return w + alpha * (g.unsqueeze(-1) * a.unsqueeze(-2)).sum(1)
    return OuterUpdate.apply(w, g, a, alpha)


def meta_step_function(
    plan: tuple[Step, ...],
    slots: tuple[_Slot, ...],
    loss_fn: LossFn,
    steps: int,
    inner_lr: float,
    adam: AdamSettings,
) -> Callable[..., Tensor]:
    """The uncompiled meta-iteration: `(flat, exp_avg, exp_avg_sq, step, sx, sy, qx, qy) -> loss`,
    updating the first four in place. Shapes: `flat` and the moments `[P]`, `step` `[]` (float64),
    `sx`, `qx` `[B, N, in]`, `sy`, `qy` as the loss wants them (`[B, N, out]`, or `[B, N]` classes for ce)."""
    kind = loss_kind(loss_fn)
    names = frozenset(s.name for s in slots)

    def meta_loss(flat: Tensor, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
        params = _views(flat, slots)
        target = _target(kind, sy, _output_shape(plan, params, sx), sx.dtype)
        adapted = _inner_steps(plan, params, sx, target, kind, steps, SGD(inner_lr), inner_lr, 2, names, outer_update)
        loss = per_task_loss(loss_fn, forward(plan, adapted, qx)[0], qy).mean()
        return loss, loss.detach()

    meta_gradient = torch.func.grad(meta_loss, has_aux=True)

    def meta_step(
        flat: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: Tensor, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor
    ) -> Tensor:
        grad, loss = meta_gradient(flat, sx, sy, qx, qy)
        updated = adam_update(flat, grad, exp_avg, exp_avg_sq, step, adam)
        for state, new in zip((flat, exp_avg, exp_avg_sq, step), updated, strict=True):
            state.copy_(new)
        return loss

    return meta_step


_COMPILED: dict[tuple, Callable[..., Tensor]] = {}


def _own_code(function: types.FunctionType) -> types.FunctionType:
    """`function` with a code object of its own. Dynamo keeps compiled graphs per code object and counts
    every setting compiled for it against `recompile_limit` (8), a hard error under `fullgraph`: without
    this, the ninth learning rate or model compiled in one process would fail."""
    return types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


def compiled_meta_step(
    plan: tuple[Step, ...],
    slots: tuple[_Slot, ...],
    loss_fn: LossFn,
    steps: int,
    inner_lr: float,
    adam: AdamSettings,
    options: Mapping[str, object],
) -> Callable[..., Tensor]:
    """`meta_step_function` under `torch.compile`, one per setting in this process (a new batch shape
    or dtype compiles again, up to Dynamo's `recompile_limit` per setting)."""
    key = (plan, slots, loss_fn, steps, inner_lr, adam, tuple(sorted(options.items())))
    if key not in _COMPILED:
        function = _own_code(meta_step_function(plan, slots, loss_fn, steps, inner_lr, adam))
        _COMPILED[key] = torch.compile(function, fullgraph=True, dynamic=False, options=dict(options))
    return _COMPILED[key]


class CompiledMetaStep:
    """Second-order MAML with Adam on an MLP chain, one compiled call per meta-iteration.

    `step(batch)` updates `model`'s parameters in place (they become views of one flat buffer) and
    returns the meta-loss before the update, as `meta_gradient` followed by `torch.optim.Adam.step()`
    would. The first call compiles (seconds to a minute, a C++ compiler is needed);
    `compile_seconds` is that call's wall time. A new batch shape or dtype compiles again.

    `options` are Inductor's (`torch.compile(options=...)`, scoped to this compile): by default its
    C++ wrapper, which calls the kernels from C++ instead of generated Python.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: str | LossFn = "mse",
        steps: int = 1,
        inner_lr: float = 0.01,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        rule: InnerRule | None = None,
        options: Mapping[str, object] | None = None,
    ) -> None:
        plan = mlp_plan(model)
        if rule is not None and type(rule) is not SGD:
            raise NotClosedForm(f"CompiledMetaStep runs plain SGD inner steps only; got {type(rule).__name__}")
        if steps < 1:
            raise ValueError(f"CompiledMetaStep needs at least one inner step, got {steps}")
        loss = get_loss(loss_fn)
        loss_kind(loss)  # NotClosedForm for a loss without a written-out gradient, now rather than at the first step
        self.model = model
        self.adam = AdamSettings(lr, betas, eps)
        self.inner_lr = rule.inner_lr if rule is not None else inner_lr
        self.steps = steps
        self.compile_seconds: float | None = None
        self._slots: tuple[_Slot, ...] = ()
        self._bind()
        self.options = dict({"cpp_wrapper": True} if options is None else options)
        self._compiled = compiled_meta_step(plan, self._slots, loss, steps, self.inner_lr, self.adam, self.options)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.step_count = torch.zeros((), dtype=torch.float64, device=self.flat.device)

    def _bind(self) -> None:
        """Copy the parameters into one flat buffer and make them views of it."""
        parameters = dict(self.model.named_parameters())
        first = next(iter(parameters.values()))
        if any(p.dtype != first.dtype or p.device != first.device for p in parameters.values()):
            raise ValueError("CompiledMetaStep needs all parameters in one dtype and on one device")
        slots, offset = [], 0
        for name, p in parameters.items():
            slots.append(_Slot(name, offset, tuple(p.shape)))
            offset += p.numel()
        if self._slots and self._slots != tuple(slots):  # the compiled step knows the old layout only
            raise ValueError("the model's parameters changed names or shapes since its CompiledMetaStep was made")
        self._slots = tuple(slots)
        flat = torch.cat([p.detach().reshape(-1) for p in parameters.values()])
        for view, p in zip(_views(flat, self._slots).values(), parameters.values(), strict=True):
            p.data = view
        self.flat = flat
        self._pointers = tuple(p.data_ptr() for p in parameters.values())
        self._parameters = tuple(parameters.values())

    def _check_binding(self) -> None:
        """Rebind if the model's parameters stopped being views of `flat` (moments keep their values)."""
        if tuple(p.data_ptr() for p in self._parameters) == self._pointers:
            return
        exp_avg, exp_avg_sq = self.exp_avg, self.exp_avg_sq
        self._bind()
        self.exp_avg = exp_avg.to(self.flat)
        self.exp_avg_sq = exp_avg_sq.to(self.flat)
        self.step_count = self.step_count.to(self.flat.device)

    def step(self, batch: TaskBatch) -> Tensor:
        """One meta-iteration on `batch` (`support_x: [B, N, in]`); the meta-loss before the update, `[]`."""
        self._check_binding()
        state = (self.flat, self.exp_avg, self.exp_avg_sq, self.step_count)
        args = (*state, batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        if self.compile_seconds is not None:
            return self._compiled(*args)
        start = time.perf_counter()
        loss = self._compiled(*args)
        self.compile_seconds = time.perf_counter() - start
        return loss
