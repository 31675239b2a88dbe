"""Optimizers and mini-batches: the specifications validate their hyper-parameters, the batch
schedule is what its docstring says, and the NumPy kernels reproduce each optimizer's equations
written out literally here — one loop in plain NumPy, no gradcheck code."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types

import numpy as np
import pytest
from helpers import DTYPES, SEEDS, NumpyDelegate, in_turn

import gradcheck
from gradcheck import Network
from gradcheck.backends import KernelBackend
from gradcheck.kernels import numpy_backprop
from gradcheck.optimizers import SGD, Adam, RMSprop, batch_schedule, make
from gradcheck.tolerance import SAFETY, relative_error, tolerances

NET = Network([4, 3], activation="tanh", loss="mse")

CONFIGS = {
    "sgd": SGD(0.3),
    "momentum": SGD(0.3, momentum=0.9),
    "nesterov": SGD(0.3, momentum=0.9, nesterov=True),
    "sgd with weight decay": SGD(0.3, weight_decay=0.01),
    "rmsprop": RMSprop(0.01),
    "rmsprop, ε outside": RMSprop(0.01, epsilon_placement="outside"),
    "rmsprop, centered, momentum": RMSprop(0.01, centered=True, momentum=0.5),
    "adam": Adam(0.01),
    "adam, paper's ε": Adam(0.01, epsilon_placement="paper", epsilon=1e-3),
    "adam, amsgrad": Adam(0.01, amsgrad=True),
    "adam, paper's ε, amsgrad": Adam(0.01, amsgrad=True, epsilon_placement="paper"),
    "adamw": Adam(0.01, weight_decay=0.05),
}


def literal_run(config, W, b, X, y, steps, batch_size, seed):
    """The optimizer's equations for a tanh layer with the mean squared error, written out.

    Also returns how much the run amplifies rounding beyond a plain step: the centered RMSprop
    divides by √(v − a² + ε), and v − a² cancels to far less than the v its rounding scales
    with when the gradient varies little; the largest v / (v − a² + ε) met."""
    W, b = W.copy(), b.copy()
    amplification = 1.0
    state = {"W": {}, "b": {}}
    order, losses = [], []
    rng = np.random.default_rng(seed)
    while len(order) < steps:  # a fresh permutation per epoch, cut into batches
        perm = rng.permutation(len(X))
        order += [perm[i : i + batch_size] for i in range(0, len(X), batch_size)]
    for t, batch in enumerate(order[:steps], start=1):
        x, target = X[batch], y[batch]
        a = np.tanh(x @ W + b)
        losses.append(np.mean((a - target) ** 2))
        delta = 2 * (a - target) / target.size * (1 - a * a)
        grads = {"W": x.T @ delta, "b": delta.sum(axis=0)}
        params = {"W": W, "b": b}
        for key in ("W", "b"):
            theta, g, s = params[key], grads[key], state[key]
            theta = theta - config.lr * config.weight_decay * theta
            if isinstance(config, SGD):
                if config.momentum:
                    s["m"] = config.momentum * s.get("m", 0) - config.lr * g
                    step = config.momentum * s["m"] - config.lr * g if config.nesterov else s["m"]
                    theta = theta + step
                else:
                    theta = theta - config.lr * g
            elif isinstance(config, RMSprop):
                s["v"] = config.rho * s.get("v", 0) + (1 - config.rho) * g**2
                v = s["v"]
                if config.centered:
                    s["a"] = config.rho * s.get("a", 0) + (1 - config.rho) * g
                    v = v - s["a"] ** 2
                    amplification = max(amplification, np.max(s["v"] / (v + config.epsilon)))
                if config.epsilon_placement == "inside":
                    increment = config.lr * g / np.sqrt(v + config.epsilon)
                else:
                    increment = config.lr * g / (np.sqrt(v) + config.epsilon)
                if config.momentum:
                    s["b"] = config.momentum * s.get("b", 0) + increment
                    increment = s["b"]
                theta = theta - increment
            else:
                s["m"] = config.beta_1 * s.get("m", 0) + (1 - config.beta_1) * g
                s["v"] = config.beta_2 * s.get("v", 0) + (1 - config.beta_2) * g**2
                if config.epsilon_placement == "keras":
                    v = s["v"]
                    if config.amsgrad:
                        v = s["v_max"] = np.maximum(s.get("v_max", 0), v)
                    alpha = config.lr * math.sqrt(1 - config.beta_2**t) / (1 - config.beta_1**t)
                    theta = theta - alpha * s["m"] / (np.sqrt(v) + config.epsilon)
                else:
                    m_hat = s["m"] / (1 - config.beta_1**t)
                    v_hat = s["v"] / (1 - config.beta_2**t)
                    if config.amsgrad:
                        v_hat = s["v_max"] = np.maximum(s.get("v_max", 0), v_hat)
                    theta = theta - config.lr * m_hat / (np.sqrt(v_hat) + config.epsilon)
            params[key] = theta
        W, b = params["W"], params["b"]
    return W, b, np.array(losses), amplification


BACKENDS = gradcheck.available_backends()


def _each_configuration_once(p):
    """The default slice: each configuration once, with the backend, the batch size, the dtype
    and the seed taken in turn."""
    settings = (p["backend"], p["batch_size"], p["gradcheck_dtype"], p["gradcheck_seed"])
    return settings == in_turn(list(CONFIGS).index(p["name"]), BACKENDS, (None, 7), DTYPES, SEEDS)


@pytest.mark.sweep(keep=_each_configuration_once)
@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_reproduce_the_equations_written_out(
    backend, name, batch_size, gradcheck_dtype, gradcheck_seed
):
    """In float64 and float32 (against the float64 transcription, at float32's tolerance)."""
    net = dataclasses.replace(NET, dtype=gradcheck_dtype)
    rng = np.random.default_rng(gradcheck_seed)
    X, y = rng.normal(size=(20, 4)), rng.uniform(-0.9, 0.9, size=(20, 3))
    params = [{"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}]
    cast = net.np_dtype.type
    X, y, params = cast(X), cast(y), [{k: cast(v) for k, v in params[0].items()}]
    config, steps = CONFIGS[name], 25
    W, b, losses, amplification = literal_run(
        config, *[np.float64(params[0][k]) for k in ("W", "b")],
        np.float64(X), np.float64(y), steps, batch_size or len(X), gradcheck_seed,
    )  # fmt: skip
    run = gradcheck.get_backend(backend).train(
        net, params, X, y, steps, optimizer=config, batch_size=batch_size, seed=gradcheck_seed
    )
    # the same equations, up to how each side orders its sums: the policy's run tolerance,
    # times what the run amplifies rounding by
    tolerance = tolerances(net, len(X), steps).trajectory * amplification
    assert relative_error(run.losses, losses, elementwise=True)[0] <= tolerance
    scale = max(np.abs(W).max(), np.abs(b).max())  # a layer's params on one scale
    for ours, theirs in ((run.params[0]["W"], W), (run.params[0]["b"], b)):
        assert np.max(np.abs(ours - theirs)) <= tolerance * scale


CONFUSED = [  # what the kernel runs, what the transcription writes: conventions one apart
    ("adam", "adam, paper's ε"),
    ("rmsprop", "rmsprop, ε outside"),
    ("momentum", "nesterov"),
    ("sgd", "sgd with weight decay"),
    ("adam", "adamw"),
]


@pytest.mark.parametrize(("kernel", "written"), CONFUSED)
def test_the_comparison_tells_conventions_apart(kernel, written, gradcheck_seed):
    """The test above would catch a kernel that ran a neighbouring convention."""
    rng = np.random.default_rng(gradcheck_seed)
    X, y = rng.normal(size=(20, 4)), rng.uniform(-0.9, 0.9, size=(20, 3))
    params = [{"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}]
    _, _, losses, _ = literal_run(CONFIGS[written], params[0]["W"], params[0]["b"], X, y, 25, 7, 0)
    run = gradcheck.get_backend("numpy").train(
        NET, params, X, y, 25, optimizer=CONFIGS[kernel], batch_size=7, seed=0
    )
    tolerance = tolerances(NET, len(X), 25).trajectory
    assert relative_error(run.losses, losses, elementwise=True)[0] > 100 * tolerance


def test_plain_sgd_is_the_notebooks_training_exactly():
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], bias=False)
    params = net.init(seed=0, scheme="uniform")
    backend = gradcheck.get_backend("numpy")
    by_lr = backend.train(net, params, X, y, 50, 1.0)
    by_optimizer = backend.train(net, params, X, y, 50, optimizer=SGD(1.0))
    assert np.array_equal(by_lr.losses, by_optimizer.losses)
    assert np.array_equal(by_lr.params[1]["W"], by_optimizer.params[1]["W"])


def test_the_batch_schedule():
    schedule = batch_schedule(10, 4, steps=7, seed=3)
    assert [len(batch) for batch in schedule] == [4, 4, 2, 4, 4, 2, 4]
    for epoch in (schedule[0:3], schedule[3:6]):
        assert sorted(np.concatenate(epoch)) == list(range(10))  # every sample once an epoch
    assert not np.array_equal(np.concatenate(schedule[0:3]), np.concatenate(schedule[3:6]))
    again = batch_schedule(10, 4, steps=7, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(schedule, again, strict=True))
    assert batch_schedule(10, None, steps=2, seed=3) == [slice(None), slice(None)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SGD(-0.1), "lr must be a positive finite number; got -0.1"),
        (lambda: SGD(0.1, momentum=1.0), "momentum must be in [0, 1); got 1.0"),
        (lambda: SGD(0.1, nesterov=True), "nesterov needs a momentum"),
        (lambda: SGD(0.1, weight_decay=-1), "weight_decay must be in [0, inf); got -1"),
        (lambda: RMSprop(0.1, rho=1.5), "rho must be in [0, 1); got 1.5"),
        (lambda: RMSprop(0.1, epsilon=-1e-7), "epsilon must be in [0, inf); got -1e-07"),
        (lambda: RMSprop(0.1, epsilon_placement="under"), "epsilon_placement must be one of"),
        (lambda: Adam(0.1, beta_1=-0.1), "beta_1 must be in [0, 1); got -0.1"),
        (lambda: Adam(0.1, beta_2=1.0), "beta_2 must be in [0, 1); got 1.0"),
        (lambda: Adam(0.1, amsgrad="yes"), "amsgrad must be True or False; got 'yes'"),
        (lambda: Adam(math.nan), "lr must be a positive finite number; got nan"),
        (lambda: make("adagrad", 0.1), "optimizer must be one of sgd, momentum, nesterov, rmsprop"),
        (lambda: make("sgd", 0.1, beta_1=0.9), "beta_1 does not apply to the sgd optimizer"),
        (lambda: make("momentum", 0.1, momentum=0.0), "the momentum optimizer needs a momentum"),
        (lambda: batch_schedule(10, 0, 3, 0), "batch_size must be None or an integer from 1"),
        (lambda: batch_schedule(10, 2, 3, -1), "seed must be a non-negative integer; got -1"),
    ],
)
def test_bad_hyper_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_lr_and_optimizer_together_are_refused_before_any_work():
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], bias=False)
    params = net.init(seed=0, scheme="uniform")
    before = [layer["W"].copy() for layer in params]
    backend = gradcheck.get_backend("numpy")
    with pytest.raises(ValueError, match="give lr or optimizer, not both"):
        backend.train(net, params, X, y, 5, lr=1.0, optimizer=Adam(0.1))
    with pytest.raises(ValueError, match="train needs lr or optimizer"):
        backend.train(net, params, X, y, 5)
    with pytest.raises(TypeError, match=re.escape("optimizer must be a gradcheck.optimizers")):
        backend.train(net, params, X, y, 5, optimizer="adam")
    assert all(np.array_equal(a, layer["W"]) for a, layer in zip(before, params, strict=True))


def test_kernels_without_optimizers_say_so(monkeypatch):
    """A kernels module with plain gradient descent only (no ``train_with``) still trains with
    lr, and refuses any other optimizer by name."""
    plain = types.ModuleType("plain_kernels")
    plain.train = numpy_backprop.train
    monkeypatch.setitem(sys.modules, "plain_kernels", plain)
    backend = KernelBackend("plain", "plain_kernels")
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], bias=False)
    params = net.init(seed=0, scheme="uniform")
    assert len(backend.train(net, params, X, y, 5, lr=1.0).losses) == 5
    with pytest.raises(NotImplementedError, match="the plain backend trains with plain"):
        backend.train(net, params, X, y, 5, optimizer=Adam(0.1))
    with pytest.raises(NotImplementedError, match="the plain backend trains with plain"):
        backend.train(net, params, X, y, 5, lr=1.0, batch_size=2)


# --- verify on optimizer runs: no false alarm, and the mistakes people make are caught ---------

CLASSIFIER = Network([8, 16, 4], activation=("tanh", "softmax"), loss="softmax_ce")
ADAMW = Adam(0.01, weight_decay=0.1)


def _classification(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(96, 8))
    y = np.eye(4)[np.argmax(X[:, :4] + 0.5 * rng.normal(size=(96, 4)), axis=1)]
    return X, y


class Mistaken(NumpyDelegate):
    """The NumPy kernels, training with a mistaken version of the run they are asked for."""

    name = "mistaken"

    def __init__(self, mistake):
        super().__init__()
        self.mistake = mistake

    def train(self, net, params, X, y, steps, lr=None, optimizer=None, batch_size=None, seed=0):
        optimizer, batch_size, seed = self.mistake(optimizer, batch_size, seed)
        return self.numpy.train(
            net, params, X, y, steps, optimizer=optimizer, batch_size=batch_size, seed=seed
        )


def _float32(optimizer):
    """Every float hyper-parameter rounded to float32, as float32 variables hold them."""
    return dataclasses.replace(
        optimizer,
        **{
            key: float(np.float32(value))
            for key, value in optimizer.settings().items()
            if isinstance(value, float)
        },
    )


#: Mistakes in an AdamW run on mini-batches: the run made instead, the dtypes whose precision
#: can see it, and the explanation verify must give (None: no simple one fits).
MISTAKES = {
    "the paper's ε": (
        lambda o, b, s: (dataclasses.replace(o, epsilon_placement="paper"), b, s),
        ("float64",),
        "with ε placed as the paper and optax do",
    ),
    "hyper-parameters rounded to float32": (
        lambda o, b, s: (_float32(o), b, s),
        ("float64",),
        "with its hyper-parameters rounded to float32",
    ),
    "AMSGrad": (
        lambda o, b, s: (dataclasses.replace(o, amsgrad=True), b, s),
        ("float64",),
        "with amsgrad=True",
    ),
    "the weight decay left out": (
        lambda o, b, s: (dataclasses.replace(o, weight_decay=0.0), b, s),
        ("float64", "float32"),
        "with no weight decay",
    ),
    "the full batch": (lambda o, b, s: (o, None, s), ("float64", "float32"), "the full batch"),
    "the learning rate 10% off": (
        lambda o, b, s: (dataclasses.replace(o, lr=1.1 * o.lr), b, s),
        ("float64", "float32"),
        None,
    ),
    "its own batch order": (lambda o, b, s: (o, b, s + 1), ("float64", "float32"), None),
}


@pytest.mark.sweep(keep=lambda p: p["gradcheck_seed"] == DTYPES.index(p["gradcheck_dtype"]))
def test_verify_passes_every_backend_on_an_adamw_run(gradcheck_dtype, gradcheck_seed):
    X, y = _classification(gradcheck_seed)
    net = dataclasses.replace(CLASSIFIER, dtype=gradcheck_dtype)
    report = gradcheck.verify(
        net, X, y, params=net.init(seed=gradcheck_seed), steps=18, optimizer=ADAMW,
        batch_size=16, seed=gradcheck_seed, finite_differences=None,
    )  # fmt: skip
    assert report.ok, str(report)


@pytest.mark.parametrize(
    ("mistake", "dtype"), [(m, d) for m, (_, dtypes, _) in MISTAKES.items() for d in dtypes]
)
def test_verify_catches_and_explains_a_mistaken_run(mistake, dtype, gradcheck_seed):
    change, _, explanation = MISTAKES[mistake]
    X, y = _classification(gradcheck_seed)
    net = dataclasses.replace(CLASSIFIER, dtype=dtype)
    report = gradcheck.verify(
        net, X, y, params=net.init(seed=gradcheck_seed), backends=[Mistaken(change)], steps=18,
        optimizer=ADAMW, batch_size=16, seed=gradcheck_seed, finite_differences=None,
    )  # fmt: skip
    failed = {check.quantity for check in report.failures}
    assert failed, str(report)
    assert failed <= {"train losses", "train params"}, str(report)
    (why,) = report.explanations
    if explanation is None:
        assert why.kind == "none", why.text
    else:
        assert why.kind == "convention", why.text
        assert explanation in why.text, why.text


def test_verify_measures_a_run_that_amplifies_rounding(gradcheck_dtype, gradcheck_seed):
    """RMSprop near a minimum keeps stepping ±η with signs set by rounding: on the notebook's
    network correct backends part by far more than the √T estimate allows, and verify, having
    measured the reference's own response to one rounding, does not cry wolf."""
    X, y = gradcheck.datasets.seed_xor()
    net = Network([3, 4, 1], bias=False, dtype=gradcheck_dtype)
    report = gradcheck.verify(
        net, X, y, params=net.init(seed=gradcheck_seed, scheme="uniform"), steps=2000,
        optimizer=RMSprop(0.01), finite_differences=None,
    )  # fmt: skip
    assert report.ok, str(report)
    # the trajectory tolerance is what the reference's own runs measured, with the safety factor
    measured = SAFETY * report.sensitivity
    assert report.tolerance_of("numpy", "train losses") >= measured * (1 - 1e-12)
    # a short plain run is measured too, and there the √T estimate is the larger
    plain = gradcheck.verify(net, X, y, backends=["numpy"], steps=5, finite_differences=None)
    assert 0 < SAFETY * plain.sensitivity < plain.tolerance_of("numpy", "train losses")
