"""One MAML meta-gradient in PyTorch, TensorFlow, JAX, learn2learn, higher and TorchOpt, side by side.

`harness` hands every implementation the same weights and tasks as NumPy arrays (`MetaInputs`)
and compares the `(loss, grads)` each returns; `torch_plain`, `tensorflow_maml` and `jax_maml` hold
the framework-native code. TensorFlow and JAX are optional (`pip install mamlbook[frameworks]`)
and imported only when their code runs.
"""

from .harness import (
    FRAMEWORK_IMPLS,
    IMPLEMENTATIONS,
    MetaInputs,
    TinyConvNet,
    agreement,
    available,
    bench_step,
    make_inputs,
    missing,
    relative_error,
)

__all__ = [
    "FRAMEWORK_IMPLS",
    "IMPLEMENTATIONS",
    "MetaInputs",
    "TinyConvNet",
    "agreement",
    "available",
    "bench_step",
    "make_inputs",
    "missing",
    "relative_error",
]
