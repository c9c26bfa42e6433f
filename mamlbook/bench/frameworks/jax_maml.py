"""MAML in JAX: `jax.grad` of a function that calls `jax.grad` inside.

JAX's transformations compose, so the second-order meta-gradient needs no flag: the inner step is
`jax.grad` of the support loss, the outer gradient differentiates through it. One task is a pure
function of (weights, data); `jax.vmap` maps it over the meta-batch and `jax.jit` compiles the whole
meta-step with XLA. Batch norm is written out per task, so under `vmap` each task is normalized with
its own statistics (the case PyTorch's `vmap` gets wrong, book/faster.md).

float64: JAX computes in float32 unless 64-bit types are enabled. A call with float64 arrays runs
inside `jax.enable_x64(True)`, a context manager scoped to that call, so the process-wide default
(float32) is left alone; JAX versions without it (before 0.6) get `jax.config.update("jax_enable_x64",
True)` instead, which stays on for the rest of the process.

JAX is imported only when a function here runs (`pip install mamlbook[frameworks]`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .quiet import quiet_import

if TYPE_CHECKING:
    from .problem import MetaInputs, Result

BN_EPS = 1e-5  # PyTorch's BatchNorm2d default


def require_jax():
    """`import jax`, quiet (as TensorFlow: `quiet_import`), with a clear message when it is not
    installed."""
    # The CPU jaxlib of the `frameworks` extra warns through Python logging, when its backend starts
    # on a machine with a GPU, that it falls back to the CPU: this harness means the CPU, and an
    # executed chapter would show the line as stderr. Only set when the user has not chosen a level.
    backend_log = logging.getLogger("jax._src.xla_bridge")
    if backend_log.level == logging.NOTSET:
        backend_log.setLevel(logging.ERROR)
    try:
        jax = quiet_import("jax")
    except ImportError as exc:
        raise ImportError(
            f"JAX is not installed ({exc}); install the `frameworks` extra: "
            "pip install -c constraints/book.txt -e '.[frameworks]'"
        ) from None
    return jax


def precision(dtype: np.dtype) -> contextlib.AbstractContextManager:
    """64-bit types for this block when `dtype` is float64 (see the module's docstring)."""
    jax = require_jax()
    if np.dtype(dtype) != np.float64:
        return contextlib.nullcontext()
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    jax.config.update("jax_enable_x64", True)
    return contextlib.nullcontext()


def sine_forward(w: dict[str, Any], x):
    """SineMLP with weights `w` in PyTorch's names and layouts (`weight` is `[out, in]`); x `[N, 1]`."""
    jax = require_jax()
    h = jax.nn.relu(x @ w["net.0.weight"].T + w["net.0.bias"])
    h = jax.nn.relu(h @ w["net.2.weight"].T + w["net.2.bias"])
    return h @ w["net.4.weight"].T + w["net.4.bias"]


def conv_forward(w: dict[str, Any], x):
    """TinyConvNet with weights `w`; x `[N, C, H, W]`, kept in PyTorch's layouts (NCHW, OIHW)."""
    jax = require_jax()
    lax, jnp = jax.lax, jax.numpy
    h = x
    for block in ("body.0", "body.1"):
        h = lax.conv_general_dilated(
            h, w[f"{block}.0.weight"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        h = h + w[f"{block}.0.bias"][:, None, None]
        # Batch norm in training mode: this batch's mean and (biased) variance per channel.
        mean = h.mean(axis=(0, 2, 3), keepdims=True)
        variance = h.var(axis=(0, 2, 3), keepdims=True)
        h = (h - mean) / jnp.sqrt(variance + BN_EPS)
        h = h * w[f"{block}.1.weight"][:, None, None] + w[f"{block}.1.bias"][:, None, None]
        h = jax.nn.relu(h)
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    h = h.reshape(h.shape[0], -1)
    return h @ w["head.weight"].T + w["head.bias"]


def mse(prediction, target):
    return ((prediction - target) ** 2).mean()


def cross_entropy(logits, labels):
    jax = require_jax()
    log_p = jax.nn.log_softmax(logits)
    return -jax.numpy.take_along_axis(log_p, labels[:, None], axis=1).mean()


MODELS: dict[str, tuple[Callable, Callable]] = {"sine": (sine_forward, mse), "conv": (conv_forward, cross_entropy)}


def task_query_loss(
    weights, support_x, support_y, query_x, query_y, forward, loss, steps, inner_lr, first_order=False, loop=False
):
    """One task's query loss after `steps` SGD steps on its support set: a pure function of `weights`.

    `loop` runs the steps as `lax.fori_loop` (under `jit` the compiled graph is one step long, so
    compile time does not grow with `steps`) instead of a Python loop."""
    jax = require_jax()

    def sgd_step(_, fast):
        grads = jax.grad(lambda w: loss(forward(w, support_x), support_y))(fast)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return jax.tree.map(lambda w, g: w - inner_lr * g, fast, grads)

    if loop:
        fast = jax.lax.fori_loop(0, steps, sgd_step, weights)
    else:
        fast = weights
        for i in range(steps):
            fast = sgd_step(i, fast)
    return loss(forward(fast, query_x), query_y)


def meta_loss(weights, batch, forward, loss, steps, inner_lr, first_order=False, vectorized=True):
    """The MAML objective over `batch` (support_x, support_y, query_x, query_y, each `[B, ...]`):
    `vmap` over tasks and `fori_loop` over steps (`vectorized`, for `jit`) or Python loops (eager)."""
    jax = require_jax()
    task = partial(
        task_query_loss,
        forward=forward,
        loss=loss,
        steps=steps,
        inner_lr=inner_lr,
        first_order=first_order,
        loop=vectorized,
    )
    if vectorized:
        return jax.vmap(task, in_axes=(None, 0, 0, 0, 0))(weights, *batch).mean()
    tasks = batch[0].shape[0]
    return sum(task(weights, *(a[i] for a in batch)) for i in range(tasks)) / tasks


def _arrays(inputs: MetaInputs):
    jnp = require_jax().numpy
    weights = {k: jnp.asarray(v) for k, v in inputs.weights.items()}
    # Labels as int32: JAX's default integer width without 64-bit types.
    batch = tuple(
        jnp.asarray(a if a.dtype.kind == "f" else a.astype(np.int32))
        for a in (inputs.support_x, inputs.support_y, inputs.query_x, inputs.query_y)
    )
    return weights, batch


def _objective(inputs: MetaInputs, compiled: bool):
    forward, loss = MODELS[inputs.arch]
    return partial(
        meta_loss,
        forward=forward,
        loss=loss,
        steps=inputs.steps,
        inner_lr=inputs.inner_lr,
        first_order=inputs.order == 1,
        vectorized=compiled,
    )


def jax_meta_gradient(inputs: MetaInputs, compiled: bool = True) -> Result:
    """`jax.jit(jax.value_and_grad(meta_loss))` over `vmap`ped tasks (`compiled`), or without `jit`
    and with a loop over tasks (eager: every operation is dispatched on its own), on NumPy inputs."""
    jax = require_jax()
    with precision(inputs.dtype):
        weights, batch = _arrays(inputs)
        value_and_grad = jax.value_and_grad(_objective(inputs, compiled))
        if compiled:
            value_and_grad = jax.jit(value_and_grad)
        value, grads = value_and_grad(weights, batch)
        return float(value), {k: np.asarray(g) for k, g in grads.items()}


def jax_meta_loss(inputs: MetaInputs) -> float:
    """The MAML objective alone (eager), for finite differences."""
    with precision(inputs.dtype):
        weights, batch = _arrays(inputs)
        return float(_objective(inputs, compiled=False)(weights, batch))


def jax_step(inputs: MetaInputs, compiled: bool = True) -> Callable[[], None]:
    """One meta-iteration in JAX's idiom: a pure step (meta-gradient, then Adam from
    `jax.example_libraries.optimizers`) on an explicit optimizer state, `jit`-compiled or eager."""
    jax = require_jax()
    from jax.example_libraries import optimizers

    opt_init, opt_update, get_params = optimizers.adam(1e-3)
    objective = _objective(inputs, compiled)
    weights, batch = _arrays(inputs)

    def step(i, state, batch):
        value, grads = jax.value_and_grad(objective)(get_params(state), batch)
        return value, opt_update(i, grads, state)

    run = jax.jit(step) if compiled else step
    carry = {"i": 0, "state": opt_init(weights)}

    def timed_step() -> None:
        value, carry["state"] = run(carry["i"], carry["state"], batch)
        carry["i"] += 1
        jax.block_until_ready((value, carry["state"]))

    return timed_step
