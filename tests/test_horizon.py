"""Training runs that amplify rounding: no correct backend is blamed, each comparison stops at the
run's horizon and says so, and bugs in the loop are still caught inside it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DTYPES, in_turn
from mutants import loop_mutants

import gradcheck
from gradcheck import Network
from gradcheck.cli import main
from gradcheck.explain import simple_factors
from gradcheck.tolerance import HORIZON_LIMIT, MIN_HORIZON, horizon

HIDDEN = ["sigmoid", "tanh", "relu", "softplus", "identity"]
SWEEP = 200
#: The default suite's slice of the sweep: each dtype on the notebook's data and on digits.
DEFAULT_SLICE = 8


def _configuration(i: int) -> tuple[Network, np.ndarray, np.ndarray, float]:
    """Random network ``i`` of the sweep: depth 1–3, hidden widths 2–8 and activations, a sigmoid
    output, half_sse, mse or bce, bias on or off, lr 0.1–2, either dtype; the notebook's data,
    or one time in four 60 digits."""
    rng = np.random.default_rng(1000 + i)
    digits = i % 4 == 3
    if digits:
        X, y = gradcheck.datasets.digits()
        X, y = X[:60], y[:60]
    else:
        X, y = gradcheck.datasets.seed_xor()
    depth = int(rng.integers(1, 4))
    widths = [X.shape[1], *(int(rng.integers(2, 9)) for _ in range(depth - 1)), y.shape[1]]
    activations = [str(rng.choice(HIDDEN)) for _ in range(depth - 1)] + ["sigmoid"]
    net = Network(
        widths,
        activation=activations,
        loss=str(rng.choice(["half_sse", "mse", "bce"])),
        bias=bool(rng.integers(0, 2)),
        dtype=DTYPES[i // 4 % 2],  # digits in float64 at i = 3, 11, …, in float32 at 7, 15, …
    )
    return net, X, y, float(rng.choice([0.1, 0.5, 1.0, 2.0]))


@pytest.mark.sweep(keep=lambda p: p["i"] < DEFAULT_SLICE)
@pytest.mark.parametrize("i", range(SWEEP))
def test_correct_backends_are_never_blamed(i):
    net, X, y, lr = _configuration(i)
    report = gradcheck.verify(net, X, y, backends=["numpy", "numba"], steps=2000, lr=lr)
    assert report.ok, str(report)
    if not report.horizon.whole:
        assert report.horizon.describe() in report.heading()


#: Correct float64 runs that amplify rounding about 10¹²-fold within 2000 steps, from
#: ``net.init()``'s weights on the notebook's data: (widths, activations, loss, bias, lr).
CHAOTIC = [
    ([3, 13, 14, 1], ["tanh", "tanh", "sigmoid"], "half_sse", True, 0.5),
    ([3, 7, 6, 1], ["softplus", "tanh", "sigmoid"], "half_sse", True, 0.5),
    ([3, 6, 6, 1], ["sigmoid", "softplus", "sigmoid"], "bce", False, 0.5),
]


def _chaotic(k: int) -> tuple[Network, np.ndarray, np.ndarray, float]:
    widths, activations, loss, bias, lr = CHAOTIC[k]
    X, y = gradcheck.datasets.seed_xor()
    return Network(widths, activation=activations, loss=loss, bias=bias), X, y, lr


def _own_reproduction(net: Network, X: np.ndarray, y: np.ndarray, lr: float) -> np.ndarray:
    """How far JAX's run parts, step by step, from itself started 1e-15 away: written out here,
    apart from verify's own measure."""
    jax = gradcheck.get_backend("jax")
    params = net.init()
    moved = [{k: v * (1 + 1e-15) for k, v in layer.items()} for layer in params]
    a, b = (jax.train(net, p, X, y, 2000, lr).losses for p in (params, moved))
    return np.maximum.accumulate(np.abs(a - b) / np.abs(a))


@pytest.mark.sweep(keep=lambda p: p["k"] == 0)
@pytest.mark.parametrize("k", range(len(CHAOTIC)))
def test_a_chaotic_run_is_compared_up_to_its_horizon(k):
    net, X, y, lr = _chaotic(k)
    report = gradcheck.verify(net, X, y, backends=["numpy", "numba"], steps=2000, lr=lr)
    assert report.ok, str(report)
    horizon = report.horizon
    assert MIN_HORIZON <= horizon.steps < horizon.total == 2000
    parted = _own_reproduction(net, X, y, lr)
    assert parted[horizon.steps - 10] <= HORIZON_LIMIT  # it reproduces itself up to there
    assert parted[min(horizon.steps + 40, 1999)] > HORIZON_LIMIT  # and soon after no longer
    line = f"training compared over steps 0–{horizon.steps - 1}: after that the run amplifies"
    assert line in str(report)
    assert line in report._repr_html_()
    assert json.loads(json.dumps(report.to_dict()))["horizon"]["steps"] == horizon.steps
    # nothing beyond the horizon is compared: the losses up to it, no final params
    trained = [c for c in report.checks if c.quantity.startswith("train")]
    assert {c.quantity for c in trained} == {"train losses"}
    figure = report.plot()
    for axis in figure.axes:
        assert any(list(line.get_xdata()) == [horizon.steps] * 2 for line in axis.get_lines())


def test_the_horizon_is_the_first_step_past_the_limit():
    """Runs started 1e-16 apart that part by 1e-2 at step 3: compared over steps 0–2 only, too
    few to compare; the amplification is 1e-2 / 1e-16 and the loss's spike is named."""
    moved = np.array([0.0, 1e-16, 1e-9, 1e-2, 0.5, 0.3])
    losses = np.array([0.5, 0.4, 0.3, 0.9, 0.2, 0.1])
    reach = horizon(moved, 1e-16, losses)
    assert (reach.steps, reach.total) == (3, 6)
    assert reach.amplification == pytest.approx(1e14)
    assert not reach.comparable
    assert reach.describe() == (
        "training run not comparable: from step 3 the run amplifies rounding 10¹⁴-fold "
        "(the loss rose from 0.3 to 0.9 at step 3)"
    )
    assert horizon(np.full(12, HORIZON_LIMIT), 1e-16, np.ones(12)).whole
    assert horizon(np.array([0.0, np.nan]), 1e-16, np.ones(2)).steps == 1


LOOP_BUGS = list(loop_mutants())


@pytest.mark.sweep(keep=lambda p: p["k"] == in_turn(LOOP_BUGS.index(p["bug"]), range(3))[0])
@pytest.mark.parametrize("k", range(len(CHAOTIC)))
@pytest.mark.parametrize("bug", LOOP_BUGS)
def test_a_bug_in_the_loop_is_named_alone_inside_the_horizon(bug, k):
    net, X, y, lr = _chaotic(k)
    wrong = loop_mutants()[bug]
    report = gradcheck.verify(net, X, y, backends=["numpy", wrong], steps=2000, lr=lr)
    assert {c.backend for c in report.failures} == {wrong.name}, str(report)
    assert not any("no majority" in verdict for verdict in report.verdicts), report.verdicts
    assert any(verdict.startswith(wrong.name) for verdict in report.verdicts), report.verdicts


def test_the_cli_exits_0_on_a_chaotic_network_and_prints_its_horizon(capsys):
    status = main(
        ["verify", "--layers", "3", "13", "14", "1", "--activation", "tanh", "tanh", "sigmoid",
         "--loss", "half_sse", "--bias", "--lr", "0.5", "--init", "glorot_uniform",
         "--backends", "numpy", "numba"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "training compared over steps 0–" in out


def test_no_factor_of_one_is_offered_as_a_cause():
    """With K = 1 output a mean over the outputs is their sum: a factor of 1 explains nothing."""
    for sizes in [(4, 1), (1, 3), (1, 1), (2, 2)]:
        values = [value for value, _ in simple_factors(sizes)]
        assert 1 not in values
        assert len(values) == len(set(values))
