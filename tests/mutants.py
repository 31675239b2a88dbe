"""Realistic backprop bugs, each one small change to the correct NumPy kernels.

A mutant is a copy of ``kernels.numpy_backprop`` whose functions see the copy's globals, with one
function replaced; it is served through the same input checks as the built-in backends.
"""

from __future__ import annotations

import types

import numpy as np

from gradcheck.backends import KernelBackend
from gradcheck.kernels import numpy_backprop as nb
from gradcheck.kernels import numpy_recurrent as nr


def _copy_module(original: types.ModuleType, name: str) -> types.ModuleType:
    """A copy of ``original`` whose functions see the copy's globals."""
    module = types.ModuleType(name)
    namespace = module.__dict__
    namespace.update(vars(original))
    for key, value in vars(original).items():
        if isinstance(value, types.FunctionType) and value.__module__ == original.__name__:
            namespace[key] = types.FunctionType(
                value.__code__, namespace, value.__name__, value.__defaults__, value.__closure__
            )
    return module


def _copy_kernels(name: str) -> types.ModuleType:
    module = _copy_module(nb, f"mutant_{name}")
    module.__dict__["name"] = name
    return module


def _replaced(module: types.ModuleType, original: types.ModuleType, replacements: dict) -> None:
    """``replacements`` put into ``module``, a copy of ``original``, each function seeing the
    copy's globals."""
    for key, value in replacements.items():
        if key not in vars(original):
            raise KeyError(f"{original.__name__} has no {key!r} to replace")
        if isinstance(value, types.FunctionType):  # its globals are the mutant's
            value = types.FunctionType(
                value.__code__, module.__dict__, value.__name__, value.__defaults__
            )
        module.__dict__[key] = value


#: The kernel's dispatch tables, whose entries hold its functions.
TABLES = ("ACTIVATIONS", "LOSSES")


def _point_tables_at(namespace: dict) -> None:
    """Make the dispatch tables hold the mutant's functions, replacements included."""

    def pointed(f):
        return namespace.get(f.__name__, f) if isinstance(f, types.FunctionType) else f

    for table in TABLES:
        namespace[table] = {
            name: type(entry)(*map(pointed, entry)) for name, entry in getattr(nb, table).items()
        }


class MutantBackend(KernelBackend):
    def __init__(self, name: str, module: types.ModuleType) -> None:
        super().__init__(name, module.__name__)
        self._module = module


def mutant(name: str, **replacements: object) -> MutantBackend:
    module = _copy_kernels(name)
    _replaced(module, nb, replacements)
    _point_tables_at(module.__dict__)
    return MutantBackend(name, module)


def recurrent_kernels(name: str, **replacements: object) -> types.ModuleType:
    """A copy of ``numpy_recurrent`` with ``replacements``."""
    recurrent = _copy_module(nr, f"mutant_{name}_recurrent")
    _replaced(recurrent, nr, replacements)
    return recurrent


def recurrent_mutant(name: str, **replacements: object) -> MutantBackend:
    """A mutant whose ``numpy_recurrent`` has ``replacements``."""
    return mutant(name, nr=recurrent_kernels(name, **replacements))


# --- the bugs; each body is the correct function with one change, marked -----------------------


def _train_sign_flip(net, params, X, y, steps, lr):
    params = [{key: value.copy() for key, value in layer.items()} for layer in params]
    losses = np.empty(steps, dtype=net.dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # as train_with: divergence shows in losses
        for t in range(steps):
            losses[t], grads = loss_and_grads(net, params, X, y)  # noqa: F821
            for layer, grad in zip(params, grads, strict=True):
                for key in layer:
                    layer[key] += lr * grad[key]  # BUG: ascends the loss
    return Trajectory(params, losses)  # noqa: F821


def _train_lr_slightly_off(net, params, X, y, steps, lr):
    schedule = batch_schedule(len(X), None, steps, 0)  # noqa: F821
    return train_with(net, params, X, y, SGD(lr * 1.001), schedule)  # noqa: F821  # BUG: lr × 1.001


def _train_skips_a_step(net, params, X, y, steps, lr):
    params = [{key: value.copy() for key, value in layer.items()} for layer in params]
    losses = np.empty(steps, dtype=net.dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # as train_with: divergence shows in losses
        for t in range(steps):
            losses[t], grads = loss_and_grads(net, params, X, y)  # noqa: F821
            if t == 3:
                continue  # BUG: the fourth step computes its gradient but never takes the step
            for layer, grad in zip(params, grads, strict=True):
                for key in layer:
                    layer[key] -= lr * grad[key]
    return Trajectory(params, losses)  # noqa: F821


def _sigmoid_prime_of_activation(z, a):
    return sigmoid(a) * (1 - sigmoid(a))  # BUG: σ′(z) applied to a = σ(z)  # noqa: F821


def _tanh_prime_unsquared(z, a):
    return 1 - a  # BUG: 1 − tanh, not 1 − tanh²


def _layer_grads_without_bias(a_prev, delta, bias):
    grads = {"W": a_prev.T @ delta}
    if bias:
        grads["b"] = np.zeros(delta.shape[1], delta.dtype)  # BUG: bias gradient dropped
    return grads


def _layer_grads_transposed(a_prev, delta, bias):
    grads = {"W": delta.T @ a_prev}  # BUG: ∂C/∂Wᵀ, (n_l, n_{l-1}): the right shape when square
    if bias:
        grads["b"] = delta.sum(axis=0)
    return grads


def _output_delta_without_mean(net, cache, y):
    a = cache.activations[-1]
    if net.loss == "softmax_ce":
        return a * np.sum(y, axis=1, keepdims=True) - y  # BUG: the 1/N of the mean is missing
    return nb.output_delta(net, cache, y)


def _output_delta_without_softmax(net, cache, y):
    if net.loss == "softmax_ce":
        return (cache.logits - y) / y.shape[0]  # BUG: z − y instead of softmax(z) − y
    return nb.output_delta(net, cache, y)


def _backward_wrong_layer_activation(net, params, cache, delta, deltas=None, steps=None):
    grads = [{} for _ in params]
    for l in reversed(range(net.depth)):  # noqa: E741
        if deltas is not None:
            deltas.append(delta)
        a_prev = cache.activations[l]
        grads[l] = layer_grads(a_prev, delta, net.bias)  # noqa: F821
        if l > 0:
            # BUG: the layer's own activation, net.activations[l], instead of layer l − 1's
            z = cache.zs[l - 1]
            delta = hidden_delta(delta, params[l]["W"], net.activations[l], z, a_prev)  # noqa: F821
    return grads


def _backward_sigmoid_prime_given_z(net, params, cache, delta, deltas=None, steps=None):
    grads = [{} for _ in params]
    for l in reversed(range(net.depth)):  # noqa: E741
        if deltas is not None:
            deltas.append(delta)
        a_prev = cache.activations[l]
        grads[l] = layer_grads(a_prev, delta, net.bias)  # noqa: F821
        if l > 0:
            below = net.activations[l - 1]
            # BUG: σ′ written through the activation, a(1 − a), given the pre-activation z
            at = cache.zs[l - 1] if below == "sigmoid" else a_prev
            delta = hidden_delta(delta, params[l]["W"], below, cache.zs[l - 1], at)  # noqa: F821
    return grads


def _evaluate_stale_cache(net, params, X, y, masks=None, _previous={}):  # noqa: B006
    cache = forward(net, params, X, masks=masks)  # noqa: F821
    stale = _previous.get("cache", cache)  # BUG: backward gets the previous call's activations
    _previous["cache"] = cache
    grads = backward(net, params, stale, output_delta(net, stale, y))  # noqa: F821
    return loss(net, cache, y), grads, cache  # noqa: F821


def _layer_grads_first_sample(a_prev, delta, bias):
    grads = {"W": a_prev[:1].T @ delta[:1]}  # BUG: only the first sample's gradient
    if bias:
        grads["b"] = delta[:1].sum(axis=0)
    return grads


def _forward_first_layer_float16(net, params, X, training=True, masks=None):
    activations, zs = [X], []
    for l, (layer, activation) in enumerate(zip(params, net.activations, strict=True)):  # noqa: E741
        if l == 0:  # BUG: the first layer silently computed in float16
            half = {key: value.astype(np.float16) for key, value in layer.items()}
            z = pre_activation(X.astype(np.float16), half).astype(X.dtype)  # noqa: F821
        else:
            z = pre_activation(activations[-1], layer)  # noqa: F821
        zs.append(z)
        activations.append(activate(activation, z))  # noqa: F821
    return Cache(activations, z, tuple(zs))  # noqa: F821


def loop_mutants() -> dict[str, MutantBackend]:
    """The training loop's bugs, by name, as fresh backends."""
    _evaluate_stale_cache.__defaults__[1].clear()
    return {
        "lr × 1.001": mutant("lr_slightly_off", train=_train_lr_slightly_off),
        "a skipped step": mutant("skipped_step", train=_train_skips_a_step),
        "update sign flip": mutant("update_sign_flip", train=_train_sign_flip),
        "stale forward cache": mutant("stale_cache", evaluate=_evaluate_stale_cache),
    }


def all_mutants() -> dict[str, MutantBackend]:
    """Every bug, by name, as a fresh backend."""
    _evaluate_stale_cache.__defaults__[1].clear()
    return {
        "update sign flip": mutant("update_sign_flip", train=_train_sign_flip),
        "sigmoid' of the activation": mutant(
            "sigmoid_prime_of_a", sigmoid_prime=_sigmoid_prime_of_activation
        ),
        "sigmoid' given z": mutant("sigmoid_prime_of_z", backward=_backward_sigmoid_prime_given_z),
        "tanh' unsquared": mutant("tanh_prime_unsquared", tanh_prime=_tanh_prime_unsquared),
        "missing bias gradient": mutant("no_bias_grad", layer_grads=_layer_grads_without_bias),
        "transposed weight gradient": mutant("transposed_dW", layer_grads=_layer_grads_transposed),
        "missing 1/N of the mean": mutant("no_mean", output_delta=_output_delta_without_mean),
        "softmax-CE gradient without the softmax": mutant(
            "no_softmax", output_delta=_output_delta_without_softmax
        ),
        "wrong layer's activation in backward": mutant(
            "wrong_layer_activation", backward=_backward_wrong_layer_activation
        ),
        "stale forward cache": mutant("stale_cache", evaluate=_evaluate_stale_cache),
        "first sample only": mutant("first_sample", layer_grads=_layer_grads_first_sample),
        "one layer in float16": mutant("float16_layer", forward=_forward_first_layer_float16),
    }


# --- the normalisations' conventions and bugs, each the correct function with one change --------


def _move_statistics_torch_momentum(net, params, cache):
    for k, values in zip(net.parametric_positions, params, strict=True):
        layer = net.stack[k]
        if isinstance(layer, BatchNorm):  # noqa: F821
            norm = cache.norms[k]
            for key, batch in (("moving_mean", norm.mean), ("moving_var", norm.var)):
                # BUG: PyTorch's momentum, the share of the batch's statistic, in Keras's place
                values[key] = nn.moving_update(values[key], batch, 1 - layer.momentum)  # noqa: F821


def _move_statistics_unbiased(net, params, cache):
    for k, values in zip(net.parametric_positions, params, strict=True):
        layer = net.stack[k]
        if isinstance(layer, BatchNorm):  # noqa: F821
            norm = cache.norms[k]
            count = norm.x_hat.size // norm.x_hat.shape[-1]
            var = nn.unbiased(norm.var, count)  # BUG: PyTorch's unbiased variance  # noqa: F821
            for key, batch in (("moving_mean", norm.mean), ("moving_var", var)):
                values[key] = nn.moving_update(values[key], batch, layer.momentum)  # noqa: F821


def _norm_forward_torch_epsilon(layer, x, values, training):
    gamma, beta = values["gamma"], values["beta"]
    epsilon = 1e-5  # BUG: PyTorch's default ε where the layer says Keras's 1e-3
    if isinstance(layer, BatchNorm) and not training:  # noqa: F821
        mean, var = values["moving_mean"], values["moving_var"]
        return nn.inference(x, gamma, beta, mean, var, epsilon), None  # noqa: F821
    axes = nn.batch_axes(x) if isinstance(layer, BatchNorm) else (x.ndim - 1,)  # noqa: F821
    norm = nn.normalisation(x, axes, epsilon)  # noqa: F821
    return nn.scale_shift(norm.x_hat, gamma, beta), norm  # noqa: F821


def _norm_backward_without_mean_term(norm, values, grad):
    g_hat = grad * values["gamma"]
    mean_gx = (g_hat * norm.x_hat).mean(axis=norm.axes, keepdims=True)
    dx = norm.inv_std * (g_hat - norm.x_hat * mean_gx)  # BUG: the path through μ left out
    return nn.scale_shift_grads(grad, norm.x_hat), dx  # noqa: F821


def _norm_backward_without_variance_term(norm, values, grad):
    g_hat = grad * values["gamma"]
    mean_g = g_hat.mean(axis=norm.axes, keepdims=True)
    dx = norm.inv_std * (g_hat - mean_g)  # BUG: the path through σ² left out
    return nn.scale_shift_grads(grad, norm.x_hat), dx  # noqa: F821


def norm_mutants() -> dict[str, MutantBackend]:
    """The normalisations' bugs, by name, as fresh backends."""
    return {
        "PyTorch's momentum": mutant(
            "torch_momentum", move_statistics=_move_statistics_torch_momentum
        ),
        "unbiased moving variance": mutant(
            "unbiased_moving_var", move_statistics=_move_statistics_unbiased
        ),
        "PyTorch's ε": mutant("torch_epsilon", norm_forward=_norm_forward_torch_epsilon),
        "backward without the mean term": mutant(
            "no_mean_term", norm_backward=_norm_backward_without_mean_term
        ),
        "backward without the variance term": mutant(
            "no_variance_term", norm_backward=_norm_backward_without_variance_term
        ),
    }


def _dropout_unscaled(x, mask, layer):
    return x * mask  # BUG: the kept units not scaled by 1 / (1 − rate)


def _dropout_rate_as_keep(x, mask, layer):
    return x * mask * x.dtype.type(1 / layer.rate)  # BUG: rate read as CS231n's keep probability


def _dropout_inference_scaled(x, layer):
    return x * x.dtype.type(1 - layer.rate)  # BUG: the 2012 paper's: × (1 − rate) in predictions


def dropout_mutants() -> dict[str, MutantBackend]:
    """Dropout's conventions misread, by name, as fresh backends."""
    return {
        "dropout not rescaled": mutant("dropout_unscaled", dropout=_dropout_unscaled),
        "dropout rate as keep probability": mutant(
            "dropout_rate_as_keep", dropout=_dropout_rate_as_keep
        ),
        "dropout rescaled at prediction": mutant(
            "dropout_at_prediction",
            dropout=_dropout_unscaled,
            dropout_inference=_dropout_inference_scaled,
        ),
    }


def _embedding_grad_overwrites(ids, grad, vocabulary):
    dE = np.zeros((vocabulary, grad.shape[-1]), grad.dtype)
    dE[ids] = grad  # BUG: buffered assignment: an id met twice keeps one position's gradient
    return dE


def _embedding_grad_one_based(ids, grad, vocabulary):
    dE = np.zeros((vocabulary, grad.shape[-1]), grad.dtype)
    np.add.at(dE, (ids + 1) % vocabulary, grad)  # BUG: ids read as 1-based rows
    return dE


def embedding_mutants() -> dict[str, MutantBackend]:
    """The Embedding's backward bugs, by name, as fresh backends."""
    return {
        "embedding overwrites repeated ids": mutant(
            "embedding_overwrites", embedding_grad=_embedding_grad_overwrites
        ),
        "embedding rows one-based": mutant(
            "embedding_one_based", embedding_grad=_embedding_grad_one_based
        ),
    }


# --- backpropagation through time: each a hand-written port's slip, made consistently in its
# forward and backward (the port computes its own network and that network's gradient), but
# the slips of the backward alone. The numpy_recurrent ones see that module's names.


def _swap_c_o(a):
    i, f, c, o = np.split(a, 4, axis=-1)
    return np.concatenate([i, f, o, c], axis=-1)


def _recurrent_forward_cs231n_order(layer, x, values, _correct=nb.recurrent_forward,
                                    _swap=_swap_c_o):  # fmt: skip
    if isinstance(layer, LSTM):  # noqa: F821  BUG: CS231n's i, f, o, g read from Keras's i, f, c, o
        values = {key: _swap(value) for key, value in values.items()}
    return _correct(layer, x, values)


def _recurrent_backward_cs231n_order(layer, seq, values, grad, _correct=nb.recurrent_backward,
                                     _swap=_swap_c_o):  # fmt: skip
    if not isinstance(layer, LSTM):  # noqa: F821 - numpy_backprop's
        return _correct(layer, seq, values, grad)
    g = _correct(layer, seq, {key: _swap(value) for key, value in values.items()}, grad)
    return g._replace(W=_swap(g.W), U=_swap(g.U), b=_swap(g.b), delta=_swap(g.delta))  # BUG


def _rnn_backward_truncated(seq, grad, W, U, prime):
    grads = zero_grads(seq.x, W, U)  # noqa: F821 - numpy_recurrent's
    for t in reversed(range(seq.x.shape[1])):  # BUG: no carry: step t sees only its own g_t
        delta = rnn_step_backward(grad[:, t], seq.z[:, t], seq.h[:, t + 1], prime)  # noqa: F821
        step_grads(grads, delta, seq.x[:, t], seq.h[:, t], W, U, t)  # noqa: F821
    return grads


def _rnn_backward_dU_from_h_t(seq, grad, W, U, prime):
    grads = zero_grads(seq.x, W, U)  # noqa: F821
    carry = np.zeros_like(seq.h[:, 0])
    for t in reversed(range(seq.x.shape[1])):
        delta = rnn_step_backward(grad[:, t] + carry, seq.z[:, t], seq.h[:, t + 1], prime)  # noqa: F821
        carry = step_grads(grads, delta, seq.x[:, t], seq.h[:, t + 1], W, U, t)  # noqa: F821  BUG: h_t
    return grads


def _gates_forget_linear(z_t, sigmoid):
    z_i, z_f, z_c, z_o = np.split(z_t, 4, axis=-1)
    return np.concatenate([sigmoid(z_i), z_f, np.tanh(z_c), sigmoid(z_o)], axis=-1)  # BUG: f = z_f


def _gates_backward_forget_linear(dh, dc, c_prev, c_t, gates_t):
    i, _, c_tilde, o = np.split(gates_t, 4, axis=-1)
    di, df, dc_tilde, do = dc * c_tilde, dc * c_prev, dc * i, dh * np.tanh(c_t)
    one = gates_t.dtype.type(1)
    return np.concatenate(  # BUG: f′ = 1, f being z_f
        [di * i * (one - i), df, dc_tilde * (one - c_tilde * c_tilde), do * o * (one - o)], axis=-1
    )


def _cell_not_carried(c_prev, gates_t):
    i, _, c_tilde, o = np.split(gates_t, 4, axis=-1)
    c_t = i * c_tilde  # BUG: c_t = i ⊙ c̃, the old cell state dropped
    return c_t, o * np.tanh(c_t)


def _lstm_backward_cell_not_carried(seq, grad, W, U):
    grads = zero_grads(seq.x, W, U)  # noqa: F821
    carry_h, none = np.zeros_like(seq.h[:, 0]), np.zeros_like(seq.c[:, 0])
    for t in reversed(range(seq.x.shape[1])):
        dh = grad[:, t] + carry_h
        dc = cell_backward(dh, none, seq.c[:, t + 1], seq.gates[:, t])  # noqa: F821  BUG: no carry
        delta = gates_backward(dh, dc, none, seq.c[:, t + 1], seq.gates[:, t])  # noqa: F821  BUG: nor c_{t−1}
        carry_h = step_grads(grads, delta, seq.x[:, t], seq.h[:, t], W, U, t)  # noqa: F821
    return grads


def _recurrent_backward_last_dx(layer, seq, values, grad, _correct=nb.recurrent_backward):
    grads = _correct(layer, seq, values, grad)
    only_last = np.zeros_like(grads.x)
    only_last[:, -1] = grads.x[:, -1]  # BUG: the earlier steps' ∂C/∂x dropped
    return grads._replace(x=only_last)


#: The numpy_recurrent functions each slip of a hand-written recurrent layer replaces, by name.
RECURRENT_SLIPS = {
    "bptt truncated": {"rnn_backward": _rnn_backward_truncated},
    "h_t in dU": {"rnn_backward": _rnn_backward_dU_from_h_t},
    "lstm forget gate without sigma": {
        "gates": _gates_forget_linear,
        "gates_backward": _gates_backward_forget_linear,
    },
    "lstm cell state not carried": {
        "cell": _cell_not_carried,
        "lstm_backward": _lstm_backward_cell_not_carried,
    },
}


def recurrent_mutants() -> dict[str, MutantBackend]:
    """The classic slips of backpropagation through time, by name, as fresh backends: the
    LSTM's, the SimpleRNN's backward's, and ∂C/∂x's, which an Embedding below sees."""
    return {
        "lstm blocks c and o swapped": mutant(
            "lstm_cs231n_order",
            recurrent_forward=_recurrent_forward_cs231n_order,
            recurrent_backward=_recurrent_backward_cs231n_order,
        ),
        "lstm forget gate without sigma": recurrent_mutant(
            "lstm_forget_linear", **RECURRENT_SLIPS["lstm forget gate without sigma"]
        ),
        "lstm cell state not carried": recurrent_mutant(
            "lstm_cell_not_carried", **RECURRENT_SLIPS["lstm cell state not carried"]
        ),
        "bptt truncated": recurrent_mutant("rnn_truncated", **RECURRENT_SLIPS["bptt truncated"]),
        "h_t in dU": recurrent_mutant("rnn_dU_from_h_t", **RECURRENT_SLIPS["h_t in dU"]),
        "dx of the last step only": mutant(
            "rnn_last_dx", recurrent_backward=_recurrent_backward_last_dx
        ),
    }


def _softmax_ce_over_samples(cache, y):
    return float(-np.sum(y * log_softmax(cache.logits)) / y.shape[0])  # noqa: F821  BUG: N, not N·T


def _softmax_ce_delta_over_samples(a, y):
    return (a * np.sum(y, axis=-1, keepdims=True) - y) / y.shape[0]  # BUG: N, not N·T


def sequence_loss_mutant() -> MutantBackend:
    """softmax_ce on a sequence averaged over the samples alone, as a port of a per-sample loss
    does, where Keras averages over the samples and the time steps."""
    return mutant("softmax_ce_over_samples", softmax_ce=_softmax_ce_over_samples,
                  softmax_ce_delta=_softmax_ce_delta_over_samples)  # fmt: skip
