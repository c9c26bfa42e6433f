"""The same meta-gradient from every framework: NumPy arrays in, `(loss, grads)` out.

Each implementation receives one `MetaInputs` (initial weights as a dict name -> array in mamlbook's
parameter naming, and a meta-batch of tasks as arrays `[B, ...]`) and returns the MAML objective
(the mean over tasks of the query loss after `steps` plain SGD steps of size `inner_lr` on the
support set) and its gradient with respect to the initial weights, as floats and NumPy arrays.
Nothing is shared between implementations but these arrays, so agreement to rounding means each
framework computes the same second-order meta-gradient.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ...engine import meta_gradient
from ...models import SineMLP
from ...tasks import Sinusoid, TaskBatch
from ..peers import PEER_GRADIENTS, model_with
from . import jax_maml, tensorflow_maml, torch_plain
from .problem import (
    ARCHS,
    Arrays,
    MetaInputs,
    Result,
    TinyConvNet,
    numpy_grads,
    torch_batch,
    torch_module,
    torch_weights,
)


def make_inputs(
    arch: str,
    tasks: int = 4,
    steps: int = 1,
    dtype: str = "float64",
    seed: int = 0,
    inner_lr: float | None = None,
    side: int = 8,
    n_way: int = 3,
    query_per_class: int = 2,
    k_shot: int = 10,
) -> MetaInputs:
    """Seeded weights (PyTorch's default initialization) and tasks.

    "sine": the paper's sinusoid tasks, `k_shot` support and query points each, `inner_lr` 0.01.
    "conv": random `side` x `side` images, `n_way` classes, one support image per class and
    `query_per_class` query images per class, `inner_lr` 0.4.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    if arch == "sine":
        model: nn.Module = SineMLP()
        batch = Sinusoid(k_shot=k_shot).sample(tasks, generator)
    else:
        model = TinyConvNet(n_way=n_way, side=side)
        batch = TaskBatch(
            torch.rand(tasks, n_way, 1, side, side, generator=generator),
            torch.arange(n_way).repeat(tasks, 1),
            torch.rand(tasks, n_way * query_per_class, 1, side, side, generator=generator),
            torch.randint(0, n_way, (tasks, n_way * query_per_class), generator=generator),
        )

    def array(t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy().astype(dtype) if t.is_floating_point() else t.numpy().astype(np.int64)

    return MetaInputs(
        arch,
        {k: array(p) for k, p in model.named_parameters()},
        array(batch.support_x),
        array(batch.support_y),
        array(batch.query_x),
        array(batch.query_y),
        inner_lr=(0.01 if arch == "sine" else 0.4) if inner_lr is None else inner_lr,
        steps=steps,
    )


def mamlbook_meta_gradient(inputs: MetaInputs) -> Result:
    """mamlbook's engine (`meta_gradient`, the loop strategy every other strategy is checked against)."""
    loss, grads = meta_gradient(
        torch_module(inputs),
        torch_weights(inputs),
        torch_batch(inputs),
        inputs.loss,
        inputs.steps,
        inputs.inner_lr,
        inputs.order,
        "loop",
    )
    return float(loss), numpy_grads(grads)


def peer_meta_gradient(name: str) -> Callable[[MetaInputs], Result]:
    """learn2learn, higher or TorchOpt (mamlbook.bench.peers), on a module holding the weights."""
    peer = PEER_GRADIENTS[name]

    def run(inputs: MetaInputs) -> Result:
        model = model_with(torch_module(inputs), torch_weights(inputs))
        loss, grads = peer(model, torch_batch(inputs), inputs.loss, inputs.steps, inputs.inner_lr, inputs.order)
        return float(loss), numpy_grads(grads)

    run.__name__ = f"{name}_meta_gradient"
    run.__doc__ = f"{name}'s MAML, as mamlbook.bench.peers runs it, on NumPy inputs."
    return run


# Name -> implementation. The reference is "mamlbook"; "form" suffixes pick a framework's execution
# mode (TensorFlow: `tf.function` graph or eager; JAX: `jit(vmap(...))` or an eager loop).
IMPLEMENTATIONS: dict[str, Callable[[MetaInputs], Result]] = {
    "mamlbook": mamlbook_meta_gradient,
    "torch-plain": torch_plain.torch_plain_meta_gradient,
    "tensorflow": tensorflow_maml.tensorflow_meta_gradient,
    "tensorflow:eager": lambda inputs: tensorflow_maml.tensorflow_meta_gradient(inputs, compiled=False),
    "jax": jax_maml.jax_meta_gradient,
    "jax:eager": lambda inputs: jax_maml.jax_meta_gradient(inputs, compiled=False),
    **{name: peer_meta_gradient(name) for name in PEER_GRADIENTS},
}

# What each implementation needs besides torch (its import name), for skipping the absent ones.
REQUIRES: dict[str, str | None] = {
    "mamlbook": None,
    "torch-plain": None,
    "tensorflow": "tensorflow",
    "tensorflow:eager": "tensorflow",
    "jax": "jax",
    "jax:eager": "jax",
    **{name: name for name in PEER_GRADIENTS},
}


def missing(impl: str) -> str | None:
    """The package `impl` needs that is not installed, or None."""
    package = REQUIRES[impl]
    return package if package is not None and importlib.util.find_spec(package) is None else None


def available(impls: Iterable[str] = IMPLEMENTATIONS) -> list[str]:
    """The implementations among `impls` whose framework is installed here."""
    return [impl for impl in impls if missing(impl) is None]


def relative_error(a: Arrays, b: Arrays) -> float:
    """||a - b|| / ||b|| over all arrays of two gradient dicts (b is the reference)."""
    num = sum(float(((np.asarray(a[k], np.float64) - b[k]) ** 2).sum()) for k in b)
    den = sum(float((np.asarray(b[k], np.float64) ** 2).sum()) for k in b)
    return (num / den) ** 0.5


def agreement(
    inputs: MetaInputs, impls: Iterable[str] = IMPLEMENTATIONS, reference: str = "mamlbook"
) -> list[dict[str, Any]]:
    """Each implementation's meta-loss and its gradient's relative error against `reference`.

    A row per implementation: `impl`, `loss`, `loss_error` (relative), `grad_error`, and `error`,
    the message of what went wrong (not installed, or the framework raised) with the numbers None.
    """
    ref_loss, ref_grads = IMPLEMENTATIONS[reference](inputs)
    rows = []
    for impl in impls:
        row: dict[str, Any] = {"impl": impl, "loss": None, "loss_error": None, "grad_error": None, "error": None}
        absent = missing(impl)
        if absent:
            row["error"] = f"{absent} is not installed"
        else:
            try:
                loss, grads = IMPLEMENTATIONS[impl](inputs)
            except Exception as exc:  # a framework that cannot do this case: report it, do not hide it
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            else:
                row.update(
                    loss=loss,
                    loss_error=abs(loss - ref_loss) / abs(ref_loss),
                    grad_error=relative_error(grads, ref_grads),
                )
        rows.append(row)
    return rows


# The bench (`mamlbook bench --impls tensorflow,jax,...`): one meta-step with Adam, in each
# framework's own idiom, on the sinusoid problem.
FRAMEWORK_IMPLS = ("torch-plain", "tensorflow", "tensorflow:eager", "jax", "jax:eager")
# The form a bare framework name runs in, for the bench's `strategy` column.
FRAMEWORK_FORMS = {"tensorflow": "function", "jax": "jit"}


def bench_step(
    impl: str, model: nn.Module, batch: TaskBatch, loss: str, inner_lr: float, steps: int, order: int
) -> Callable[[], None]:
    """A function that runs one meta-iteration (meta-gradient and one Adam step, lr 1e-3) of `impl`.

    The weights start as `model`'s and the tasks are `batch`, handed over as arrays. TensorFlow's and
    JAX's compiled forms trace and compile on their first call: the bench's warm-up excludes that.
    """
    if impl not in FRAMEWORK_IMPLS:
        raise ValueError(f"unknown framework impl {impl!r}; known: {', '.join(FRAMEWORK_IMPLS)}")
    if not isinstance(model, SineMLP) or loss != "mse":
        raise ValueError(f"{impl} is benchmarked on the sinusoid problem only (SineMLP, MSE)")
    cpu = batch.to("cpu")
    inputs = MetaInputs(
        "sine",
        {k: p.detach().cpu().numpy().copy() for k, p in model.named_parameters()},
        cpu.support_x.numpy(),
        cpu.support_y.numpy(),
        cpu.query_x.numpy(),
        cpu.query_y.numpy(),
        inner_lr=inner_lr,
        steps=steps,
        order=order,
    )
    framework, _, form = impl.partition(":")
    if framework == "torch-plain":
        return torch_plain.torch_plain_step(inputs)
    if framework == "tensorflow":
        return tensorflow_maml.tensorflow_step(inputs, compiled=form != "eager")
    return jax_maml.jax_step(inputs, compiled=form != "eager")
