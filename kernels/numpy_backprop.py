"""Hand-written backpropagation in NumPy: the derivation, one small function per equation.

For weight layer l = 1..L and a batch of N samples (rows), with a_0 = X:

    z_l = a_{l-1} W_l + b_l                  (N, n_l)        pre_activation
    a_l = f_l(z_l)                           (N, n_l)        activate, ACTIVATIONS
    C                                        scalar          loss, LOSSES
    δ_L = ∂C/∂z_L                            (N, n_L)        output_delta, LOSSES
    ∂C/∂W_l = a_{l-1}ᵀ δ_l                   (n_{l-1}, n_l)  layer_grads
    ∂C/∂b_l = Σ_samples δ_l                  (n_l,)          layer_grads
    δ_{l-1} = (δ_l W_lᵀ) ⊙ f′_{l-1}(z_{l-1}) (N, n_{l-1})    hidden_delta

A network given as a list of layers walks the same steps layer by layer, with the convolution
and pooling equations of `numpy_conv` (`conv_pre_activation`, `conv_grads`,
`conv_input_grad`, `unweighted_forward`, `unweighted_grad`) and the normalisations of
`numpy_norm` (`norm_forward`, `norm_backward`): below a Conv2D layer, or a Dense layer fed by
another kind of layer, the gradient travels as ∂C/∂a until the next weight layer's f′ turns it
into that layer's δ. An Activation layer applies its f′ on the way, and a Dropout layer its mask
m (gradcheck's, `gradcheck.masks`), in training:

    y = x ⊙ m / (1 − rate),   ∂C/∂x = ∂C/∂y ⊙ m / (1 − rate)   (x's shape)   dropout
    y = x in predictions                                                  dropout_inference
    (scaled at prediction: y = x ⊙ m in training, x (1 − rate) in predictions)

An Embedding, always the first layer, looks each integer id up in E (V, D), and its gradient
adds each position's gradient into its id's row, so an id met twice gets both:

    y[n,t] = E[ids[n,t]]                               (N, T, D)          embed
    ∂C/∂E[v] = Σ_{n,t: ids[n,t] = v} ∂C/∂y[n,t]        (V, D)             embedding_grad

A SimpleRNN or LSTM runs through time and back as `numpy_recurrent` derives it
(`recurrent_forward`, `recurrent_backward`: BPTT, W, U and b shared by every step), and a
Dense layer on a sequence acts at every step, its gradients summed over samples and steps.

Every f′ is written as the registry declares it (``gradcheck.ops``), from the pre-activation z,
the activation a = f(z) or both, and `forward` keeps both. Inputs
arrive validated and cast to the net's dtype (see ``gradcheck.backends``); every array computed
here stays in that dtype. Each activation's f and f′, and each loss's C and ∂C/∂a (or δ_L), sit
side by side; the tables `ACTIVATIONS` and `LOSSES` map the registry's names
(``gradcheck.ops``) to them, and a name missing from a table raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from gradcheck.backends import TimeSteps, Trace, Trajectory
from gradcheck.kernels import numpy_conv as nc
from gradcheck.kernels import numpy_norm as nn
from gradcheck.kernels import numpy_recurrent as nr
from gradcheck.layers import (
    LSTM,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    MaxPool2D,
    Norm,
    Pooling,
    Recurrent,
    Weighted,
)
from gradcheck.layers import (
    Activation as ActivationLayer,
)
from gradcheck.masks import dropout_masks
from gradcheck.network import Network, Params
from gradcheck.ops import lookup, rows
from gradcheck.optimizers import SGD, Adam, Batch, Optimizer, RMSprop, batch_schedule

name = "numpy"


# --- activations: f(z) beside its derivative f′(z, a), from z, a = f(z) or both --------------


class Activation(NamedTuple):
    """a = f(z) without overflow for any finite z, and f′ from (z, a), reading what the
    registry says it needs; ``prime`` is None for the softmax, whose Jacobian
    `activation_backward` applies whole."""

    f: Callable[[np.ndarray], np.ndarray]
    prime: Callable[[np.ndarray, np.ndarray], np.ndarray] | None


def sigmoid(z: np.ndarray) -> np.ndarray:
    # e^{-|z|} ∈ (0, 1] never overflows; both branches are the same function rearranged.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return a * (1 - a)  # σ′(z) = σ(z)(1 − σ(z))


def tanh_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return 1 - a * a  # tanh′(z) = 1 − tanh²(z)


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0)


def relu_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return (a > 0).astype(a.dtype)  # a > 0 exactly when z > 0, so relu′(0) = 0


def identity(z: np.ndarray) -> np.ndarray:
    return z


def identity_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.ones_like(a)


def softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))  # log(1 + e^z) without overflow


def softplus_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return -np.expm1(-a)  # softplus′(z) = σ(z) = 1 − e^{−a}, with no cancellation for small a


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # shift so the largest exponent is 0
    return e / e.sum(axis=-1, keepdims=True)


def silu(z: np.ndarray) -> np.ndarray:
    return z * sigmoid(z)  # z σ(z)


def silu_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    return sigmoid(z) * (1 + z * sigmoid(-z))  # σ(z)(1 + z(1 − σ(z))), 1 − σ(z) = σ(−z)


def normal_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import erfc

    return 0.5 * erfc(-z * math.sqrt(0.5))  # Φ(z) = ½ erfc(−z/√2): no 1 + erf to cancel below 0


def gelu(z: np.ndarray) -> np.ndarray:
    return z * normal_cdf(z)  # z Φ(z)


def gelu_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    zc = np.clip(z, -40.0, 40.0)  # φ is 0 beyond, and zc² cannot overflow
    phi = np.exp(-0.5 * zc * zc) * (1 / math.sqrt(2 * math.pi))  # φ(z) = e^{−z²/2} / √(2π)
    return normal_cdf(z) + z * phi  # Φ(z) + z φ(z)


GELU_TANH_SCALE, GELU_TANH_CUBIC = math.sqrt(2 / math.pi), 0.044715


def gelu_tanh_u(z: np.ndarray) -> np.ndarray:
    zc = np.clip(z, -1e4, 1e4)  # σ(2u) is 0 or 1 beyond, and zc³ cannot overflow
    return GELU_TANH_SCALE * (zc + GELU_TANH_CUBIC * zc**3)  # u = √(2/π)(z + 0.044715 z³)


def gelu_tanh(z: np.ndarray) -> np.ndarray:
    return z * sigmoid(2 * gelu_tanh_u(z))  # ½ z (1 + tanh u) = z σ(2u)


def gelu_tanh_prime(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    u, zc = gelu_tanh_u(z), np.clip(z, -1e4, 1e4)
    du = GELU_TANH_SCALE * (1 + 3 * GELU_TANH_CUBIC * zc * zc)  # u′
    return sigmoid(2 * u) + zc * (2 * sigmoid(2 * u) * sigmoid(-2 * u)) * du  # σ(2u) + z σ′(2u)·2u′


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(sigmoid, sigmoid_prime),
    "tanh": Activation(np.tanh, tanh_prime),
    "relu": Activation(relu, relu_prime),
    "identity": Activation(identity, identity_prime),
    "softplus": Activation(softplus, softplus_prime),
    "silu": Activation(silu, silu_prime),
    "gelu": Activation(gelu, gelu_prime),
    "gelu_tanh": Activation(gelu_tanh, gelu_tanh_prime),
    "softmax": Activation(softmax, None),
}


def activate(activation: str, z: np.ndarray) -> np.ndarray:
    """a = f(z), both ``(N, n)``."""
    return lookup(ACTIVATIONS, activation, "activation").f(z)


def activation_backward(
    activation: str, z: np.ndarray, a: np.ndarray, grad_a: np.ndarray
) -> np.ndarray:
    """∂C/∂z from ∂C/∂a for a = f(z); all ``(N, n)``."""
    prime = lookup(ACTIVATIONS, activation, "activation").prime
    if prime is None:  # the softmax
        # Its Jacobian is diag(a) − a aᵀ per sample, so ∂C/∂z = a ⊙ (∂C/∂a − ⟨∂C/∂a, a⟩).
        return a * (grad_a - np.sum(grad_a * a, axis=-1, keepdims=True))
    return grad_a * prime(z, a)


# --- forward ---------------------------------------------------------------------------------


class Cache(NamedTuple):
    """What backward needs: ``activations``, X and every layer's output (``activations[k]`` is
    layer k's input; for widths ``[a_0 = X, a_1, …, a_L]``), the logits ``z_L``, every
    weight layer's pre-activation ``[z_1, …, z_L]``, which f′ reads where it needs z, each
    normalisation's x̂ and statistics, each Dropout's mask and each recurrent layer's pass
    through time, by position in the stack."""

    activations: list[np.ndarray]
    logits: np.ndarray
    zs: tuple[np.ndarray, ...]
    norms: Mapping[int, nn.Normalised] = MappingProxyType({})
    masks: Mapping[int, np.ndarray] = MappingProxyType({})
    sequences: Mapping[int, nr.Sequence | nr.CellSequence] = MappingProxyType({})


def pre_activation(a_prev: np.ndarray, layer: dict[str, np.ndarray]) -> np.ndarray:
    z = a_prev @ layer["W"]  # (N, n_{l-1}) @ (n_{l-1}, n_l) -> (N, n_l)
    if "b" in layer:
        z = z + layer["b"]  # (n_l,) broadcast over the N rows
    return z


def conv_pre_activation(
    a_prev: np.ndarray, conv: Conv2D, layer: dict[str, np.ndarray]
) -> np.ndarray:
    """z = the kernel correlated with the padded input, plus b: (N, H, W, C) -> (N, Ho, Wo, O),
    as one product of the input's windows unrolled into rows (im2col) with the kernel."""
    pads = nc.padding(a_prev.shape, conv.kernel, conv.strides, conv.padding)
    return nc.conv2d_im2col(nc.pad(a_prev, pads), layer["W"], layer.get("b"), conv.strides)


def unweighted_forward(layer: Pooling | Flatten, a_prev: np.ndarray) -> np.ndarray:
    if isinstance(layer, MaxPool2D):
        return nc.max_pool(a_prev, layer.pool_size, layer.stride)
    if isinstance(layer, AvgPool2D):
        return nc.avg_pool(a_prev, layer.pool_size, layer.stride)
    return nc.flatten(a_prev)


def norm_forward(
    layer: Norm, x: np.ndarray, values: dict[str, np.ndarray], training: bool
) -> tuple[np.ndarray, nn.Normalised | None]:
    """A normalisation's output, and what its backward needs (None in predictions): a
    BatchNorm's statistics over every axis but the last, or in predictions its moving ones;
    a LayerNorm's over the last axis."""
    gamma, beta = values["gamma"], values["beta"]
    if isinstance(layer, BatchNorm) and not training:
        mean, var = values["moving_mean"], values["moving_var"]
        return nn.inference(x, gamma, beta, mean, var, layer.epsilon), None
    axes = nn.batch_axes(x) if isinstance(layer, BatchNorm) else (x.ndim - 1,)
    norm = nn.normalisation(x, axes, layer.epsilon)
    return nn.scale_shift(norm.x_hat, gamma, beta), norm


def recurrent_forward(
    layer: Recurrent, x: np.ndarray, values: dict[str, np.ndarray]
) -> nr.Sequence | nr.CellSequence:
    """A SimpleRNN's or LSTM's every state over x (N, T, D)."""
    W, U, b = values["W"], values["U"], values["b"]
    if isinstance(layer, LSTM):
        return nr.lstm_forward(x, W, U, b, sigmoid)
    return nr.rnn_forward(x, W, U, b, lookup(ACTIVATIONS, layer.activation, "activation").f)


def embed(ids: np.ndarray, E: np.ndarray) -> np.ndarray:
    return E[ids]  # (N, T) ids -> (N, T, D), each id's row


def dropout(x: np.ndarray, mask: np.ndarray, layer: Dropout) -> np.ndarray:
    """The kept units scaled by 1 / (1 − rate) (1 when scaled at prediction), the dropped ones
    0: the forward pass, and the backward's ∂C/∂x from ∂C/∂y, through the same factor."""
    return x * mask * x.dtype.type(layer.scale)


def dropout_inference(x: np.ndarray, layer: Dropout) -> np.ndarray:
    """Predictions: the identity, the scaling done in training; or × (1 − rate)."""
    return x if layer.prediction_scale == 1 else x * x.dtype.type(layer.prediction_scale)


def forward(
    net: Network,
    params: Params,
    X: np.ndarray,
    training: bool = True,
    masks: list[np.ndarray] | None = None,
) -> Cache:
    """Every layer's output. ``training`` False for predictions: a BatchNorm's moving
    statistics, no dropout. In training the Dropout layers apply ``masks``, by default
    `dropout_masks`' for seed 0 and step 0 (``loss_and_grads``'s)."""
    activations, zs, norms, kept, sequences = [X], [], {}, {}, {}
    weights = iter(params)
    if training and masks is None and any(isinstance(layer, Dropout) for layer in net.stack):
        masks = dropout_masks(net, len(X))
    drawn = iter(masks or ())
    for k, layer in enumerate(net.stack):
        if isinstance(layer, Dense):
            zs.append(pre_activation(activations[-1], next(weights)))
        elif isinstance(layer, Conv2D):
            zs.append(conv_pre_activation(activations[-1], layer, next(weights)))
        elif isinstance(layer, Norm):
            a, norms[k] = norm_forward(layer, activations[-1], next(weights), training)
            activations.append(a)
            continue
        elif isinstance(layer, ActivationLayer):
            activations.append(activate(layer.activation, activations[-1]))
            continue
        elif isinstance(layer, Embedding):
            activations.append(embed(activations[-1], next(weights)["E"]))
            continue
        elif isinstance(layer, Recurrent):
            sequences[k] = recurrent_forward(layer, activations[-1], next(weights))
            activations.append(nr.returned(sequences[k], layer.return_sequences))
            continue
        elif isinstance(layer, Dropout):
            if training:
                kept[k] = next(drawn)
                activations.append(dropout(activations[-1], kept[k], layer))
            else:
                activations.append(dropout_inference(activations[-1], layer))
            continue
        else:
            activations.append(unweighted_forward(layer, activations[-1]))
            continue
        activations.append(activate(layer.activation, zs[-1]))
    return Cache(activations, zs[-1], tuple(zs), norms, kept, sequences)


def predict(net: Network, params: Params, X: np.ndarray) -> np.ndarray:
    """The network's outputs ``a_L``, shape ``(N, K)``, in inference mode."""
    return forward(net, params, X, training=False).activations[-1]


# --- losses: C beside where backward starts, ∂C/∂a or δ_L = ∂C/∂z_L ---------------------------


class Loss(NamedTuple):
    """C for a `Cache`'s outputs and targets y, and where backward starts: ``grad_a`` =
    ∂C/∂a(a, y), carried through the output activation's f′; or, for a loss defined together
    with its output activation, ``delta`` = δ_L(a, y), where f′ cancels."""

    value: Callable[[Cache, np.ndarray], float]
    grad_a: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    delta: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def half_sse(cache: Cache, y: np.ndarray) -> float:
    return float(0.5 * np.sum((cache.activations[-1] - y) ** 2))


def half_sse_grad(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return a - y  # ∂/∂a of ½(a − y)²


def mse(cache: Cache, y: np.ndarray) -> float:
    return float(np.mean((cache.activations[-1] - y) ** 2))


def mse_grad(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 2 * (a - y) / y.size  # ∂/∂a of (1/NK)(a − y)²


def bce(cache: Cache, y: np.ndarray) -> float:
    # −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y z, finite for any z.
    z = cache.logits
    return float(np.mean(softplus(z) - y * z))


def bce_delta(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (a - y) / y.size  # with a sigmoid output σ′ cancels the 1/(a(1 − a)) of ∂C/∂a


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax_ce(cache: Cache, y: np.ndarray) -> float:
    # −(1/N) Σ_n Σ_k y log softmax(z), averaged over the time steps too on a sequence
    return float(-np.sum(y * log_softmax(cache.logits)) / rows(y))


def softmax_ce_delta(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    # ∂/∂z of −Σ_k y_k log softmax(z)_k is a Σ_k y_k − y: the familiar a − y for one-hot rows.
    return (a * np.sum(y, axis=-1, keepdims=True) - y) / rows(y)


LOSSES: dict[str, Loss] = {
    "half_sse": Loss(half_sse, grad_a=half_sse_grad),
    "mse": Loss(mse, grad_a=mse_grad),
    "bce": Loss(bce, delta=bce_delta),
    "softmax_ce": Loss(softmax_ce, delta=softmax_ce_delta),
}


def loss(net: Network, cache: Cache, y: np.ndarray) -> float:
    """C for outputs ``a = cache.activations[-1]`` and targets ``y``, both ``(N, K)``."""
    return lookup(LOSSES, net.loss, "loss").value(cache, y)


def output_delta(net: Network, cache: Cache, y: np.ndarray) -> np.ndarray:
    """δ_L = ∂C/∂z_L, shape ``(N, K)``."""
    a, spec = cache.activations[-1], lookup(LOSSES, net.loss, "loss")
    if spec.delta is not None:
        return spec.delta(a, y)
    assert spec.grad_a is not None  # a loss has one or the other
    return activation_backward(net.activations[-1], cache.logits, a, spec.grad_a(a, y))


# --- backward ---------------------------------------------------------------------------------


def layer_grads(a_prev: np.ndarray, delta: np.ndarray, bias: bool) -> dict[str, np.ndarray]:
    """∂C/∂W_l = a_{l-1}ᵀ δ_l and ∂C/∂b_l = Σ_samples δ_l; on a sequence, every time step
    a row of its own (the sums over samples and steps)."""
    a_prev = a_prev.reshape(-1, a_prev.shape[-1])  # (N, n_{l-1}), or (N·T, n_{l-1})
    delta = delta.reshape(-1, delta.shape[-1])
    grads = {"W": a_prev.T @ delta}  # (n_{l-1}, N) @ (N, n_l) -> (n_{l-1}, n_l)
    if bias:
        grads["b"] = delta.sum(axis=0)  # (N, n_l) -> (n_l,)
    return grads


def hidden_delta(
    delta: np.ndarray, W: np.ndarray, activation: str, z_prev: np.ndarray, a_prev: np.ndarray
) -> np.ndarray:
    """δ_{l-1} = (δ_l W_lᵀ) ⊙ f′_{l-1}(z_{l-1}), f′ from z_{l-1}, a_{l-1} or both."""
    grad_a_prev = delta @ W.T  # (N, n_l) @ (n_l, n_{l-1}) -> (N, n_{l-1})
    return activation_backward(activation, z_prev, a_prev, grad_a_prev)


def conv_grads(a_prev: np.ndarray, conv: Conv2D, delta: np.ndarray, bias: bool) -> dict:
    """∂C/∂W, the padded input correlated with δ, and ∂C/∂b = Σ δ over samples and positions."""
    pads = nc.padding(a_prev.shape, conv.kernel, conv.strides, conv.padding)
    dW, db = nc.conv2d_grads_im2col(nc.pad(a_prev, pads), delta, conv.kernel, conv.strides)
    return {"W": dW, "b": db} if bias else {"W": dW}


def conv_input_grad(
    a_prev: np.ndarray, conv: Conv2D, delta: np.ndarray, W: np.ndarray
) -> np.ndarray:
    """∂C/∂a_{l-1}: δ fully correlated with the flipped kernel, the padding then dropped."""
    pads = nc.padding(a_prev.shape, conv.kernel, conv.strides, conv.padding)
    padded_shape = nc.pad(a_prev[:0], pads).shape[1:]
    dx = nc.conv2d_input_grad_im2col(delta, W, conv.strides, (len(a_prev), *padded_shape))
    return nc.unpad(dx, pads)  # (N, H, W, C)


def embedding_grad(ids: np.ndarray, grad: np.ndarray, vocabulary: int) -> np.ndarray:
    """∂C/∂E: each position's gradient added into its id's row, repeated ids summed."""
    dE = np.zeros((vocabulary, grad.shape[-1]), grad.dtype)  # (V, D)
    np.add.at(dE, ids, grad)  # unbuffered: an id met twice gets both
    return dE


def norm_backward(
    norm: nn.Normalised, values: dict[str, np.ndarray], grad: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A normalisation's ∂C/∂γ and ∂C/∂β, and ∂C/∂x, from ∂C/∂(its output)."""
    dx = nn.normalise_backward(grad, values["gamma"], norm)
    return nn.scale_shift_grads(grad, norm.x_hat), dx


def recurrent_backward(
    layer: Recurrent,
    seq: nr.Sequence | nr.CellSequence,
    values: dict[str, np.ndarray],
    grad: np.ndarray,
) -> nr.Grads:
    """A SimpleRNN's or LSTM's ∂C/∂W, ∂C/∂U, ∂C/∂b, ∂C/∂x and every step's δ, by BPTT from
    ∂C/∂(its output): every h_t's, or h_T's alone."""
    W, U, every = values["W"], values["U"], nr.spread(grad, seq)
    if isinstance(layer, LSTM):
        assert isinstance(seq, nr.CellSequence)
        grads = nr.lstm_backward(seq, every, W, U)
    else:
        prime = lookup(ACTIVATIONS, layer.activation, "activation").prime
        assert prime is not None  # a hidden activation
        grads = nr.rnn_backward(seq, every, W, U, prime)
    return grads


def unweighted_grad(layer: Pooling | Flatten, a_prev: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """∂C/∂(the layer's input) from ∂C/∂(its output)."""
    if isinstance(layer, MaxPool2D):
        return nc.max_pool_grad(a_prev, grad, layer.pool_size, layer.stride)
    if isinstance(layer, AvgPool2D):
        return nc.avg_pool_grad(a_prev, grad, layer.pool_size, layer.stride)
    return nc.flatten_grad(grad, a_prev.shape)


def backward(
    net: Network,
    params: Params,
    cache: Cache,
    delta: np.ndarray,
    deltas: list[np.ndarray] | None = None,
    steps: list[np.ndarray] | None = None,
) -> Params:
    """Every layer's gradients from the output delta, structured like ``params``; ``deltas``,
    when given a list, receives δ_L, …, δ_1 in the order they are used, and ``steps`` each
    recurrent layer's δ_t of every step (N, T, ·), from the last layer down.

    Walking down the layers, ``delta`` is the current weight layer's δ = ∂C/∂z; below a
    Conv2D layer, or a Dense layer on any other kind of layer, ``grad`` = ∂C/∂a carries the
    gradient through the other layers (a normalisation's and an Embedding's gradients taken on
    the way) until the next weight layer's f′ makes it a δ again. ``w`` counts the weight
    layers (their z and δ), ``p`` the layers with parameters."""
    grads: Params = [{} for _ in params]
    grad: np.ndarray | None = None
    w, p = len(cache.zs), len(params)
    for k in reversed(range(len(net.stack))):
        layer, a_prev = net.stack[k], cache.activations[k]
        if not isinstance(layer, Weighted):
            assert grad is not None  # the last layer is Dense
            if isinstance(layer, Norm):
                p -= 1
                grads[p], grad = norm_backward(cache.norms[k], params[p], grad)
            elif isinstance(layer, ActivationLayer):
                grad = activation_backward(layer.activation, a_prev, cache.activations[k + 1], grad)
            elif isinstance(layer, Dropout):
                grad = dropout(grad, cache.masks[k], layer)
            elif isinstance(layer, Embedding):
                p -= 1
                grads[p] = {"E": embedding_grad(a_prev, grad, layer.input_dim)}
            elif isinstance(layer, Recurrent):
                p -= 1
                through = recurrent_backward(layer, cache.sequences[k], params[p], grad)
                grads[p], grad = {"W": through.W, "U": through.U, "b": through.b}, through.x
                if steps is not None:
                    steps.append(through.delta)
            else:
                grad = unweighted_grad(layer, a_prev, grad)
            if p == 0:
                break
            continue
        w, p = w - 1, p - 1
        if grad is not None:  # ∂C/∂a_l -> δ_l
            z, a = cache.zs[w], cache.activations[k + 1]
            delta, grad = activation_backward(layer.activation, z, a, grad), None
        if deltas is not None:
            deltas.append(delta)
        W = params[p]["W"]
        if isinstance(layer, Dense):
            grads[p] = layer_grads(a_prev, delta, "b" in params[p])
        else:
            grads[p] = conv_grads(a_prev, layer, delta, "b" in params[p])
        if p == 0:
            break
        below = net.stack[k - 1]
        if isinstance(layer, Dense) and isinstance(below, Weighted):
            delta = hidden_delta(delta, W, below.activation, cache.zs[w - 1], a_prev)
        elif isinstance(layer, Dense):
            grad = delta @ W.T  # (N, n_l) @ (n_l, n_{l-1}) -> (N, n_{l-1})
        else:
            grad = conv_input_grad(a_prev, layer, delta, W)
    return grads


def evaluate(
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    masks: list[np.ndarray] | None = None,
) -> tuple[float, Params, Cache]:
    """C, its gradient and the forward pass it came from, in training mode, with the Dropout
    layers' ``masks`` (by default `forward`'s)."""
    cache = forward(net, params, X, masks=masks)
    return loss(net, cache, y), backward(net, params, cache, output_delta(net, cache, y)), cache


def loss_and_grads(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    value, grads, _ = evaluate(net, params, X, y)
    return value, grads


def trace(net: Network, params: Params, X: np.ndarray, y: np.ndarray) -> Trace:
    """``loss_and_grads`` with every intermediate kept: z, a and δ of each layer, and each
    recurrent layer's z, gates, h and δ at every step."""
    cache = forward(net, params, X)
    zs: list[np.ndarray | None] = list(cache.zs)
    deltas: list[np.ndarray] = []
    step_deltas: list[np.ndarray] = []
    grads = backward(net, params, cache, output_delta(net, cache, y), deltas, step_deltas)
    outputs = [
        a
        for layer, a in zip(net.stack, cache.activations[1:], strict=True)
        if isinstance(layer, Weighted)
    ]
    sequences = [cache.sequences[k] for k in sorted(cache.sequences)]
    steps = [
        TimeSteps(
            seq.z, seq.gates if isinstance(seq, nr.CellSequence) else None, seq.h[:, 1:], delta
        )
        for seq, delta in zip(sequences, step_deltas[::-1], strict=True)
    ]
    return Trace(zs, outputs, loss(net, cache, y), deltas[::-1], grads, steps)


# --- optimizers: the update of one parameter θ with gradient g at step t ------------------------
# The equations are gradcheck.optimizers'; ``state`` holds the optimizer's arrays for θ.


def sgd_update(opt: SGD, theta: np.ndarray, g: np.ndarray, state: dict, t: int) -> np.ndarray:
    if opt.momentum == 0:
        return theta - opt.lr * g  # θ ← θ − η g
    m = state.setdefault("m", np.zeros_like(theta))
    m[...] = opt.momentum * m - opt.lr * g  # m ← μ m − η g
    if opt.nesterov:
        return theta + opt.momentum * m - opt.lr * g  # θ ← θ + μ m − η g
    return theta + m  # θ ← θ + m


def rmsprop_update(
    opt: RMSprop, theta: np.ndarray, g: np.ndarray, state: dict, t: int
) -> np.ndarray:
    v = state.setdefault("v", np.zeros_like(theta))
    v[...] = opt.rho * v + (1 - opt.rho) * (g * g)  # v ← ρ v + (1 − ρ) g²
    v_bar = v
    if opt.centered:
        a = state.setdefault("a", np.zeros_like(theta))
        a[...] = opt.rho * a + (1 - opt.rho) * g  # a ← ρ a + (1 − ρ) g
        v_bar = v - a * a  # v̄ = v − a²
    if opt.epsilon_placement == "inside":
        delta = opt.lr * g / np.sqrt(v_bar + opt.epsilon)  # η g / √(v̄ + ε)
    else:
        delta = opt.lr * g / (np.sqrt(v_bar) + opt.epsilon)  # η g / (√v̄ + ε)
    if opt.momentum == 0:
        return theta - delta
    b = state.setdefault("b", np.zeros_like(theta))
    b[...] = opt.momentum * b + delta  # b ← μ b + Δ
    return theta - b


def adam_update(opt: Adam, theta: np.ndarray, g: np.ndarray, state: dict, t: int) -> np.ndarray:
    m = state.setdefault("m", np.zeros_like(theta))
    v = state.setdefault("v", np.zeros_like(theta))
    m[...] = opt.beta_1 * m + (1 - opt.beta_1) * g  # m ← β₁ m + (1 − β₁) g
    v[...] = opt.beta_2 * v + (1 - opt.beta_2) * (g * g)  # v ← β₂ v + (1 − β₂) g²
    if opt.epsilon_placement == "keras":
        alpha = opt.lr * math.sqrt(1 - opt.beta_2**t) / (1 - opt.beta_1**t)
        if opt.amsgrad:
            v = _running_max(state, v)
        return theta - alpha * m / (np.sqrt(v) + opt.epsilon)  # θ − α m / (√v + ε)
    m_hat = m / (1 - opt.beta_1**t)
    v_hat = v / (1 - opt.beta_2**t)
    if opt.amsgrad:
        v_hat = _running_max(state, v_hat)
    return theta - opt.lr * m_hat / (np.sqrt(v_hat) + opt.epsilon)  # θ − η m̂ / (√v̂ + ε)


def _running_max(state: dict, v: np.ndarray) -> np.ndarray:
    """AMSGrad's running maximum of the second moment."""
    v_max = state.setdefault("v_max", np.zeros_like(v))
    v_max[...] = np.maximum(v_max, v)
    return v_max


UPDATE: dict[str, Callable[..., np.ndarray]] = {
    "sgd": sgd_update,
    "rmsprop": rmsprop_update,
    "adam": adam_update,
}


# --- training ---------------------------------------------------------------------------------


def move_statistics(net: Network, params: Params, cache: Cache) -> None:
    """After a training step's forward pass, each BatchNorm's moving statistics moved toward
    the batch's, in place."""
    for k, values in zip(net.parametric_positions, params, strict=True):
        layer = net.stack[k]
        if isinstance(layer, BatchNorm):
            norm = cache.norms[k]
            count = norm.x_hat.size // norm.x_hat.shape[-1]  # the values per channel
            var = nn.unbiased(norm.var, count) if layer.unbiased else norm.var
            for key, batch in (("moving_mean", norm.mean), ("moving_var", var)):
                values[key] = nn.moving_update(values[key], batch, layer.momentum)


def train(
    net: Network, params: Params, X: np.ndarray, y: np.ndarray, steps: int, lr: float
) -> Trajectory:
    """``steps`` full-batch gradient-descent steps, W ← W − lr ∂C/∂W, on a copy of ``params``."""
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
    """One step of ``optimizer`` per batch of ``schedule`` (the samples of each step), on a
    copy of ``params``; ``losses[t]`` is the loss of step t's batch before its update. Step t's
    Dropout masks are `dropout_masks`' for ``seed`` and t."""
    update = lookup(UPDATE, optimizer.family, "optimizer")
    params = [{key: value.copy() for key, value in layer.items()} for layer in params]
    states: list[dict[str, dict]] = [{key: {} for key in shapes} for shapes in net.grad_shapes()]
    losses = np.empty(len(schedule), dtype=net.dtype)
    decay = optimizer.lr * optimizer.weight_decay
    # A step size too large for the problem drives the loss to inf and then NaN; that divergence
    # shows in the losses, where verify() reports it, rather than as NumPy warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for t, batch in enumerate(schedule, start=1):
            samples = X[batch]
            masks = dropout_masks(net, len(samples), seed, t - 1)
            losses[t - 1], grads, cache = evaluate(net, params, samples, y[batch], masks)
            move_statistics(net, params, cache)
            for layer, grad, state in zip(params, grads, states, strict=True):
                for key in grad:
                    theta = layer[key] - decay * layer[key] if decay else layer[key]  # θ − ηλθ
                    layer[key] = update(optimizer, theta, grad[key], state[key], t)
    return Trajectory(params, losses)
