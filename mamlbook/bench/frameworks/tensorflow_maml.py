"""MAML in TensorFlow 2: nested `tf.GradientTape`s over weights held as plain tensors.

The outer tape is open while the inner tape's gradient is taken, so it records the inner gradient's
computation and its gradient is the second-order meta-gradient (the documented way to get
higher-order gradients in TensorFlow). The weights are a dict of tensors passed to a function, not a
Keras model's variables: a Keras layer called as `model(x)` reads its own variables and ignores any
adapted weights (`keras_ignores_fast_weights` shows it).

Two pitfalls are kept here as functions, because the tests and the book run them:
`tensorflow_inner_tape_outside` takes the inner gradient before the outer tape opens, which makes it
a constant, so the result is first-order MAML; `tensorflow_nn_moments_meta_gradient` normalizes with
`tf.nn.moments`, whose variance stops the gradient at the mean, so the second-order meta-gradient
through batch norm is wrong while the loss is right (`batch_moments` here is the exact form).

TensorFlow is imported only when a function here runs (`pip install mamlbook[frameworks]`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .quiet import quiet_import

if TYPE_CHECKING:
    from .problem import MetaInputs, Result

BN_EPS = 1e-5  # PyTorch's BatchNorm2d default


def require_tensorflow():
    """`import tensorflow`, quiet, with a clear message when it is not installed."""
    # TensorFlow's C++ logging prints lines on import and later (CPU features, "Not handling type
    # DT_DOUBLE"); executed chapters would show them. The level filters those logged after the
    # import; the ones logged during it ignore it and are silenced by `quiet_import`. Only set when
    # the user has not chosen a level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and importlib.util.find_spec("triton") is not None:
        # TensorFlow's bundled LLVM clashes with triton's: loading triton (as torch.compile and
        # torch._dynamo do, e.g. when learn2learn is imported) after TensorFlow segfaults the
        # process. Loaded first, both work.
        try:
            import triton  # noqa: F401
        except Exception:  # a broken triton is torch's problem, not a reason to refuse TensorFlow
            pass
    try:
        tf = quiet_import("tensorflow")
    except ImportError as exc:
        raise ImportError(
            f"TensorFlow is not installed ({exc}); install the `frameworks` extra: "
            "pip install -c constraints/book.txt -e '.[frameworks]'"
        ) from None
    return tf


def sine_forward(w: dict[str, Any], x):
    """SineMLP with weights `w` (PyTorch's names and layouts: `weight` is `[out, in]`); x `[N, 1]`."""
    tf = require_tensorflow()
    h = tf.nn.relu(tf.matmul(x, w["net.0.weight"], transpose_b=True) + w["net.0.bias"])
    h = tf.nn.relu(tf.matmul(h, w["net.2.weight"], transpose_b=True) + w["net.2.bias"])
    return tf.matmul(h, w["net.4.weight"], transpose_b=True) + w["net.4.bias"]


def batch_moments(h, axes):
    """Mean and biased variance over `axes`, differentiable to any order.

    Not `tf.nn.moments`: it computes the variance around `tf.stop_gradient(mean)`, which leaves the
    first derivative exact (the variance's derivative in the mean is zero at the mean) but drops a
    term of the second: through batch norm, MAML's meta-gradient comes out wrong, with no error.
    """
    tf = require_tensorflow()
    mean = tf.reduce_mean(h, axes)
    return mean, tf.reduce_mean(tf.square(h - mean), axes)


def conv_forward(w: dict[str, Any], x, moments: Callable = batch_moments):
    """TinyConvNet with weights `w` in PyTorch's layouts; x `[N, C, H, W]`, run channels-last (NHWC).
    `moments=tf.nn.moments` is the pitfall of `batch_moments`."""
    tf = require_tensorflow()
    h = tf.transpose(x, [0, 2, 3, 1])  # TensorFlow's CPU convolutions want NHWC
    for block in ("body.0", "body.1"):
        kernel = tf.transpose(w[f"{block}.0.weight"], [2, 3, 1, 0])  # [out, in, kh, kw] -> [kh, kw, in, out]
        h = tf.nn.conv2d(h, kernel, strides=1, padding="SAME") + w[f"{block}.0.bias"]
        # Batch norm in training mode: the batch's own mean and (biased) variance, no running stats.
        mean, variance = moments(h, axes=[0, 1, 2])
        h = tf.nn.batch_normalization(h, mean, variance, w[f"{block}.1.bias"], w[f"{block}.1.weight"], BN_EPS)
        h = tf.nn.max_pool2d(tf.nn.relu(h), ksize=2, strides=2, padding="VALID")
    h = tf.reshape(tf.transpose(h, [0, 3, 1, 2]), [tf.shape(h)[0], -1])  # flatten in PyTorch's order
    return tf.matmul(h, w["head.weight"], transpose_b=True) + w["head.bias"]


def mse(prediction, target):
    tf = require_tensorflow()
    return tf.reduce_mean(tf.square(prediction - target))


def cross_entropy(logits, labels):
    tf = require_tensorflow()
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


MODELS: dict[str, tuple[Callable, Callable]] = {"sine": (sine_forward, mse), "conv": (conv_forward, cross_entropy)}


def task_query_loss(weights, support_x, support_y, query_x, query_y, forward, loss, steps, inner_lr, first_order=False):
    """One task's query loss after `steps` SGD steps on its support set, differentiable in `weights`."""
    tf = require_tensorflow()
    fast = dict(weights)
    for _ in range(steps):
        with tf.GradientTape() as inner:
            inner.watch(list(fast.values()))  # plain tensors are not watched by default
            support_loss = loss(forward(fast, support_x), support_y)
        grads = inner.gradient(support_loss, list(fast.values()))
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        fast = {name: w - inner_lr * g for (name, w), g in zip(fast.items(), grads, strict=True)}
    return loss(forward(fast, query_x), query_y)


def meta_loss_and_gradient(weights, batch, forward, loss, steps, inner_lr, first_order=False):
    """The MAML objective over `batch` (support_x, support_y, query_x, query_y, each `[B, ...]`) and its
    gradient, a list in the order of `weights`. Everything runs inside the outer tape."""
    tf = require_tensorflow()
    tasks = batch[0].shape[0]  # static: a tf.function unrolls the task loop when it traces
    with tf.GradientTape() as outer:
        outer.watch(list(weights.values()))
        losses = [
            task_query_loss(weights, *(a[i] for a in batch), forward, loss, steps, inner_lr, first_order)
            for i in range(tasks)
        ]
        meta_loss = tf.add_n(losses) / tasks
    return meta_loss, outer.gradient(meta_loss, list(weights.values()))


def _tensors(inputs: MetaInputs):
    tf = require_tensorflow()
    weights = {k: tf.constant(v) for k, v in inputs.weights.items()}
    batch = tuple(tf.constant(a) for a in (inputs.support_x, inputs.support_y, inputs.query_x, inputs.query_y))
    return weights, batch


def tensorflow_meta_gradient(inputs: MetaInputs, compiled: bool = True) -> Result:
    """`meta_loss_and_gradient` as a `tf.function` graph (`compiled`) or eagerly, on NumPy inputs."""
    tf = require_tensorflow()
    weights, batch = _tensors(inputs)
    forward, loss = MODELS[inputs.arch]

    def run(weights, batch):
        return meta_loss_and_gradient(weights, batch, forward, loss, inputs.steps, inputs.inner_lr, inputs.order == 1)

    meta_loss, grads = (tf.function(run, autograph=False) if compiled else run)(weights, batch)
    return float(meta_loss), {k: g.numpy() for k, g in zip(weights, grads, strict=True)}


def tensorflow_inner_tape_outside(inputs: MetaInputs) -> Result:
    """The pitfall: every inner gradient is taken before the outer tape opens.

    To the outer tape those gradients are constants, so what it returns is the first-order
    meta-gradient, with no error and no warning. (`tf.stop_gradient` on the inner gradients inside
    the tape gives the same numbers.)
    """
    tf = require_tensorflow()
    weights, batch = _tensors(inputs)
    forward, loss = MODELS[inputs.arch]
    tasks = inputs.tasks
    updates = []
    for i in range(tasks):
        support_x, support_y = batch[0][i], batch[1][i]
        fast, total = dict(weights), {k: tf.zeros_like(w) for k, w in weights.items()}
        for _ in range(inputs.steps):
            with tf.GradientTape() as inner:
                inner.watch(list(fast.values()))
                support_loss = loss(forward(fast, support_x), support_y)
            grads = dict(zip(fast, inner.gradient(support_loss, list(fast.values())), strict=True))
            fast = {k: w - inputs.inner_lr * grads[k] for k, w in fast.items()}
            total = {k: total[k] + grads[k] for k in total}
        updates.append(total)
    with tf.GradientTape() as outer:
        outer.watch(list(weights.values()))
        losses = []
        for i in range(tasks):
            fast = {k: w - inputs.inner_lr * updates[i][k] for k, w in weights.items()}
            losses.append(loss(forward(fast, batch[2][i]), batch[3][i]))
        meta_loss = tf.add_n(losses) / tasks
    grads = outer.gradient(meta_loss, list(weights.values()))
    return float(meta_loss), {k: g.numpy() for k, g in zip(weights, grads, strict=True)}


def keras_sine_model(inputs: MetaInputs):
    """SineMLP as a Keras model holding `inputs.weights` (Keras keeps Dense kernels as `[in, out]`)."""
    tf = require_tensorflow()
    dtype = inputs.dtype.name
    model = tf.keras.Sequential(
        [
            tf.keras.Input((1,), dtype=dtype),
            tf.keras.layers.Dense(40, activation="relu", dtype=dtype),
            tf.keras.layers.Dense(40, activation="relu", dtype=dtype),
            tf.keras.layers.Dense(1, dtype=dtype),
        ]
    )
    for layer, name in zip(model.layers, ("net.0", "net.2", "net.4"), strict=True):
        layer.set_weights([inputs.weights[f"{name}.weight"].T, inputs.weights[f"{name}.bias"]])
    return model


def keras_ignores_fast_weights(inputs: MetaInputs) -> Result:
    """The pitfall: nested tapes around a Keras model, adapted weights computed, then `model(x)`.

    The call reads the model's own variables, so the "adapted" query loss is the query loss at the
    initial weights and the result is the plain query-loss gradient: no adaptation, no MAML.
    """
    if inputs.arch != "sine":
        raise ValueError("this pitfall is shown on the sinusoid MLP")
    tf = require_tensorflow()
    model = keras_sine_model(inputs)
    variables = model.trainable_variables
    batch = _tensors(inputs)[1]
    losses = []
    with tf.GradientTape() as outer:
        for i in range(inputs.tasks):
            with tf.GradientTape() as inner:
                support_loss = mse(model(batch[0][i]), batch[1][i])
            grads = inner.gradient(support_loss, variables)
            # The bug: `fast` is computed, but `model(x)` below cannot be told to use it.
            fast = [w - inputs.inner_lr * g for w, g in zip(variables, grads, strict=True)]  # noqa: F841
            losses.append(mse(model(batch[2][i]), batch[3][i]))
        meta_loss = tf.add_n(losses) / inputs.tasks
    grads = outer.gradient(meta_loss, variables)
    names = [f"{layer}.{kind}" for layer in ("net.0", "net.2", "net.4") for kind in ("weight", "bias")]
    arrays = [g.numpy().T if g.shape.rank == 2 else g.numpy() for g in grads]  # Keras kernels are [in, out]
    return float(meta_loss), dict(zip(names, arrays, strict=True))


def tensorflow_nn_moments_meta_gradient(inputs: MetaInputs) -> Result:
    """The batch-norm pitfall: TinyConvNet with `tf.nn.moments` (as Keras's BatchNormalization uses on
    TensorFlow). The loss is right, the first-order meta-gradient too; the second-order one is not."""
    tf = require_tensorflow()
    if inputs.arch != "conv":
        raise ValueError("this pitfall needs batch norm: the conv net")
    weights, batch = _tensors(inputs)

    def forward(w, x):
        return conv_forward(w, x, moments=tf.nn.moments)

    meta_loss, grads = meta_loss_and_gradient(
        weights, batch, forward, cross_entropy, inputs.steps, inputs.inner_lr, inputs.order == 1
    )
    return float(meta_loss), {k: g.numpy() for k, g in zip(weights, grads, strict=True)}


def tensorflow_step(inputs: MetaInputs, compiled: bool = True) -> Callable[[], None]:
    """One meta-iteration in TensorFlow's idiom: weights in `tf.Variable`s, the meta-gradient, and
    `tf.keras.optimizers.Adam.apply_gradients`, as a `tf.function` (`compiled`) or eagerly.

    TensorFlow's intra-op threads are set to torch's, so both run on the same cores (only possible
    before TensorFlow's runtime starts; later calls keep the first setting).
    """
    tf = require_tensorflow()
    import torch

    try:
        tf.config.threading.set_intra_op_parallelism_threads(torch.get_num_threads())
    except RuntimeError:  # the runtime is already initialized in this process
        pass
    weights = {k: tf.Variable(v, name=k.replace(".", "_")) for k, v in inputs.weights.items()}
    batch = _tensors(inputs)[1]
    forward, loss = MODELS[inputs.arch]
    optimizer = tf.keras.optimizers.Adam(learning_rate=1e-3)
    optimizer.build(list(weights.values()))

    def step(batch):
        meta_loss, grads = meta_loss_and_gradient(
            weights, batch, forward, loss, inputs.steps, inputs.inner_lr, inputs.order == 1
        )
        optimizer.apply_gradients(zip(grads, weights.values(), strict=True))
        return meta_loss

    run = tf.function(step, autograph=False) if compiled else step

    def timed_step() -> None:
        np.asarray(run(batch))  # the value on the host: the step has finished

    return timed_step
