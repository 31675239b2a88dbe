"""The notebook's Keras model, built from the same Network and started from the same weights.

The notebook's Keras cell printed outputs unlike its scratch network's because the two were not the
same network:

1. **Biases.** ``Dense`` has ``use_bias=True`` by default; the scratch network had none.
2. **Initial weights.** Keras drew its own glorot_uniform weights; the scratch network drew U[0, 1).
3. **The loss.** ``mean_squared_error`` is (1/NK) Σ (a − y)², the scratch loss ½ Σ (a − y)². The
   gradients differ by the factor N·K/2, so with the same learning rate Keras took steps N·K/2 times
   smaller — half as large on the notebook's 4 samples with 1 output.
4. **The optimizer call.** ``optimizers.SGD(lr=1)`` was removed; Keras 3 rejects it with a
   ValueError and the argument is now ``learning_rate``.

Here the model is built from the Network — widths, activations, ``use_bias`` and dtype — its weights
are set from ``params``, the loss is the spec's, and training runs Keras's own compiled train step
with ``keras.optimizers.SGD``; what differences remain are rounding.

Two further details keep the comparison exact. Keras keeps a plain float learning rate as a
float32 variable, so 0.1 would become 0.100000001; a constant schedule in the net's dtype keeps it
exact. And Keras's cross-entropies compute from the logits only in graph mode, so gradients are
taken inside a ``tf.function``.

The layers people write by hand are Keras's own — BatchNormalization, LayerNormalization,
Embedding, Activation — but for Dropout, whose Keras layer draws its own masks: `GivenDropout`
applies gradcheck's. Keras's optimizers are handed dense gradients (`dense_gradients`).

TensorFlow is imported with its start-up logging off and oneDNN's reordered kernels disabled —
unless the user has set ``TF_CPP_MIN_LOG_LEVEL`` or ``TF_ENABLE_ONEDNN_OPTS`` — and Keras is asked
for its TensorFlow backend unless ``KERAS_BACKEND`` says otherwise. The standard wheel's lines
about a missing CUDA, which no setting reaches, are filtered from stderr while it loads
(`gradcheck.quiet`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from gradcheck import masks as dropout
from gradcheck import ops as registry
from gradcheck.backends import Trace, Trajectory
from gradcheck.layers import (
    LSTM,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Layer,
    LayerNorm,
    MaxPool2D,
    SimpleRNN,
)
from gradcheck.network import Network, Params
from gradcheck.ops import LOSSES, lookup
from gradcheck.optimizers import SGD, Adam, Batch, Optimizer, RMSprop, batch_schedule, padded
from gradcheck.quiet import filtered_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no start-up notices
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
with filtered_stderr():  # the standard wheel's "no CUDA here" lines, written as it loads
    import keras
    import tensorflow as tf
    from keras import ops

    tf.config.list_physical_devices()  # where TensorFlow looks for CUDA, and says so

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "the keras backend needs Keras's TensorFlow backend; Keras was loaded with "
        f"KERAS_BACKEND={keras.backend.backend()!r}"
    )

name = "keras"


def _gelu(x: Any, approximate: bool) -> Any:
    """GELU from its definition in Keras's ops, its constants in x's own dtype. Keras's own
    ``gelu`` (TensorFlow's ``tf.nn.gelu``) rounds √2 and 0.044715 to float32 before casting
    them to x's dtype: in float64 its exact form is 5e-9 off at z = −1.41 (4.5e-8 relative),
    its tanh form 9e-10 off, where these are within 4e-15."""
    if approximate:  # ½ z (1 + tanh(√(2/π)(z + 0.044715 z³)))
        return 0.5 * x * (1.0 + keras.ops.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + keras.ops.erf(x * 0.7071067811865476))  # ½ z (1 + erf(z/√2))


#: Each activation as Keras spells it in the registry, but GELU (`_gelu`), with the registry's
#: options.
ACTIVATIONS: dict[str, Any] = {
    name: functools.partial(_gelu, approximate=bool(dict(spec.options)["approximate"]))
    if spec.keras == "gelu"
    else spec.keras
    for name, spec in registry.ACTIVATIONS.items()
}


class GivenDropout(keras.layers.Layer):
    """Dropout with gradcheck's masks (`gradcheck.masks`). Keras's own Dropout draws its mask
    from its own generator and takes none, so this layer stands in for it: in training it keeps
    the units whose hash of (seed, step, layer, unit) clears the rate and scales them by
    1 / (1 − rate), Keras's inverted dropout; in predictions it is the identity (or, scaled at
    prediction, × (1 − rate)). It counts the steps itself, one per training call, from the
    seed and step `start` sets."""

    def __init__(self, layer: Dropout, position: int, dtype: str) -> None:
        super().__init__(dtype=dtype)
        self.rate, self.scale, self.position = layer.rate, layer.scale, position
        self.prediction_scale = layer.prediction_scale
        variable = functools.partial(
            self.add_variable, (), initializer="zeros", dtype="int64", trainable=False
        )
        self.seed, self.step = variable(name="seed"), variable(name="step")

    def start(self, seed: int) -> None:
        self.seed.assign(seed)
        self.step.assign(0)

    def call(self, x: Any, training: bool = False) -> Any:
        if not training and self.prediction_scale == 1:
            return x
        if not training:
            return x * tf.constant(self.prediction_scale, x.dtype)
        as_uint, xor = functools.partial(tf.cast, dtype=tf.uint32), tf.bitwise.bitwise_xor
        key = _mix(xor(_mix(xor(_mix(as_uint(self.seed)), as_uint(self.step))), self.position))
        index = tf.reshape(as_uint(tf.range(tf.size(x, out_type=tf.int64))), tf.shape(x))
        bits = _shifted(_mix(xor(key, index)), 32 - dropout.BITS)
        kept = tf.cast(bits, tf.float64) / 2**dropout.BITS >= self.rate
        self.step.assign_add(1)
        # a Python float made a tensor is float32 first: the scale is made in x's dtype
        return tf.where(kept, x * tf.constant(self.scale, x.dtype), tf.zeros_like(x))


def _shifted(x: Any, bits: int) -> Any:
    return tf.bitwise.right_shift(x, tf.constant(bits, tf.uint32))


def _mix(x: Any) -> Any:
    """lowbias32 on unsigned 32-bit integers, which wrap: `gradcheck.masks`' hash."""
    (m1, m2), (s1, s2, s3) = dropout.MULTIPLIERS, dropout.SHIFTS
    xor = tf.bitwise.bitwise_xor
    x = xor(x, _shifted(x, s1)) * tf.constant(m1, tf.uint32)
    x = xor(x, _shifted(x, s2)) * tf.constant(m2, tf.uint32)
    return xor(x, _shifted(x, s3))


def start_masks(model: keras.Sequential, seed: int) -> None:
    """Every GivenDropout at step 0 of a run drawn from ``seed``."""
    for layer in model.layers:
        if isinstance(layer, GivenDropout):
            layer.start(seed)


class HalfSSE(keras.losses.Loss):
    """½ Σ_n Σ_k (a − y)²: per-sample ½ Σ_k, summed over the samples."""

    def __init__(self, dtype: str | None = None) -> None:
        super().__init__(name="half_sse", reduction="sum", dtype=dtype)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return 0.5 * ops.sum(ops.square(y_pred - y_true), axis=-1)


#: The losses Keras has no class for (the registry's ``keras`` is empty).
CUSTOM_LOSSES = {"half_sse": HalfSSE}


def keras_loss(net: Network) -> keras.losses.Loss:
    """The spec's loss as a Keras loss, computed in the net's dtype.

    Keras's own ``mean_squared_error``, ``binary_crossentropy`` and ``categorical_crossentropy``
    with the default mean over the batch are exactly ``mse``, ``bce`` and ``softmax_ce``; the last
    two take the logits under a sigmoid or softmax output (in graph mode), as the spec's stable
    forms do. ``half_sse`` is `HalfSSE`.
    """
    keras_name = lookup(LOSSES, net.loss, "loss").keras
    if keras_name:
        return getattr(keras.losses, keras_name)(dtype=net.dtype)
    return lookup(CUSTOM_LOSSES, net.loss, "loss")(dtype=net.dtype)


def build_model(net: Network) -> keras.Sequential:
    """A Sequential of the network's layers — Dense, Conv2D, MaxPooling2D, AveragePooling2D,
    Flatten, Activation, BatchNormalization, LayerNormalization, channels-last — with its sizes,
    activations, biases, momentum, ε and dtype.

    Each layer computes and keeps its variables in the net's dtype through its own dtype policy,
    so Keras's global floatx is left as the user set it.
    """
    layers: list[Any] = [keras.Input(net.input_shape, dtype=_input_dtype(net))]
    layers += [_keras_layer(layer, k, net.dtype) for k, layer in enumerate(net.stack)]
    return keras.Sequential(layers)


def _input_dtype(net: Network) -> str:
    """int64 for the ids of an Embedding, else the net's dtype."""
    return "int64" if net.takes_ids else net.dtype


def _keras_layer(layer: Layer, position: int, dtype: str) -> keras.layers.Layer:
    """The Keras layer with the same arguments; a Dropout's is `GivenDropout`."""
    if isinstance(layer, Dense):
        activation = lookup(ACTIVATIONS, layer.activation, "activation")
        return keras.layers.Dense(
            layer.units, activation=activation, use_bias=layer.bias, dtype=dtype
        )
    if isinstance(layer, Conv2D):
        return keras.layers.Conv2D(
            layer.filters,
            layer.kernel,
            strides=layer.strides,
            padding=layer.padding,
            data_format="channels_last",
            activation=lookup(ACTIVATIONS, layer.activation, "activation"),
            use_bias=layer.bias,
            dtype=dtype,
        )
    if isinstance(layer, Flatten):
        return keras.layers.Flatten(data_format="channels_last", dtype=dtype)
    if isinstance(layer, Activation):
        return keras.layers.Activation(
            lookup(ACTIVATIONS, layer.activation, "activation"), dtype=dtype
        )
    if isinstance(layer, BatchNorm):
        if layer.unbiased:
            raise ValueError(
                "Keras's BatchNormalization moves its variance toward the biased one; got "
                f"{layer!r}"
            )
        return keras.layers.BatchNormalization(
            momentum=layer.momentum, epsilon=layer.epsilon, dtype=dtype
        )
    if isinstance(layer, LayerNorm):
        return keras.layers.LayerNormalization(epsilon=layer.epsilon, dtype=dtype)
    if isinstance(layer, Dropout):
        return GivenDropout(layer, position, dtype)
    if isinstance(layer, Embedding):
        return keras.layers.Embedding(layer.input_dim, layer.output_dim, dtype=dtype)
    if isinstance(layer, SimpleRNN):
        activation = lookup(ACTIVATIONS, layer.activation, "activation")
        return keras.layers.SimpleRNN(
            layer.units, activation, return_sequences=layer.return_sequences, dtype=dtype
        )
    if isinstance(layer, LSTM):  # tanh and a sigmoid recurrent activation, Keras's defaults
        return keras.layers.LSTM(layer.units, return_sequences=layer.return_sequences, dtype=dtype)
    if isinstance(layer, MaxPool2D | AvgPool2D):
        pooling = (
            keras.layers.MaxPooling2D
            if isinstance(layer, MaxPool2D)
            else keras.layers.AveragePooling2D
        )
        return pooling(layer.pool_size, layer.stride, data_format="channels_last", dtype=dtype)
    raise TypeError(f"the Keras backend has no layer for {layer!r}")


def _parametric(model: keras.Sequential) -> list[Any]:
    """The model's Dense, Conv2D, normalisation, Embedding and recurrent layers, one per entry
    of params."""
    return [
        layer
        for layer in model.layers
        if any(hasattr(layer, name) for name in ("kernel", "gamma", "embeddings", "cell"))
    ]


def _named(layer: Any) -> dict[str, Any]:
    """A layer's variables by gradcheck's names: a Dense or Conv2D kernel is (fan_in, fan_out)
    or (kh, kw, C, O), like ``W``; a BatchNormalization's ``moving_variance`` is
    ``moving_var``; a recurrent layer's cell holds its ``kernel`` W, ``recurrent_kernel`` U and
    ``bias`` b, each in the layout of gradcheck's (an LSTM's blocks i, f, c, o)."""
    if hasattr(layer, "cell"):
        cell = layer.cell
        return {"W": cell.kernel, "U": cell.recurrent_kernel, "b": cell.bias}
    if hasattr(layer, "kernel"):
        return {"W": layer.kernel, "b": layer.bias} if layer.use_bias else {"W": layer.kernel}
    if hasattr(layer, "embeddings"):
        return {"E": layer.embeddings}
    named = {"gamma": layer.gamma, "beta": layer.beta}
    if hasattr(layer, "moving_mean"):
        named |= {"moving_mean": layer.moving_mean, "moving_var": layer.moving_variance}
    return named


def set_params(model: keras.Sequential, params: Params) -> None:
    """Copy params, moving statistics included, into the model's variables."""
    for layer, values in zip(_parametric(model), params, strict=True):
        for key, variable in _named(layer).items():
            variable.assign(values[key])


def _variables(model: keras.Sequential) -> list[dict[str, Any]]:
    """The trainable variables, structured like a gradient."""
    return [
        {key: v for key, v in _named(layer).items() if v.trainable} for layer in _parametric(model)
    ]


def _to_numpy(values: list[dict[str, Any]]) -> Params:
    """Variables or tensors as NumPy copies; ``.numpy()`` copies without NumPy's deprecated
    ``__array__`` path."""
    return [{key: value.numpy() for key, value in layer.items()} for layer in values]


class _Evaluator:
    """A model for one network with its prediction and gradient compiled as tf.functions."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.model = build_model(net)
        self.loss = keras_loss(net)
        self.predict = tf.function(lambda x: self.model(x, training=False))
        self.loss_and_grads = tf.function(self._loss_and_grads)
        self.trace = tf.function(self._trace)

    def _loss_and_grads(self, x: Any, y: Any) -> tuple[Any, Any]:
        variables = _variables(self.model)
        with tf.GradientTape() as tape:
            loss = self.loss(y, self.model(x, training=True))
        return loss, _dense(tape.gradient(loss, variables))

    def _trace(self, x: Any, y: Any) -> tuple[Any, ...]:
        """Each weight layer's two steps taken apart — z = a W + b (or the kernel's
        convolution plus b), then its activation — so the tape also gives δ = ∂C/∂z."""
        variables = _variables(self.model)
        zs, activations, a = [], [], x
        with tf.GradientTape() as tape:
            for layer in self.model.layers:
                if not hasattr(layer, "kernel"):
                    a = layer(a, training=True)
                    continue
                if isinstance(layer, keras.layers.Dense):
                    z = ops.matmul(a, layer.kernel)
                else:
                    z = layer.convolution_op(a, layer.kernel)
                z = z + layer.bias if layer.use_bias else z
                a = layer.activation(z)
                zs.append(z)
                activations.append(a)
            loss = self.loss(y, a)
        grads, deltas = tape.gradient(loss, (variables, zs))
        grads = _dense(grads)
        return loss, zs, activations, deltas, grads


def _dense(grads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gradients as dense tensors: an Embedding's comes as IndexedSlices, one row per lookup,
    which this adds up by id."""
    return [{key: tf.convert_to_tensor(g) for key, g in layer.items()} for layer in grads]


class ConstantLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate held in a variable of the net's dtype, so it is exact and can change
    without recompiling."""

    def __init__(self, dtype: str) -> None:
        self.rate = keras.Variable(0.0, dtype=dtype, trainable=False, name="learning_rate")

    def __call__(self, step: Any) -> Any:
        return self.rate.value

    def get_config(self) -> dict[str, Any]:
        return {"dtype": self.rate.dtype}


class LossHistory(keras.metrics.Metric):
    """Records the loss of every training step, in order.

    Keras computes a train step's metrics from the predictions made before that step's update, so
    entry t is the loss before step t — what ``Trajectory.losses`` holds.
    """

    def __init__(self, loss: keras.losses.Loss, steps: int, dtype: str) -> None:
        super().__init__(name="loss_history", dtype=dtype)
        self.loss = loss
        self.history = self.add_variable(
            shape=(steps,), initializer="zeros", dtype=dtype, name="history"
        )
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        value = ops.cast(self.loss(y_true, y_pred), self.dtype)
        index = ops.reshape(self.count, (1, 1))
        self.history.assign(ops.scatter_update(self.history, index, ops.reshape(value, (1,))))
        self.count.assign_add(1)

    def result(self) -> Any:
        return self.history[ops.maximum(self.count - 1, 0)]

    def reset_state(self) -> None:
        self.history.assign(ops.zeros_like(self.history))
        self.count.assign(0)


class AdamPaper(keras.optimizers.Adam):
    """Adam as Algorithm 1 of Kingma and Ba writes it, and optax computes it: ε added to √v̂,
    θ ← θ − η m̂ / (√v̂ + ε), and AMSGrad's running maximum taken of v̂.

    Keras's Adam folds the bias corrections into the step size first and adds ε to √v, which is
    the paper's update with ε scaled by √(1 − β₂ᵗ) — a constant ε cannot express it.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        m_hat = ops.divide(m, 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = ops.divide(v, 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        if self.amsgrad:
            v_max = self._velocity_hats[index]
            self.assign(v_max, ops.maximum(v_max, v_hat))
            v_hat = v_max
        step_size = ops.divide(ops.multiply(lr, m_hat), ops.add(ops.sqrt(v_hat), self.epsilon))
        self.assign_sub(variable, step_size)


class RMSpropOutside(keras.optimizers.RMSprop):
    """RMSprop with ε outside the square root, Δ = η g / (√v̄ + ε), as optax and PyTorch write
    it; Keras's RMSprop adds ε to v̄ under the root."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        rho, v = self.rho, self._velocities[index]
        self.assign(v, ops.add(ops.multiply(rho, v), ops.multiply(1 - rho, ops.square(gradient))))
        v_bar = v
        if self.centered:
            a = self._average_gradients[index]
            self.assign(a, ops.add(ops.multiply(rho, a), ops.multiply(1 - rho, gradient)))
            v_bar = ops.subtract(v, ops.square(a))
        increment = ops.divide(ops.multiply(lr, gradient), ops.add(ops.sqrt(v_bar), self.epsilon))
        if self.momentum > 0:
            b = self._momentums[index]
            self.assign(b, ops.add(ops.multiply(self.momentum, b), increment))
            increment = b
        self.assign_sub(variable, increment)


def _sgd(opt: SGD) -> tuple[type, dict[str, Any]]:
    return keras.optimizers.SGD, {"momentum": opt.momentum, "nesterov": opt.nesterov}


def _rmsprop(opt: RMSprop) -> tuple[type, dict[str, Any]]:
    placement = {"inside": keras.optimizers.RMSprop, "outside": RMSpropOutside}
    return lookup(placement, opt.epsilon_placement, "epsilon_placement"), {
        "rho": opt.rho, "epsilon": opt.epsilon, "momentum": opt.momentum,
        "centered": opt.centered,
    }  # fmt: skip


def _adam(opt: Adam) -> tuple[type, dict[str, Any]]:
    placement = {"keras": keras.optimizers.Adam, "paper": AdamPaper}
    return lookup(placement, opt.epsilon_placement, "epsilon_placement"), {
        "beta_1": opt.beta_1, "beta_2": opt.beta_2, "epsilon": opt.epsilon,
        "amsgrad": opt.amsgrad,
    }  # fmt: skip


#: Each optimizer family's Keras class and its arguments.
_KERAS_OPTIMIZER: dict[str, Callable[[Any], tuple[type, dict[str, Any]]]] = {
    "sgd": _sgd,
    "rmsprop": _rmsprop,
    "adam": _adam,
}


def keras_optimizer(
    optimizer: Optimizer, learning_rate: ConstantLearningRate
) -> keras.optimizers.Optimizer:
    """``optimizer`` as the ``keras.optimizers`` class that computes it.

    Every float hyper-parameter is handed over as ``np.float64``: Keras casts a Python float
    through float32 (``ops.cast(0.9, "float64")`` is 0.8999999761581421), which would round
    Adam's β's, SGD's momentum, ε and the weight decay of a float64 run. A float32 run rounds
    them to float32, as it rounds everything.

    The optimizer is given dense gradients (`dense_gradients`).
    """
    cls, arguments = lookup(_KERAS_OPTIMIZER, optimizer.family, "optimizer")(optimizer)
    arguments["weight_decay"] = optimizer.weight_decay or None
    exact = {k: np.float64(v) if isinstance(v, float) else v for k, v in arguments.items()}
    return dense_gradients(cls)(learning_rate=learning_rate, **exact)


@functools.cache
def dense_gradients(cls: type) -> type:
    """``cls`` taking its gradients dense. TensorFlow hands an Embedding's gradient to the
    optimizer as IndexedSlices, one row per lookup, and Keras's optimizers then update a row's
    moments once per lookup: an id met k times in a batch has Adam's m and v decayed k times,
    so Adam, RMSprop and momentum no longer compute their equations (plain SGD, which adds the
    rows' steps, still does). The rows are added up by id first, as the equations take them."""

    class Dense(cls):
        __doc__ = cls.__doc__

        def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
            dense = [
                tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
            ]
            return super().apply(dense, trainable_variables)

    Dense.__name__ = Dense.__qualname__ = cls.__name__
    return Dense


class _Trainer:
    """A compiled model whose ``train_step`` runs a whole schedule of steps inside TensorFlow
    graphs.

    ``fit`` pays Python overhead per epoch and per execution; calling the model's own compiled
    train step from a ``tf.range`` loop keeps Keras's loss, optimizer and metrics while a run of
    full-batch steps is one call. Mini-batches are gathered inside the loop from index rows, one
    call per run of equal-sized batches, all through one traced graph.

    The graphs are not compiled by XLA (``jit_compile``): XLA's compile took 0.4–1.2 s per
    network and about 2 s for each batch size, more than it saved on any catalogue run but the
    notebook's 2000 steps of a 3-4-1 network (docs/benchmarks.md).
    """

    def __init__(self, net: Network, steps: int, optimizer: Optimizer) -> None:
        self.net = net
        self.model = build_model(net)
        self.learning_rate = ConstantLearningRate(net.dtype)
        self.history = LossHistory(keras_loss(net), steps, net.dtype)
        self.model.compile(
            optimizer=keras_optimizer(optimizer, self.learning_rate),
            loss=keras_loss(net),
            metrics=[self.history],
        )
        self.model.make_train_function()
        self.model.optimizer.build(self.model.trainable_variables)
        self.steps = steps
        self.run = tf.function(self._run)
        # One trace for every batch size.
        signature = [
            tf.TensorSpec((None, *net.input_shape), _input_dtype(net)),
            tf.TensorSpec((None, *net.output_shape), net.dtype),
            tf.TensorSpec((None, None), tf.int64),
        ]
        self.run_batches = tf.function(self._run_batches, input_signature=signature)

    def _run(self, x: Any, y: Any) -> None:
        for _ in tf.range(self.steps):
            self.model.train_step((x, y))

    def _run_batches(self, x: Any, y: Any, batches: Any) -> None:
        for step in tf.range(tf.shape(batches)[0]):
            rows = batches[step]
            self.model.train_step((tf.gather(x, rows), tf.gather(y, rows)))

    def train(self, params: Params, X: np.ndarray, y: np.ndarray, lr: float,
              schedule: list[Batch], seed: int) -> Trajectory:  # fmt: skip
        set_params(self.model, params)
        start_masks(self.model, seed)
        self.learning_rate.rate.assign(lr)
        for variable in self.model.optimizer.variables:  # the step count and every moment
            variable.assign(ops.zeros_like(variable))
        self.history.reset_state()
        x, y = tf.constant(X), tf.constant(y)
        if all(isinstance(batch, slice) for batch in schedule):
            self.run(x, y)
        else:
            indices, sizes = padded(schedule, len(X))
            for start, stop in _runs(sizes):
                self.run_batches(x, y, tf.constant(indices[start:stop, : sizes[start]]))
        params = _to_numpy([_named(layer) for layer in _parametric(self.model)])
        return Trajectory(params, self.history.history.numpy())


def _runs(sizes: np.ndarray) -> list[tuple[int, int]]:
    """The (start, stop) of each run of consecutive steps with equal batch sizes."""
    edges = [0, *np.flatnonzero(np.diff(sizes)) + 1, len(sizes)]
    return list(pairwise(edges))


@lru_cache(maxsize=16)
def _evaluator(net: Network) -> _Evaluator:
    return _Evaluator(net)


@lru_cache(maxsize=64)
def _trainer(net: Network, steps: int, optimizer: Optimizer) -> _Trainer:
    """One compiled trainer per optimizer configuration; the learning rate is a variable, so a
    new one needs no new trainer."""
    return _Trainer(net, steps, optimizer)


def release() -> None:
    """Forget every cached model and training loop (`gradcheck.backends.release_compiled`)."""
    _evaluator.cache_clear()
    _trainer.cache_clear()


def predict(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    evaluator = _evaluator(net)
    set_params(evaluator.model, params)
    return evaluator.predict(tf.constant(X)).numpy()


def loss_and_grads(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    evaluator = _evaluator(net)
    set_params(evaluator.model, params)
    start_masks(evaluator.model, 0)  # the first step's of seed 0
    loss, grads = evaluator.loss_and_grads(tf.constant(X), tf.constant(y))
    return float(loss), _to_numpy(grads)


def trace(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Trace:
    evaluator = _evaluator(net)
    set_params(evaluator.model, params)
    start_masks(evaluator.model, 0)
    loss, zs, activations, deltas, grads = evaluator.trace(tf.constant(X), tf.constant(y))
    arrays = [[tensor.numpy() for tensor in tensors] for tensors in (zs, activations, deltas)]
    return Trace(arrays[0], arrays[1], float(loss), arrays[2], _to_numpy(grads))


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> Trajectory:
    """``steps`` steps of Keras's SGD through the model's compiled train step."""
    return train_with(net, params, X, y, SGD(lr), batch_schedule(len(X), None, steps, 0))


def train_with(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    optimizer: Optimizer,
    schedule: list[Batch],
    seed: int = 0,
) -> Trajectory:
    """One step of ``optimizer`` per batch of ``schedule`` through the model's compiled train
    step; ``losses[t]`` is the loss of step t's batch before its update."""
    if not schedule:
        return Trajectory(
            [{k: v.copy() for k, v in layer.items()} for layer in params], np.empty(0, net.dtype)
        )
    trainer = _trainer(net, len(schedule), replace(optimizer, lr=1.0))
    return trainer.train(params, X, y, optimizer.lr, schedule, seed)
