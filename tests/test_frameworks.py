"""One meta-gradient in PyTorch, TensorFlow, JAX and the peers: same arrays in, same numbers out.

float64 throughout, so agreement to 1e-8 means the same computation, not a lucky tolerance. The
JAX result is anchored to the truth by central finite differences; the pitfalls are run as tests
that would fail if the framework behaved as the naive code assumes. TensorFlow and JAX come from the
`frameworks` extra, the peers from `compare`; whatever is absent skips.
"""

import math

import numpy as np
import pytest
import torch

from mamlbook.bench.frameworks import IMPLEMENTATIONS, make_inputs, missing, relative_error
from mamlbook.bench.frameworks.harness import FRAMEWORK_IMPLS
from mamlbook.bench.runner import PROBLEMS, _impl_names, time_impl
from mamlbook.models import SineMLP

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

TF_JAX = ("tensorflow", "tensorflow:eager", "jax", "jax:eager")
PEERS = ("learn2learn", "higher", "torchopt")


def _param(impl: str):
    marks = [pytest.mark.frameworks] if impl in TF_JAX else [pytest.mark.peers] if impl in PEERS else []
    return pytest.param(impl, marks=marks, id=impl)


def _skip_if_missing(impl: str) -> None:
    absent = missing(impl)
    if absent:
        kind = "`frameworks`" if impl in TF_JAX else "`compare`"
        pytest.skip(f"{absent} is not installed (the {kind} extra)")


@pytest.fixture(scope="module")
def tf():
    # Not pytest.importorskip: TensorFlow must be imported through require_tensorflow, which loads
    # triton first (triton loaded after TensorFlow segfaults the process).
    _skip_if_missing("tensorflow")
    from mamlbook.bench.frameworks.tensorflow_maml import require_tensorflow

    return require_tensorflow()


@pytest.fixture(scope="module")
def results():
    """(arch, steps, impl) -> (loss, grads), computed once for the module (TensorFlow traces and
    XLA compiles are the slow part), on the same small float64 problems."""
    cache: dict = {}

    def get(arch: str, steps: int, impl: str, **changes):
        key = (arch, steps, impl, tuple(sorted(changes.items())))
        if key not in cache:
            inputs = make_inputs(arch, tasks=2, steps=steps).with_(**changes)
            cache[key] = IMPLEMENTATIONS[impl](inputs)
        return cache[key]

    return get


# Eager JAX compiles each operation on first use; on the conv net that alone takes tens of seconds,
# and the eager forms share every line but the loop with the compiled ones: sinusoid only.
CASES = [pytest.param(arch, steps, id=f"{arch}-{steps}step") for arch in ("sine", "conv") for steps in (1, 5)]


@pytest.mark.parametrize("impl", [_param(i) for i in IMPLEMENTATIONS if i != "mamlbook"])
@pytest.mark.parametrize(("arch", "steps"), CASES)
def test_every_implementation_gives_the_same_meta_gradient(results, arch, steps, impl):
    _skip_if_missing(impl)
    if impl == "jax:eager" and arch == "conv":
        pytest.skip("eager JAX on the conv net compiles op by op for tens of seconds; jax covers it")
    ref_loss, ref = results(arch, steps, "mamlbook")
    loss, grads = results(arch, steps, impl)
    assert set(grads) == set(ref)
    assert all(grads[k].shape == ref[k].shape for k in ref)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert relative_error(grads, ref) < 1e-8


@pytest.mark.frameworks
def test_jax_meta_gradient_matches_central_finite_differences():
    _skip_if_missing("jax")
    from mamlbook.bench.frameworks.jax_maml import jax_meta_gradient, jax_meta_loss

    inputs = make_inputs("sine", tasks=2, steps=1, inner_lr=0.05)
    _, grads = jax_meta_gradient(inputs, compiled=False)
    rng = np.random.default_rng(0)
    eps = 1e-5  # along a unit direction: small enough to cross no ReLU kink, large against rounding
    for _ in range(3):
        direction = {k: rng.standard_normal(v.shape) for k, v in inputs.weights.items()}
        norm = math.sqrt(sum(float((v**2).sum()) for v in direction.values()))
        direction = {k: v / norm for k, v in direction.items()}

        def loss_at(t: float, direction: dict = direction) -> float:
            return jax_meta_loss(inputs.with_(weights={k: v + t * direction[k] for k, v in inputs.weights.items()}))

        numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        analytic = sum(float((grads[k] * direction[k]).sum()) for k in grads)
        assert numeric == pytest.approx(analytic, rel=1e-6)


def test_second_order_differs_from_first_order(results):
    # Guards the comparisons above: if order were ignored, they would compare nothing.
    _, second = results("sine", 1, "mamlbook")
    _, first = results("sine", 1, "mamlbook", order=1)
    assert relative_error(first, second) > 1e-3


@pytest.mark.frameworks
def test_tensorflow_inner_tape_outside_the_outer_tape_is_first_order(tf, results):
    from mamlbook.bench.frameworks.tensorflow_maml import tensorflow_inner_tape_outside

    inputs = make_inputs("sine", tasks=2, steps=1)
    _, outside = tensorflow_inner_tape_outside(inputs)
    _, stopped = results("sine", 1, "tensorflow:eager", order=1)  # tf.stop_gradient on the inner gradients
    _, second = results("sine", 1, "tensorflow")
    assert relative_error(outside, stopped) < 1e-12
    assert relative_error(outside, second) > 1e-3


@pytest.mark.frameworks
def test_keras_model_called_on_x_ignores_the_fast_weights(tf, results):
    from mamlbook.bench.frameworks.tensorflow_maml import keras_ignores_fast_weights

    inputs = make_inputs("sine", tasks=2, steps=1)
    loss, grads = keras_ignores_fast_weights(inputs)
    # What it computed is the query loss at theta itself, as if there were no inner step.
    no_adaptation_loss, no_adaptation = results("sine", 0, "tensorflow:eager")
    maml_loss, maml = results("sine", 1, "tensorflow")
    assert loss == pytest.approx(no_adaptation_loss, rel=1e-12)
    assert relative_error(grads, no_adaptation) < 1e-10
    assert abs(loss - maml_loss) > 1e-4 * abs(maml_loss)
    assert relative_error(grads, maml) > 1e-3


@pytest.mark.frameworks
def test_tf_nn_moments_gets_the_second_order_batch_norm_gradient_wrong(tf, results):
    from mamlbook.bench.frameworks.tensorflow_maml import tensorflow_nn_moments_meta_gradient

    inputs = make_inputs("conv", tasks=2, steps=1)
    ref_loss, ref = results("conv", 1, "mamlbook")
    loss, grads = tensorflow_nn_moments_meta_gradient(inputs)
    assert loss == pytest.approx(ref_loss, rel=1e-12)  # the forward pass and inner step are right
    assert relative_error(grads, ref) > 1e-2  # the second-order term through the variance is not
    _, first = tensorflow_nn_moments_meta_gradient(inputs.with_(order=1))
    _, ref_first = results("conv", 1, "mamlbook", order=1)
    assert relative_error(first, ref_first) < 1e-10  # first order never differentiates the inner gradient


def test_missing_framework_is_named_with_its_extra(monkeypatch):
    import builtins

    from mamlbook.bench.frameworks import jax_maml

    real_import = builtins.__import__

    def no_jax(name, *args, **kwargs):
        if name == "jax" or name.startswith("jax."):
            raise ImportError("No module named 'jax'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    with pytest.raises(ImportError, match="frameworks"):
        jax_maml.require_jax()


# The eager forms run the same code without the compiler, and eager JAX compiles op by op on first use.
@pytest.mark.parametrize("impl", [_param(i) for i in FRAMEWORK_IMPLS if i != "jax:eager"])
def test_bench_step_runs_and_times(impl):
    _skip_if_missing(impl)
    row = time_impl(
        impl, PROBLEMS["sinusoid"], steps=1, order=2, device=torch.device("cpu"), repeat=2, warmup=1, meta_batch=2
    )
    assert math.isfinite(row["ms_median"]) and row["ms_median"] > 0
    assert row["impl"] == impl.partition(":")[0]


def test_bench_refuses_frameworks_beyond_the_sinusoid():
    with pytest.raises(ValueError, match="sinusoid"):
        _impl_names(["jax"], PROBLEMS["omniglot-5w1s"].make_model())
    assert _impl_names(["tensorflow:eager", "torch-plain"], SineMLP()) == ["tensorflow:eager", "torch-plain"]
