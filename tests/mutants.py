"""Realistic backprop bugs, each one small change to the correct NumPy kernels.

A mutant is a copy of ``kernels.numpy_backprop`` whose functions see the copy's globals, with one
function replaced; it is served through the same input checks as the built-in backends.
"""

from __future__ import annotations

import types

import numpy as np

from gradcheck.backends import KernelBackend
from gradcheck.kernels import numpy_backprop as nb


def _copy_kernels(name: str) -> types.ModuleType:
    module = types.ModuleType(f"mutant_{name}")
    namespace = module.__dict__
    namespace.update(vars(nb))
    for key, value in vars(nb).items():
        if isinstance(value, types.FunctionType) and value.__module__ == nb.__name__:
            namespace[key] = types.FunctionType(
                value.__code__, namespace, value.__name__, value.__defaults__, value.__closure__
            )
    namespace["name"] = name
    return module


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
    for key, value in replacements.items():
        if key not in vars(nb):
            raise KeyError(f"numpy_backprop has no {key!r} to replace")
        if isinstance(value, types.FunctionType):  # its globals are the mutant's
            value = types.FunctionType(
                value.__code__, module.__dict__, value.__name__, value.__defaults__
            )
        module.__dict__[key] = value
    _point_tables_at(module.__dict__)
    return MutantBackend(name, module)


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


def _backward_wrong_layer_activation(net, params, cache, delta, deltas=None):
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


def _backward_sigmoid_prime_given_z(net, params, cache, delta, deltas=None):
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
