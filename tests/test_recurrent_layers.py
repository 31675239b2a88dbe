"""SimpleRNN and LSTM as layers of a Network, in every backend.

The oracle is the network written out in this file in jax.numpy — the recurrences of
test_recurrent.py, a Dense layer at every step, the loss averaged as Keras averages it — and
differentiated by JAX: every backend's loss, gradients and predictions must match it, in both
dtypes, for a SimpleRNN and an LSTM returning their last state or every state, fed by an
Embedding or by values. Training runs with every optimizer on mini-batches must agree, Keras's
initialisation must hold (orthogonal U, the forget gate's bias at 1), and bad input is refused
before any work, naming what was expected.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DTYPES, SEEDS, in_turn
from test_recurrent import _lstm, _rnn

import gradcheck
from gradcheck import Network, datasets
from gradcheck.layers import LSTM, Dense, Embedding, Flatten, SimpleRNN
from gradcheck.optimizers import SGD, Adam, RMSprop

jax = pytest.importorskip("jax")
jnp = jax.numpy

BACKENDS = [b for b in ("numpy", "numba", "jax", "keras") if b in gradcheck.available_backends()]
#: Rounding over a few steps, with room (relative to each tensor's largest magnitude).
RTOL = {"float64": 1e-12, "float32": 2e-5}

#: Each network: its layers, input shape, loss, and whether its inputs are ids.
NETWORKS = {
    "rnn tanh, last state": ([SimpleRNN(5), Dense(3, "softmax")], (6, 4), "softmax_ce"),
    "rnn relu, every state": (
        [SimpleRNN(5, "relu", return_sequences=True), Dense(2, "sigmoid")], (6, 4), "bce"
    ),
    "lstm, last state": ([LSTM(5), Dense(1)], (6, 4), "mse"),
    "lstm, every state": ([LSTM(5, return_sequences=True), Dense(3, "softmax")], (6, 4),
                          "softmax_ce"),
    "embedding, lstm": ([Embedding(7, 3), LSTM(4, return_sequences=True), Dense(3, "softmax")],
                        (6,), "softmax_ce"),
}  # fmt: skip


def _problem(name, dtype, n=8, seed=0):
    layers, shape, loss = NETWORKS[name]
    net = Network(layers, input_shape=shape, loss=loss, dtype=dtype)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 7, (n, *shape)) if net.takes_ids else rng.normal(size=(n, *shape))
    K, outputs = net.outputs, (n, *net.output_shape[:-1])
    y = (
        np.eye(K)[rng.integers(0, K, outputs)]
        if loss == "softmax_ce"
        else rng.uniform(size=(*outputs, K))
    )
    params = net.init(seed)
    for layer in params:  # biases away from zero, so that a slip in b shows
        if "b" in layer:
            layer["b"] = layer["b"] + rng.normal(scale=0.3, size=layer["b"].shape).astype(dtype)
    return net, X, y, params


def _written_out(net, params, X, y):
    """C as this file defines it: the layers in turn, then the loss's mean over every sample and
    time step (and output, for mse and bce)."""
    a = X
    for layer, values in zip(net.stack, params, strict=True):
        if isinstance(layer, Embedding):
            a = values["E"][a]
        elif isinstance(layer, SimpleRNN | LSTM):
            weights = (values["W"], values["U"], values["b"])
            if isinstance(layer, LSTM):
                every = _lstm(weights, a)
            else:
                every = _rnn(weights, a, {"tanh": jnp.tanh, "relu": jax.nn.relu}[layer.activation])
            a = every if layer.return_sequences else every[:, -1]
        else:
            z = a @ values["W"] + values["b"]
            a = {"softmax": jax.nn.softmax, "sigmoid": jax.nn.sigmoid, "identity": lambda v: v}[
                layer.activation
            ](z)
    if net.loss == "softmax_ce":
        return -jnp.sum(y * jnp.log(a)) / (y.size // y.shape[-1]), a
    if net.loss == "bce":
        return -jnp.mean(y * jnp.log(a) + (1 - y) * jnp.log(1 - a)), a
    return jnp.mean((a - y) ** 2), a


def _expected(net, params, X, y):
    """The written-out loss, outputs and gradients, in float64."""
    with jax.enable_x64(True):
        wide = [{k: jnp.asarray(v, jnp.float64) for k, v in p.items()} for p in params]
        inputs = jnp.asarray(X) if net.takes_ids else jnp.asarray(X, jnp.float64)
        targets = jnp.asarray(y, jnp.float64)
        value_and_grad = jax.value_and_grad(
            lambda p: _written_out(net, p, inputs, targets), has_aux=True
        )
        (loss, outputs), grads = value_and_grad(wide)
        grads = [{k: np.asarray(v) for k, v in g.items()} for g in grads]
        return float(loss), np.asarray(outputs), grads


def _once(p, names, name):
    """A grid's default slice: each name once, the dtype and seed taken in turn."""
    return (p["dtype"], p["gradcheck_seed"]) == in_turn(names.index(name), DTYPES, SEEDS)


def _close(got, want, dtype, what):
    scale = np.max(np.abs(want))
    error = np.max(np.abs(np.asarray(got, np.float64) - want)) / scale
    assert error <= RTOL[dtype], (what, error)


@pytest.mark.sweep(keep=lambda p: _once(p, list(NETWORKS), p["name"]))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_backend_computes_the_network_written_out(name, dtype, gradcheck_seed):
    net, X, y, params = _problem(name, dtype, seed=gradcheck_seed)
    loss, outputs, grads = _expected(net, params, X, y)
    for backend_name in BACKENDS:
        backend = gradcheck.get_backend(backend_name)
        got_loss, got_grads = backend.loss_and_grads(net, params, X, y)
        _close(got_loss, np.float64(loss), dtype, (backend_name, "loss"))
        _close(backend.predict(net, params, X), outputs, dtype, (backend_name, "predictions"))
        for layer, (got, want) in enumerate(zip(got_grads, grads, strict=True), start=1):
            assert set(got) == set(want), (backend_name, layer)
            for key in want:
                _close(got[key], want[key], dtype, (backend_name, layer, key))


OPTIMIZERS = {"sgd": SGD(0.1, momentum=0.9, nesterov=True), "rmsprop": RMSprop(0.01),
              "adam": Adam(0.01)}  # fmt: skip


@pytest.mark.sweep(keep=lambda p: _once(p, list(OPTIMIZERS), p["optimizer"]))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_backend_trains_a_recurrent_network_with_every_optimizer(
    optimizer, dtype, gradcheck_seed
):
    net, X, y, params = _problem("embedding, lstm", dtype, n=20, seed=gradcheck_seed)
    report = gradcheck.verify(net, X, y, params, backends=BACKENDS, steps=9,
                              optimizer=OPTIMIZERS[optimizer], batch_size=7)  # fmt: skip
    assert report.ok, report.verdict_lines()


def test_init_is_kerass():
    """Keras's glorot_uniform W, orthogonal U and unit_forget_bias; every backend starts from
    these same arrays, so only this test can see them."""
    net = Network([LSTM(8, return_sequences=True), SimpleRNN(6), Dense(2)], input_shape=(5, 3),
                  loss="mse")  # fmt: skip
    lstm, rnn, _ = net.init(0)
    assert lstm["W"].shape == (3, 32)
    limit = np.sqrt(6 / (3 + 32))
    assert 0.9 * limit < np.max(np.abs(lstm["W"])) <= limit
    np.testing.assert_allclose(lstm["U"] @ lstm["U"].T, np.eye(8), atol=1e-12)  # (8, 32) rows
    np.testing.assert_allclose(rnn["U"] @ rnn["U"].T, np.eye(6), atol=1e-12)  # square
    np.testing.assert_array_equal(lstm["b"], np.repeat([0.0, 1.0, 0.0, 0.0], 8))
    np.testing.assert_array_equal(rnn["b"], np.zeros(6))
    again = net.init(0)
    assert all(np.array_equal(again[0][k], lstm[k]) for k in lstm)  # a seed draws the same
    uniform = net.init(0, scheme="uniform")[0]
    assert uniform["U"].min() >= 0
    assert uniform["U"].max() < 1
    np.testing.assert_array_equal(uniform["b"], np.repeat([0.0, 1.0, 0.0, 0.0], 8))


@pytest.mark.parametrize(
    ("layers", "shape", "y_shape", "message"),
    [
        ([SimpleRNN(4), Dense(2)], (6,), None,
         r"needs a sequence input \(T, D\); got shape \(6,\)"),
        ([LSTM(4), Dense(2)], (2, 2, 2), None, "needs a sequence input"),
        ([LSTM(4, return_sequences=True), Dense(2)], (5, 3), (3, 2),
         r"y must have shape \(3, 5, 2\) \(X's rows, time steps, the last layer's units\)"),
        ([LSTM(4), Dense(2)], (5, 3), (3, 5, 2), r"y must have shape \(3, 2\)"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_what_was_expected(layers, shape, y_shape, message):
    if y_shape is None:
        with pytest.raises(ValueError, match=message):
            Network(layers, input_shape=shape, loss="mse")
        return
    net = Network(layers, input_shape=shape, loss="mse")
    X, y = np.zeros((3, *shape)), np.zeros(y_shape)
    for name in ("numpy", "numba"):
        with pytest.raises(ValueError, match=message):
            gradcheck.get_backend(name).loss_and_grads(net, net.init(0), X, y)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="return_sequences must be True or False; got 1"):
        LSTM(4, return_sequences=1)
    with pytest.raises(ValueError, match="SimpleRNN activation must be one of"):
        SimpleRNN(4, "softmax")
    with pytest.raises(ValueError, match="units must be a positive integer; got 0"):
        SimpleRNN(0)
    with pytest.raises(ValueError, match="put Flatten"):  # an image still needs Flatten
        Network([Dense(2)], input_shape=(4, 4, 1), loss="mse")
    assert Network([Flatten(), Dense(2)], input_shape=(4, 3), loss="mse").output_shape == (2,)


def test_the_datasets_as_sequences():
    X, y = datasets.parity(samples=30, steps=7, seed=3)
    assert X.shape == (30, 7, 1)
    assert y.shape == (30, 7, 2)
    bits = X[..., 0].astype(int)
    for n in range(30):
        for t in range(7):
            odd = sum(bits[n, : t + 1]) % 2  # the running parity, written out
            assert y[n, t, 1] == odd
            assert y[n, t, 0] == 1 - odd
    images, _ = datasets.digits(images=True)
    rows, labels = datasets.digits(sequences=True)
    assert rows.shape == (1797, 8, 8)
    np.testing.assert_array_equal(rows, images[..., 0])  # step t is the image's row t
    assert labels.shape == (1797, 10)
    with pytest.raises(ValueError, match="one form at a time"):
        datasets.digits(images=True, sequences=True)


#: Each slip, with the words its explanation must hold; the same words must not explain any
#: other mutant (each is told apart from the others, not just caught).
EXPLAINED = {
    "lstm blocks c and o swapped": "blocks c and o swapped",
    "lstm forget gate without sigma": "forget gate without its σ",
    "lstm cell state not carried": "cell state not carried",
    "bptt truncated": "backpropagation through time truncated",
    "h_t in dU": "h_t read in layer 2's SimpleRNN's ∂C/∂U",
    "dx of the last step only": "∂C/∂x keeping only the last step's contribution",
}


#: Where each slip first parts from the reference: (stage, layer, tensor, time step, blocks).
#: The bit streams have 10 steps; the recurrent layer is layer 2.
FIRST = {
    "lstm blocks c and o swapped": ("forward", 2, "z", 1, ("c", "o")),
    "lstm forget gate without sigma": ("forward", 2, "gates", 1, ("f",)),
    "lstm cell state not carried": ("forward", 2, "h", 2, ()),  # c_1 = i ⊙ c̃ all the same
    "bptt truncated": ("backward", 2, "δ", 9, ()),  # δ_10 has nothing to carry
    "h_t in dU": ("backward", 2, "U", None, ()),
    "dx of the last step only": ("backward", 1, "E", None, ()),
}


@pytest.mark.sweep(
    keep=lambda p: (p["layer"], p["dtype"]) in {("rnn", "float64"), ("lstm", "float32")}
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", ["rnn", "lstm"])
def test_verify_names_and_explains_each_classic_slip_of_bptt(layer, dtype):
    """Bit streams as ids through an Embedding, a recurrent layer returning every state and a
    softmax at every step, trained with Adam: every slip of the layer's kind is named alone
    among the correct backends, located at its time step and gate blocks, and explained in one
    line by its own words; the last step's dx is seen in the Embedding's gradient below."""
    from mutants import recurrent_mutants

    recurrent = SimpleRNN(8, return_sequences=True) if layer == "rnn" else LSTM(8, True)
    net = Network([Embedding(2, 4), recurrent, Dense(2, "softmax")], input_shape=(10,),
                  loss="softmax_ce", dtype=dtype)  # fmt: skip
    X, y = datasets.parity(samples=60, steps=10)
    mutants = recurrent_mutants()
    kind = {
        "rnn": ("bptt truncated", "h_t in dU"),
        "lstm": tuple(k for k in mutants if "lstm" in k),
    }
    caught = {name: mutants[name] for name in (*kind[layer], "dx of the last step only")}
    correct = [b for b in ("numpy", "numba") if b in gradcheck.available_backends()]
    report = gradcheck.verify(
        net,
        X[..., 0].astype(int),
        y,
        backends=[*correct, *caught.values()],
        steps=4,
        optimizer=Adam(0.01),
        batch_size=20,
        finite_differences=None,
    )  # the witness is not what is tested here
    assert {check.backend for check in report.failures} == {b.name for b in caught.values()}
    explained = {e.backend: e.text for e in report.explanations if e.fits}
    first = {f.backend: (f.stage, f.layer, f.tensor, f.step, f.blocks)
             for f in report.first_differences}  # fmt: skip
    for name, backend in caught.items():
        assert first[backend.name] == FIRST[name], name
        assert EXPLAINED[name] in explained.get(backend.name, ""), (name, explained)
        others = [words for other, words in EXPLAINED.items() if other != name]
        assert not any(words in explained[backend.name] for words in others), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_loss_per_step_averaged_over_the_samples_alone_is_named(dtype):
    """CS231n's temporal softmax loss sums over the time steps and averages over the samples;
    Keras's averages over both. A port of the former is T times the reference, and verify says
    why, for the loss and every gradient."""
    from mutants import sequence_loss_mutant

    net = Network([Embedding(2, 4), LSTM(8, return_sequences=True), Dense(2, "softmax")],
                  input_shape=(10,), loss="softmax_ce", dtype=dtype)  # fmt: skip
    X, y = datasets.parity(samples=60, steps=10)
    mutant = sequence_loss_mutant()
    report = gradcheck.verify(net, X[..., 0].astype(int), y, backends=["numpy", mutant], steps=4,
                              optimizer=Adam(0.01), batch_size=20,
                              finite_differences=None)  # fmt: skip
    assert {check.backend for check in report.failures} == {mutant.name}
    words = "a mean over the N = 60 samples alone where the reference averages over the N·T = 600"
    explained = [e for e in report.explanations if e.fits]
    assert {e.quantity for e in explained if words in e.text} >= {"loss", "gradient"}
    assert all(e.factor == 10 for e in explained)
