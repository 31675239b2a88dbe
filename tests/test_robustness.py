"""Bad input, extreme values, divergence and determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DTYPES, OUTPUTS, NumpyDelegate, in_turn

import gradcheck
from gradcheck import Network
from gradcheck.cli import main

NET = Network([3, 4, 2], activation=["tanh", "sigmoid"], loss="bce")
X = np.random.default_rng(0).normal(size=(5, 3))
Y = np.random.default_rng(1).uniform(size=(5, 2))
PARAMS = NET.init(seed=0)


def _with(layer: int, key: str, value):
    params = [dict(p) for p in PARAMS]
    params[layer][key] = value
    return params


BAD_DATA = [
    ("X not 2-D", X.ravel(), Y, PARAMS, ValueError, r"X must be 2-D"),
    ("X width", X[:, :2], Y, PARAMS, ValueError, r"X must have layers\[0\] = 3 columns"),
    ("y rows", X, Y[:4], PARAMS, ValueError, r"y must have shape \(5, 2\) .* got shape \(4, 2\)"),
    ("y width", X, Y[:, :1], PARAMS, ValueError, r"y must have shape \(5, 2\)"),
    ("NaN in X", np.where(X > 1, np.nan, X), Y, PARAMS, ValueError, "X must be finite"),
    ("Inf in y", X, np.where(Y > 0.5, np.inf, Y), PARAMS, ValueError, "y must be finite"),
    (
        "NaN in params",
        X,
        Y,
        _with(1, "b", np.array([0.0, np.nan])),
        ValueError,
        "params layer 2 b must be finite",
    ),
    (
        "strings",
        np.array([["a", "b", "c"]] * 5),
        Y,
        PARAMS,
        TypeError,
        "X must be a numeric array; got dtype <U1",
    ),
    ("complex", X.astype(complex), Y, PARAMS, TypeError, "X must be a numeric array"),
    ("empty X", np.empty((0, 3)), np.empty((0, 2)), PARAMS, ValueError, "X must not be empty"),
    ("bce targets", X, Y + 1, PARAMS, ValueError, r"y must lie in \[0, 1\] for loss 'bce'"),
    ("params layers", X, Y, PARAMS[:1], ValueError, "params must be a list of 2 layer dicts"),
    (
        "params shape",
        X,
        Y,
        _with(0, "W", np.zeros((4, 3))),
        ValueError,
        r"params layer 1 W must have shape \(3, 4\); got \(4, 3\)",
    ),
    (
        "params keys",
        X,
        Y,
        _with(0, "c", np.zeros(4)),
        ValueError,
        r"params layer 1 must have keys \['W', 'b'\]",
    ),
]


@pytest.mark.parametrize(
    ("X", "y", "params", "error", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_DATA],
)
def test_every_backend_and_verify_reject_bad_data_before_work(
    backend, X, y, params, error, message
):
    with pytest.raises(error, match=message):
        backend.loss_and_grads(NET, params, X, y)
    with pytest.raises(error, match=message):
        backend.train(NET, params, X, y, steps=1, lr=0.1)
    with pytest.raises(error, match=message):
        gradcheck.verify(NET, X, y, params=params, backends=[backend], steps=1)


@pytest.mark.parametrize(
    ("steps", "lr", "message"),
    [
        (-1, 0.1, "steps must be a non-negative integer; got -1"),
        (2.5, 0.1, "steps must be a non-negative integer; got 2.5"),
        (True, 0.1, "steps must be a non-negative integer; got True"),
        (3, 0.0, "lr must be a positive finite number; got 0.0"),
        (3, -1.0, "lr must be a positive finite number; got -1.0"),
        (3, float("inf"), "lr must be a positive finite number; got inf"),
        (3, "0.1", "lr must be a positive finite number; got '0.1'"),
    ],
)
def test_bad_steps_and_lr(backend, steps, lr, message):
    with pytest.raises(ValueError, match=message):
        backend.train(NET, PARAMS, X, Y, steps=steps, lr=lr)


def test_unknown_backend_names_the_name():
    with pytest.raises(ValueError, match="got 'pytorch'"):
        gradcheck.get_backend("pytorch")


ACTIVATION_LOSS = [(output, loss) for loss, outputs in OUTPUTS.items() for output in outputs]


@pytest.mark.sweep(
    keep=lambda p: (p["dtype"],) == in_turn(ACTIVATION_LOSS.index((p["output"], p["loss"])), DTYPES)
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("output", "loss"), ACTIVATION_LOSS)
def test_pre_activations_of_1e4_stay_finite_and_silent(backend, output, loss, dtype):
    """z = ±1e4 on every output; warnings are errors in this suite, so none may be raised."""
    net = Network([2, 2], activation=output, loss=loss, dtype=dtype)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    params = [{"W": np.array([[1e4, -1e4], [-1e4, 1e4]]), "b": np.zeros(2)}]
    predictions = backend.predict(net, params, X)
    loss_value, grads = backend.loss_and_grads(net, params, X, y)
    run = backend.train(net, params, X, y, steps=2, lr=1e-9)
    assert np.all(np.isfinite(predictions))
    assert np.isfinite(loss_value)
    assert all(np.all(np.isfinite(g)) for layer in grads for g in layer.values())
    assert np.all(np.isfinite(run.losses))


def test_a_huge_learning_rate_is_reported_as_divergence_not_blamed():
    net = Network([3, 4, 1], activation=["tanh", "identity"], loss="mse", bias=False)
    X, y = gradcheck.datasets.seed_xor()
    report = gradcheck.verify(
        net, X, y, params=net.init(seed=0, scheme="uniform"), steps=50, lr=1e6
    )
    assert np.isinf(report.reference_losses).any()
    assert report.ok, str(report)  # every backend diverges as the reference does
    # the loss grows 10¹³-fold a step, reproducibly, until it overflows: compared until then
    step = report.horizon.diverged
    assert report.horizon.steps == step
    assert f"training compared over steps 0–{step - 1}: after that the reference diverges at " in (
        str(report)
    )
    assert f"step {step}: try a smaller lr" in str(report)
    assert "nan" not in str(report).lower()


@pytest.mark.parametrize(
    "name", [n for n in ("numpy", "numba") if n in gradcheck.available_backends()]
)
def test_numpy_and_numba_are_bit_identical_run_to_run(name):
    X, y = gradcheck.datasets.digits()
    X, y = X[:400], y[:400]
    net = Network([64, 32, 10], activation=["relu", "softmax"], loss="softmax_ce")
    params = net.init(seed=5)
    backend = gradcheck.get_backend(name)
    first, again = (backend.train(net, params, X, y, steps=20, lr=0.5) for _ in range(2))
    assert np.array_equal(first.losses, again.losses)
    for a, b in zip(first.params, again.params, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_verify_is_reproducible():
    net = Network([3, 5, 1], activation=["relu", "sigmoid"], loss="bce")
    X, y = gradcheck.datasets.seed_xor()
    reports = [gradcheck.verify(net, X, y, steps=50, lr=0.5).to_dict() for _ in range(2)]
    for report in reports:
        report.pop("seconds")
        report.pop("stages")
    assert json.dumps(reports[0]) == json.dumps(reports[1])


def test_cli_data_file(tmp_path, capsys):
    good = tmp_path / "xor.npz"
    X, y = gradcheck.datasets.seed_xor()
    np.savez(good, X=X.astype(int), y=y.astype(int))
    assert main(["verify", "--data", str(good), "--backends", "numpy", "--steps", "5"]) == 0
    capsys.readouterr()

    no_y = tmp_path / "no_y.npz"
    np.savez(no_y, X=X)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, X=np.array([{"a": 1}], dtype=object), y=y)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not an archive")
    for path, message in [
        (no_y, "must hold arrays X and y; it has ['X']"),
        (pickled, "holds pickled objects, which are not loaded"),
        (garbage, "is not an .npz file"),
        (tmp_path / "missing.npz", "no such file"),
    ]:
        assert main(["verify", "--data", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1


# --- a user's backend that misbehaves ----------------------------------------------------------


class _FlatPredictions(NumpyDelegate):
    def predict(self, net, params, X):
        return super().predict(net, params, X).ravel()


class _MissingLayer(NumpyDelegate):
    def loss_and_grads(self, net, params, X, y):
        loss, grads = super().loss_and_grads(net, params, X, y)
        return loss, grads[:1]


class _MissingBias(NumpyDelegate):
    def loss_and_grads(self, net, params, X, y):
        loss, grads = super().loss_and_grads(net, params, X, y)
        return loss, [grads[0], {"W": grads[1]["W"]}]


class _LossAsText(NumpyDelegate):
    def loss_and_grads(self, net, params, X, y):
        return "0.5", super().loss_and_grads(net, params, X, y)[1]


class _RaisesInTrain(NumpyDelegate):
    def train(self, net, params, X, y, steps, lr):
        raise ZeroDivisionError("division by zero")


MISBEHAVING = {
    "predictions flattened": (
        _FlatPredictions,
        "mine's predictions must have shape (5, 2); got (10,)",
    ),
    "a layer's gradients missing": (
        _MissingLayer,
        "mine's gradient must be a list of one dict per layer with parameters (2); got 1",
    ),
    "a bias gradient missing": (
        _MissingBias,
        "mine's gradient of layer 2 must have keys ['W', 'b']; got ['W']",
    ),
    "a loss that is not a number": (_LossAsText, "mine's loss must be a number; got str '0.5'"),
    "train raises": (_RaisesInTrain, "mine's train raised ZeroDivisionError: division by zero"),
}


@pytest.mark.parametrize("case", list(MISBEHAVING))
def test_a_misbehaving_backend_is_named_and_the_rest_of_the_verdict_kept(case):
    backend, message = MISBEHAVING[case]
    report = gradcheck.verify(NET, X, Y, params=PARAMS, backends=["numpy", backend()], steps=5)
    assert not report.ok
    [failed] = report.failures
    assert (failed.backend, failed.detail) == ("mine", message)
    assert message in report.verdict_lines()
    assert report.verdict_lines()[0] == "DISAGREE: mine"
    numpy = [c for c in report.checks if c.backend == "numpy"]
    assert {c.quantity for c in numpy} >= {"predictions", "gradient", "train losses"}
    assert all(c.ok for c in numpy)


def test_raise_backend_errors_raises_the_backends_own_error():
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        gradcheck.verify(NET, X, Y, params=PARAMS, backends=["numpy", _RaisesInTrain()],
                         steps=5, raise_backend_errors=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"mine's predictions must have shape \(5, 2\)"):
        gradcheck.verify(NET, X, Y, params=PARAMS, backends=[_FlatPredictions()],
                         steps=5, raise_backend_errors=True)  # fmt: skip
