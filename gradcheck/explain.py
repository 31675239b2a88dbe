"""Explain a disagreement: the first tensor where two implementations part, and simple causes.

``verify`` calls this only for a backend that disagrees, so a report without a disagreement
costs nothing more. Two parts:

1. **Localise** (`first_difference`): walk two `Trace`s in the order of the computation —
   forward layer by layer (z, then a; a recurrent layer's z, gates and h step by step), the
   loss, the output delta δ_L, then backward layer by layer (the delta, a recurrent layer's
   from its last step to its first, then the layer's gradients) — and name the first tensor
   out of tolerance, with its time step and an LSTM's gate blocks.
2. **Explain**: fit simple hypotheses against the reference and keep those that fit within the
   tolerance — a scale (least squares; named when it is a simple fraction of N and K), a sign, a
   transposed or swapped gradient, a missing or averaged bias gradient, a learning rate scaled,
   an optimizer's neighbouring convention (ε's place, hyper-parameters rounded to float32,
   Nesterov, AMSGrad, weight decay, the full batch), a normalisation's neighbouring convention
   (PyTorch's momentum, ε or unbiased moving variance), initial weights of the backend's own,
   an activation's derivative evaluated at its output — or say that none fits.

Every array is compared as the tolerance policy compares it: relative to the size its rounding
scales with (``tolerance.relative_error``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from gradcheck import witness
from gradcheck.backends import Backend, Trace, Training, Trajectory
from gradcheck.layers import (
    LSTM,
    BatchNorm,
    Dropout,
    Embedding,
    LayerNorm,
    Norm,
    Parametric,
    Recurrent,
    SimpleRNN,
    Weighted,
)
from gradcheck.network import Network, Params
from gradcheck.ops import ACTIVATIONS, LOSSES, lookup
from gradcheck.optimizers import SGD, Adam, Optimizer, RMSprop
from gradcheck.tolerance import relative_error, run_error, tolerances

#: The public names, as the API reference shows them.
__all__ = [
    "KINDS",
    "STAGES",
    "Explanation",
    "FirstDifference",
    "Fit",
    "explain_gradients",
    "explain_inputs",
    "explain_layer_conventions",
    "explain_loss",
    "explain_optimizer",
    "explain_training",
    "first_difference",
    "fits",
    "named_factor",
]

#: What an explanation can say.
KINDS = (
    "scale",
    "sign",
    "transpose",
    "swap",
    "missing_bias",
    "lr_scale",
    "convention",
    "initial_weights",
    "activation_derivative",
    "clip",
    "stale_state",
    "not_linear",
    "nondeterministic",
    "none",
)
#: Where in the computation a first difference lies, in order.
STAGES = ("forward", "loss", "output_delta", "backward")
#: Steps of the reference simulated to test a training-run hypothesis: few enough that a run
#: whose dynamics amplify rounding still matches to within the policy's tolerance.
TRAINING_STEPS = 10


#: How an explanation of kind ``"none"`` ends: what was looked for did not fit.
NONE = ": no simple explanation fits"


@dataclass(frozen=True)
class Explanation:
    """A hypothesis that fits a disagreement: ``backend``'s ``quantity`` is the reference's
    under ``kind`` (one of `KINDS`), with the fitted ``factor`` where there is one, on
    ``layers`` (1-based; empty where layers do not apply)."""

    backend: str
    quantity: str
    kind: str
    factor: float | None
    layers: tuple[int, ...]
    text: str

    @property
    def fits(self) -> bool:
        """Whether a hypothesis fits: one of kind ``"none"`` only records that none did, and
        is not shown."""
        return self.kind != "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "quantity": self.quantity,
            "kind": self.kind,
            "factor": self.factor,
            "layers": list(self.layers),
            "text": self.text,
        }


@dataclass(frozen=True)
class FirstDifference:
    """The first tensor, in the order of the computation, where ``backend`` parts from the
    reference: ``stage`` one of `STAGES`, ``tensor`` one of z, a, loss, δ, W, b."""

    backend: str
    stage: str
    layer: int | None
    tensor: str
    error: float
    tolerance: float
    #: The stages before it, which agree.
    agreeing: tuple[str, ...] = ()
    #: A recurrent layer's time step (from 1), and the LSTM gate blocks that part there.
    step: int | None = None
    blocks: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        where = self.tensor if self.layer is None else f"{self.tensor} of layer {self.layer}"
        if self.step is not None:
            where += f" at time step {self.step}"
        if self.blocks:
            where += f", block{'s' if len(self.blocks) > 1 else ''} {listing(self.blocks)}"
        agree = ""
        if self.agreeing:
            names = [s.replace("_", " ") for s in self.agreeing]
            verb = "agrees" if len(names) == 1 else "agree"
            agree = f"; {listing(names)} {verb}"
        return (
            f"{self.backend}: first difference: {where} ({self.stage.replace('_', ' ')}), "
            f"relative error {self.error:.1e} against {self.tolerance:.1e}{agree}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "stage": self.stage,
            "layer": self.layer,
            "tensor": self.tensor,
            "error": self.error,
            "tolerance": self.tolerance,
            "step": self.step,
            "blocks": list(self.blocks),
        }


# --- localise ------------------------------------------------------------------------------------


class _Entry(NamedTuple):
    """One tensor of the walk: where it is, the backend's and the reference's, what its error
    is relative to, and for a recurrent layer's its time step and the names of its blocks."""

    stage: str
    layer: int | None
    tensor: str
    observed: Any
    reference: Any
    magnitude: Any = None
    step: int | None = None
    blocks: tuple[str, ...] = ()


def first_difference(
    backend: str,
    got: Trace,
    want: Trace,
    net: Network,
    params: Params,
    X: np.ndarray,
    magnitudes: tuple[list[np.ndarray], Params],
    tolerance: float,
) -> FirstDifference | None:
    """The first tensor of ``got`` out of ``tolerance`` against ``want`` (the reference's
    trace, from the float64 ``params``), or None when the traces agree throughout. Deltas and
    gradients are measured against their ``magnitudes`` (``tolerance.backward_magnitudes``), a
    recurrent layer's tensors at each step against their largest over every step. Layers are
    numbered as ``params`` numbers them, the layers with parameters; z, a and δ are a Dense or
    Conv2D layer's, or a recurrent layer's at a time step (z, an LSTM's gates, h, δ)."""
    deltas, grads = magnitudes
    a_prev = [np.asarray(X, np.float64), *want.a[:-1]]
    place = [p for p, layer in enumerate(net.parametric) if isinstance(layer, Weighted)]
    recurrent = [p for p, layer in enumerate(net.parametric) if isinstance(layer, Recurrent)]
    got_steps = dict(zip(recurrent, got.steps, strict=False))  # a backend may keep none
    want_steps = dict(zip(recurrent, want.steps, strict=False))
    forward: list[_Entry] = []
    for p, layer in enumerate(net.parametric):
        if isinstance(layer, Weighted):  # z carries the cancellation of a W + b; a is bounded
            i = place.index(p)
            z_scale = (  # a layer list's z: relative to its largest
                np.abs(a_prev[i]) @ np.abs(params[p]["W"]) + np.abs(params[p].get("b", 0.0))
                if net.dense
                else None
            )
            forward += [
                _Entry("forward", p + 1, "z", got.z[i], want.z[i], z_scale),
                _Entry("forward", p + 1, "a", got.a[i], want.a[i]),
            ]
        elif isinstance(layer, Recurrent) and p in want_steps:
            forward += _time_steps(p, layer, got_steps.get(p), want_steps[p])
    backward = [_Entry("loss", None, "loss", np.float64(got.loss), np.float64(want.loss))]
    backward.append(
        _Entry("output_delta", place[-1] + 1, "δ", got.delta[-1], want.delta[-1], deltas[-1])
    )
    for p in reversed(range(len(params))):
        if p in place[:-1]:  # a hidden weight layer's δ, then its gradients
            i = place.index(p)
            backward.append(_Entry("backward", p + 1, "δ", got.delta[i], want.delta[i], deltas[i]))
        if isinstance(layer := net.parametric[p], Recurrent) and p in want_steps:
            # every step's δ, the last step's first
            backward += _time_steps(p, layer, got_steps.get(p), want_steps[p], backward=True)
        for key in want.grads[p]:
            observed = got.grads[p].get(key)
            backward.append(
                _Entry("backward", p + 1, key, observed, want.grads[p][key], grads[p][key])
            )
    for entry in forward + backward:
        if entry.observed is None:  # not kept by this backend (numba overwrites hidden z)
            continue
        error = _error(entry.observed, entry.reference, entry.magnitude, entry.tensor == "loss")
        if not error <= tolerance:
            agreeing = STAGES[: STAGES.index(entry.stage)]
            blocks = _parting_blocks(entry, tolerance)
            return FirstDifference(backend, entry.stage, entry.layer, entry.tensor, error,
                                   tolerance, agreeing, entry.step, blocks)  # fmt: skip
    return None


def _error(observed: Any, reference: Any, magnitude: Any, elementwise: bool = False) -> float:
    if np.shape(observed) != np.shape(reference):
        return math.inf
    return relative_error(observed, reference, magnitude=magnitude, elementwise=elementwise)[0]


def _time_steps(
    p: int, layer: Recurrent, got: Any, want: Any, backward: bool = False
) -> list[_Entry]:
    """A recurrent layer's tensors step by step — forward z, an LSTM's gates and h at each
    step from the first; backward δ from the last — each relative to its largest over every
    step; ``got`` None when the backend kept none."""
    tensors = [("δ", "delta")] if backward else [("z", "z"), ("gates", "gates"), ("h", "h")]
    entries = []
    steps = range(want.h.shape[1])
    for t in reversed(steps) if backward else steps:
        for name, field in tensors:
            reference = getattr(want, field)
            if reference is None:  # a SimpleRNN has no gates
                continue
            observed = None if got is None else getattr(got, field)
            blocks = layer.blocks if name != "h" and len(layer.blocks) > 1 else ()
            entries.append(_Entry(
                "backward" if backward else "forward", p + 1, name,
                None if observed is None else observed[:, t], reference[:, t],
                np.array(np.max(np.abs(reference))), t + 1, blocks,
            ))  # fmt: skip
    return entries


def _parting_blocks(entry: _Entry, tolerance: float) -> tuple[str, ...]:
    """The blocks of an LSTM's tensor (N, 4H) that part beyond ``tolerance``."""
    if not entry.blocks or np.shape(entry.observed) != np.shape(entry.reference):
        return ()
    pairs = zip(np.split(entry.observed, len(entry.blocks), axis=-1),
                np.split(entry.reference, len(entry.blocks), axis=-1), strict=True)  # fmt: skip
    return tuple(
        name
        for name, (observed, reference) in zip(entry.blocks, pairs, strict=True)
        if not _error(observed, reference, entry.magnitude) <= tolerance
    )


# --- naming a factor -----------------------------------------------------------------------------


def simple_factors(sizes: tuple[int, ...] | None) -> list[tuple[float, str]]:
    """The factors a disagreement is tested against, with what each usually means: the simple
    fractions of the problem's sizes ``(N, K)`` (samples, outputs) — or ``(N, K, T)`` for
    outputs at T time steps — when given, then 2, 1/2, −1."""
    factors: list[tuple[float, str]] = []
    if sizes is not None and len(sizes) == 3:  # a loss per step, averaged over N·T
        N, K, T = sizes
        factors = [
            (T, f"a mean over the N = {N} samples alone where the reference averages over the "
             f"N·T = {N * T} samples and time steps, as Keras does"),
            (1 / T, f"a mean over the T = {T} time steps too where the reference sums them"),
        ]  # fmt: skip
        sizes = (N * T, K)  # every step's outputs a row of their own
    if sizes is not None:
        N, K = sizes
        factors += [
            (2 / (N * K), f"a loss averaged over N·K = {N * K} where the reference halves a sum"),
            (N * K / 2, f"a halved sum where the reference averages over N·K = {N * K}"),
            (1 / N, f"a mean over the N = {N} samples where the reference sums"),
            (N, f"a sum over the N = {N} samples where the reference takes the mean"),
            (1 / (N * K), f"a mean over all N·K = {N * K} outputs where the reference sums"),
            (N * K, f"a sum over all N·K = {N * K} outputs where the reference takes the mean"),
            (1 / K, f"a mean over the K = {K} outputs where the reference sums"),
            (K, f"a sum over the K = {K} outputs where the reference takes the mean"),
        ]
    # a factor of 1 explains nothing (K = 1 makes a mean over the outputs their sum)
    found: dict[float, tuple[float, str]] = {}
    for value, meaning in [*factors, (2, ""), (1 / 2, ""), (-1, "")]:
        if value != 1:
            found.setdefault(value, (value, meaning))
    return list(found.values())


def named_factor(factor: float, sizes: tuple[int, ...] | None) -> tuple[float, str] | None:
    """The simple number closest to ``factor`` when they agree to 0.1%, with what it usually
    means — one of `simple_factors`, else a whole number or one over one; None otherwise. The
    caller checks that it fits."""
    if not math.isfinite(factor):
        return None
    candidates = simple_factors(sizes)
    if abs(factor) >= 1:
        candidates.append((round(factor), ""))  # a whole number
    elif factor != 0:
        candidates.append((1 / round(1 / factor), ""))  # or one over one
    for value, meaning in candidates:
        if abs(factor - value) <= 1e-3 * abs(value):
            return value, meaning
    return None


def _fraction(value: float) -> str:
    """1/64 as 1/64 (one over a whole number), anything else to four digits: 8, 0.5, 1.37."""
    fraction = Fraction(value).limit_denominator(10_000)
    if abs(fraction.numerator) == 1 and fraction.denominator > 2 and float(fraction) == value:
        return f"{fraction.numerator}/{fraction.denominator}"
    return f"{value:.4g}"


# --- fitting -------------------------------------------------------------------------------------


def _least_squares(observed: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float | None:
    """The factor c minimising Σ‖observed − c·expected‖², or None when it is undefined. Each
    side is scaled by its largest magnitude first, so values near overflow or underflow give
    the factor, not an overflow."""
    o = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in observed])
    e = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in expected])
    if not (np.all(np.isfinite(o)) and np.all(np.isfinite(e))):
        return None
    o_scale, e_scale = float(np.max(np.abs(o), initial=0.0)), float(np.max(np.abs(e), initial=0.0))
    if e_scale == 0:
        return None
    if o_scale == 0:
        return 0.0
    with np.errstate(over="ignore"):  # a ratio beyond float64's range fits no simple factor
        c = float((o / o_scale) @ (e / e_scale)) / float((e / e_scale) @ (e / e_scale))
        c *= o_scale / e_scale
    return c if math.isfinite(c) else None


def _fits(
    observed: Sequence[Any],
    expected: Sequence[np.ndarray],
    tolerance: float,
    magnitudes: Sequence[np.ndarray | None] | None = None,
) -> bool:
    """Every observed array within ``tolerance`` of its expected one, as the policy measures."""
    magnitudes = magnitudes if magnitudes is not None else [None] * len(expected)
    for o, e, m in zip(observed, expected, magnitudes, strict=True):
        if o is None or np.shape(o) != np.shape(e):
            return False
        if not relative_error(o, e, magnitude=m)[0] <= tolerance:
            return False
    return True


def _scaled(
    observed: Sequence[Any],
    expected: Sequence[np.ndarray],
    magnitudes: Sequence[np.ndarray | None],
    tolerance: float,
    sizes: tuple[int, ...] | None,
) -> tuple[float, str] | None:
    """``(factor, meaning)`` when observed = factor × expected within tolerance and the factor
    is not 1: a simple fraction of the sizes where one fits, else the fitted number."""
    if any(
        o is None or np.shape(o) != np.shape(e) for o, e in zip(observed, expected, strict=True)
    ):
        return None
    c = _least_squares(observed, expected)
    if c is None or abs(c - 1) <= 1e-3:
        return None
    named = named_factor(c, sizes)
    for factor, meaning in ([named] if named else []) + [(c, "")]:
        scaled = [factor * e for e in expected]
        moved = [None if m is None else abs(factor) * m for m in magnitudes]
        if _fits(observed, scaled, tolerance, moved):
            return factor, meaning
    return None


def _scale_text(subject: str, factor: float, meaning: str, where: str = "") -> str:
    """ "x's gradients are 8 × the reference's on every layer: a sum where …"."""
    if factor == -1:
        return f"{subject} the reference's with the sign flipped{where}"
    text = f"{subject} {_fraction(factor)} × the reference's{where}"
    return f"{text}: {meaning}" if meaning else text


def _kind(factor: float) -> str:
    return "sign" if factor == -1 else "scale"


def _where(layers: Sequence[int], depth: int) -> str:
    """ " on every layer", " on layer 2", " on layers 1 and 3"."""
    if len(layers) == depth and depth > 1:
        return " on every layer"
    if len(layers) == 1:
        return f" on layer {layers[0]}"
    return f" on layers {listing([str(layer) for layer in layers])}"


# --- the engine: hypotheses over named arrays ---------------------------------------------------

#: Named arrays in groups — a layer's ``W`` and ``b``, or one input's gradient — each as
#: (observed, expected, magnitude): the implementation's array (None when it gave none), the
#: oracle's, and the size its rounding scales with (None: the array's own).
Groups = dict[str, dict[str, tuple[Any, np.ndarray, np.ndarray | None]]]


@dataclass(frozen=True)
class Fit:
    """A hypothesis that fits: ``kind`` (`KINDS`) with its ``factor`` and what that factor
    usually ``means``, on the named ``groups``, and the ``key`` of the array within each group
    where it concerns one (a transpose, a swap, a caller's own)."""

    kind: str
    factor: float | None
    groups: tuple[str, ...]
    means: str = ""
    key: str | None = None


def _wrong(arrays: dict[str, tuple[Any, np.ndarray, np.ndarray | None]], tolerance: float) -> bool:
    observed, expected, magnitudes = zip(*arrays.values(), strict=True)
    return not _fits(observed, expected, tolerance, magnitudes)


def fits(
    groups: Groups,
    tolerance: float,
    sizes: tuple[int, ...] | None,
    own: Callable[[str], list[Fit]] | None = None,
) -> tuple[list[str], list[Fit]]:
    """The groups whose arrays disagree, and the hypotheses that fit them, for ``verify``'s
    layers and ``check_backward``'s inputs alike: one factor (or sign) common to every group
    that disagrees; else per group a factor or sign, a square array transposed, or the caller's
    ``own(group)`` hypotheses — groups with the same finding named together; and two groups'
    arrays of one key swapped. Factors are named from ``sizes`` (`named_factor`)."""
    wrong = [name for name, arrays in groups.items() if _wrong(arrays, tolerance)]

    def scaled(names: Sequence[str]) -> tuple[float, str] | None:
        observed, expected, magnitudes = zip(
            *(array for name in names for array in groups[name].values()), strict=True
        )
        return _scaled(observed, expected, magnitudes, tolerance, sizes)

    common = scaled(wrong) if len(wrong) > 1 else None
    if common is not None:
        return wrong, [Fit(_kind(common[0]), common[0], tuple(wrong), common[1])]
    together: dict[tuple[str, float | None, str, str | None], list[str]] = {}
    for name in wrong:
        found = scaled([name])
        if found is not None:
            hypotheses = [Fit(_kind(found[0]), found[0], (name,), found[1])]
        else:
            hypotheses = [
                Fit("transpose", None, (name,), key=key)
                for key, (o, e, m) in groups[name].items()
                if e.ndim == 2 and e.shape[0] == e.shape[1] and not _fits([o], [e], tolerance, [m])
                and _fits([o], [e.T], tolerance, [None if m is None else m.T])
            ]  # fmt: skip
            hypotheses += _clipped(name, groups[name], tolerance)
            hypotheses += own(name) if own is not None else []
        for fit in hypotheses:
            together.setdefault((fit.kind, fit.factor, fit.means, fit.key), []).append(name)
    found_all = [
        Fit(kind, factor, tuple(names), means, key)
        for (kind, factor, means, key), names in together.items()
    ]
    for i, a in enumerate(wrong):
        for b in wrong[i + 1 :]:
            for key in groups[a].keys() & groups[b].keys():
                (oa, ea, ma), (ob, eb, mb) = groups[a][key], groups[b][key]
                if np.shape(ea) == np.shape(eb) and _fits([oa, ob], [eb, ea], tolerance, [mb, ma]):
                    found_all.append(Fit("swap", None, (a, b), key=key))
    return wrong, found_all


def _clipped(
    name: str, arrays: dict[str, tuple[Any, np.ndarray, np.ndarray | None]], tolerance: float
) -> list[Fit]:
    """Each array of a group that is the expected one clipped to ±c, c its own largest
    magnitude, where some expected value lies beyond c: gradient clipping, not a gradient."""
    found = []
    for key, (o, e, m) in arrays.items():
        if o is None or np.shape(o) != np.shape(e) or not np.all(np.isfinite(o)) or not o.size:
            continue
        if _fits([o], [e], tolerance, [m]):
            continue  # this array is right; another in its group is not
        c = float(np.max(np.abs(o)))
        if 0 < c < float(np.max(np.abs(e))) and _fits([o], [np.clip(e, -c, c)], tolerance, [m]):
            found.append(Fit("clip", c, (name,), key=key))
    return found


# --- gradients -----------------------------------------------------------------------------------


def explain_gradients(
    backend: str,
    got: Params,
    want: Params,
    magnitudes: Params,
    tolerance: float,
    sizes: tuple[int, ...],
    derivative: Callable[[str, str], Params | None] | None = None,
) -> list[Explanation]:
    """Hypotheses for gradients ``got`` that disagree with ``want`` (`fits`, each layer a
    group): one factor common to the layers that disagree, else per layer a factor, a sign, a
    transpose, or a bias gradient missing or averaged; gradients swapped between two layers; an
    activation's derivative evaluated at the wrong tensor (``derivative(name, given)`` gives
    the gradients that bug produces); or none."""
    depth = len(want)
    groups: Groups = {
        str(i + 1): {key: (got[i].get(key), want[i][key], magnitudes[i][key]) for key in want[i]}
        for i in range(depth)
    }
    wrong, found = fits(groups, tolerance, sizes, partial(_bias, groups, tolerance, sizes))
    explanations = [_layer_words(backend, fit, depth) for fit in found]
    if wrong and derivative is not None:
        explanations += _activation_derivative(backend, got, magnitudes, tolerance, derivative)
    if wrong and not explanations:
        layers = tuple(map(int, wrong))
        text = f"{backend}'s gradients{_where(layers, depth)}{NONE}"
        explanations.append(Explanation(backend, "gradient", "none", None, layers, text))
    return explanations


def _bias(groups: Groups, tolerance: float, sizes: tuple[int, ...], layer: str) -> list[Fit]:
    """A layer's own hypotheses: its bias gradient zero, or averaged over the N samples."""
    if "b" not in groups[layer]:
        return []
    b, want, magnitude = groups[layer]["b"]
    N = sizes[0]
    if _fits([b], [want], tolerance, [magnitude]) or b is None or np.shape(b) != np.shape(want):
        return []
    if not np.any(b):
        return [Fit("missing_bias", 0.0, (layer,), key="b")]
    if _fits([b], [want / N], tolerance, [None if magnitude is None else magnitude / N]):
        means = f"averaged over the N = {N} samples instead of summed"
        return [Fit("scale", 1 / N, (layer,), means, key="b")]
    return []


def _layer_words(backend: str, fit: Fit, depth: int) -> Explanation:
    """A `Fit` over a network's layers as the report says it."""
    layers = tuple(map(int, fit.groups))
    where = _where(layers, depth)
    array = {"W": "weight gradient", "b": "bias gradient"}.get(fit.key or "", "")
    if fit.kind == "swap":
        i, j = layers
        text = f"{backend}'s {array}s of layers {i} and {j} are the reference's swapped"
    elif fit.kind == "transpose":
        text = f"{backend}'s {array}{where} is the reference's transposed"
    elif fit.kind == "clip":
        assert fit.factor is not None
        text = f"{backend}'s {array}{where} is the reference's clipped to ±{fit.factor:.4g}"
    elif fit.kind == "missing_bias":
        text = f"{backend}'s {array}{where} is zero where the reference's is not"
    elif fit.key is not None:  # one array's factor
        assert fit.factor is not None
        text = f"{backend}'s {array}{where} is 1/{round(1 / fit.factor)} × the reference's: "
        text += fit.means
    else:
        assert fit.factor is not None
        text = _scale_text(f"{backend}'s gradients are", fit.factor, fit.means, where)
    return Explanation(backend, "gradient", fit.kind, fit.factor, layers, text)


#: The two ways an activation's f′ is evaluated at the wrong tensor: f′ written for z given
#: a = f(z) (applying f twice), and f′ written through a (σ′ = a(1 − a)) given z.
MISPLACED_DERIVATIVES = {
    "a": "{f}′ written for z but given a = {f}(z), so {f} is applied twice",
    "z": "{f}′ written as a function of a = {f}(z) but given z",
}


def _activation_derivative(
    backend: str,
    got: Params,
    magnitudes: Params,
    tolerance: float,
    derivative: Callable[[str, str], Params | None],
) -> list[Explanation]:
    found = []
    for name in ACTIVATIONS:
        for given, mistake in MISPLACED_DERIVATIVES.items():
            hypothesis = derivative(name, given)
            if hypothesis is None:
                continue
            keys = [(i, key) for i in range(len(hypothesis)) for key in hypothesis[i]]
            if _fits(
                [got[i].get(key) for i, key in keys],
                [hypothesis[i][key] for i, key in keys],
                tolerance,
                [magnitudes[i][key] for i, key in keys],
            ):
                text = (
                    f"{backend}'s gradients are what {name}′ evaluated at {given} gives: "
                    + mistake.format(f=name)
                )
                explanation = Explanation(
                    backend, "gradient", "activation_derivative", None, (), text
                )
                found.append(explanation)
    return found


def derivative_at_activation(
    net: Network, params: Params, X: np.ndarray, reference: Trace
) -> Callable[[str, str], Params | None]:
    """For an activation's name and the tensor its f′ was wrongly given (`MISPLACED_DERIVATIVES`:
    ``"a"``, f′(z) evaluated at a; ``"z"``, f′ written through a (the registry's
    ``derivative``, where it ``needs`` a) evaluated at z), the gradients
    backpropagation gives with that mistake (None when the network does not use the
    activation, when the mistake changes nothing, as for relu and identity, when it overflows,
    or for a network given as a list of layers), from the reference's output delta and the
    witness's forward pass."""
    forward = witness.forward(net, params, X)
    loss_spec = lookup(LOSSES, net.loss, "loss")

    def slope(name: str, z: np.ndarray, a: np.ndarray, given: str | None) -> np.ndarray:
        """f′ at z, right (``given`` None) or evaluated at the wrong tensor."""
        spec = lookup(ACTIVATIONS, name, "activation")
        assert spec.prime is not None
        assert spec.derivative is not None
        if given is None:
            return spec.prime(z)
        if given == "a":
            return spec.prime(a)
        if given == "z":
            return spec.derivative(z, z)  # the a it reads given z
        raise ValueError(f"given must be one of {list(MISPLACED_DERIVATIVES)}; got {given!r}")

    def gradients(name: str, given: str) -> Params | None:
        if not net.dense or name not in net.activations or ACTIVATIONS[name].prime is None:
            return None
        if given == "z" and "a" not in ACTIVATIONS[name].needs:
            return None  # f′ is not written through a
        delta = np.asarray(reference.delta[-1], np.float64)
        output, z, a = net.activations[-1], forward.zs[-1], forward.outputs
        if output == name and loss_spec.output is None:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                ratio = slope(name, z, a, given) / slope(name, z, a, None)
            delta = delta * np.where(np.isfinite(ratio), ratio, 0.0)
        grads: Params = [{} for _ in params]
        with np.errstate(over="ignore", invalid="ignore"):  # a misplaced f′ may be unbounded
            for i in reversed(range(net.depth)):
                grads[i]["W"] = forward.activations[i].T @ delta
                if "b" in params[i]:
                    grads[i]["b"] = delta.sum(axis=0)
                if i > 0:
                    below = net.activations[i - 1]
                    wrong = given if below == name else None
                    f_prime = slope(below, forward.zs[i - 1], forward.activations[i], wrong)
                    delta = (delta @ np.asarray(params[i]["W"], np.float64).T) * f_prime
        values = [
            (g[key], r[key]) for g, r in zip(grads, reference.grads, strict=True) for key in g
        ]
        changed = any(not np.array_equal(g, r) for g, r in values)
        finite = all(np.all(np.isfinite(g)) for g, _ in values)
        return grads if changed and finite else None

    return gradients


# --- loss and predictions ------------------------------------------------------------------------


#: The logits behind the outputs of the activations a loss can require, for the losses defined
#: on the logits (softmax's up to a constant per row, which its cross-entropy ignores).
_LOGITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda a: np.log(a) - np.log1p(-a),
    "softmax": np.log,
}


def _loss_at(net: Network, a: np.ndarray, y: np.ndarray) -> float:
    """The network's loss, by its reference definition, for outputs ``a``."""
    spec = lookup(LOSSES, net.loss, "loss")
    a = np.asarray(a, np.float64)
    # outputs of 0 or 1: infinite logits; outputs near float64's limit: an infinite loss, which
    # the caller sets aside
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = a if spec.output is None else lookup(_LOGITS, spec.output, "output activation")(a)
        return spec.reference(z, a, np.asarray(y, np.float64))


def explain_loss(
    backend: str,
    net: Network,
    loss: float,
    predictions: np.ndarray,
    y: np.ndarray,
    tolerance: float,
    sizes: tuple[int, ...],
) -> list[Explanation]:
    """The backend's loss against the reference's definition at the backend's own outputs: a
    factor there means another normalisation, which scales every gradient and step alike."""
    reference = _loss_at(net, predictions, y)
    if not np.isfinite(reference) or reference == 0:
        return []
    scaled = _scaled(
        [np.array(loss)], [np.array(reference)], [np.abs(np.array(reference))], tolerance, sizes
    )
    if scaled is None:
        return []
    factor, meaning = scaled
    text = _scale_text(f"{backend}'s loss at its own outputs is", factor, meaning)
    text += "; every gradient and step scales with it"
    return [Explanation(backend, "loss", _kind(factor), factor, (), text)]


def _with_activation(net: Network, name: str, other: str) -> Network:
    """The network with activation ``other`` wherever it has ``name``."""
    if net.dense:
        return replace(net, activation=[other if a == name else a for a in net.activations])
    layers = [
        replace(layer, activation=other)
        if isinstance(layer, Weighted) and layer.activation == name
        else layer
        for layer in net.stack
    ]
    return replace(net, layers=layers)


def explain_activation_form(
    backend: str, net: Network, params: Params, X: np.ndarray, predictions: np.ndarray,
    tolerance: float,
) -> list[Explanation]:  # fmt: skip
    """The backend's predictions against the witness's with one of the network's activations
    replaced by an activation frameworks confuse it with (the registry's ``confusions``)."""
    found = []
    for name in dict.fromkeys(net.activations):
        for other, convention in lookup(ACTIVATIONS, name, "activation").confusions:
            swapped = witness.forward(_with_activation(net, name, other), params, X).outputs
            if _fits([predictions], [swapped], tolerance, [np.abs(swapped)]):
                text = f"{backend}'s predictions are the network's with {other} for {name}: "
                found.append(Explanation(backend, "predictions", "convention", None, (),
                                         text + convention))  # fmt: skip
    return found


def explain_own_weights(
    backend: Backend,
    net: Network,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    quantity: str,
    observed: np.ndarray,
    run: Training | None,
    extra: Sequence[str],
) -> list[Explanation]:
    """Whether ``backend`` ignores the weights it is given: the same ``observed`` predictions
    (or, for ``quantity`` ``"training run"``, the same losses from the training ``run``) from
    params moved by 10% of each layer's size. Then it starts from weights of its own."""
    rng = np.random.default_rng(0)
    moved = [
        {key: value + 0.1 * (np.abs(value).max() + 1) * rng.standard_normal(np.shape(value))
         for key, value in layer.items()}
        for layer in params
    ]  # fmt: skip
    if run is None:
        again = backend.predict(net, moved, X)
    else:
        again = run.run(backend, net, moved, X, y).losses
    if not np.array_equal(np.asarray(again), np.asarray(observed)):
        return []
    what = "predictions" if run is None else "run"
    text = f"{backend.name} gives the same {what} whatever weights it is given: "
    text += "its initial weights are its own"
    if extra:
        text += f", and it has parameters the network does not ({', '.join(extra)})"
    return [Explanation(backend.name, quantity, "initial_weights", None, (), text)]


# --- training ------------------------------------------------------------------------------------


def explain_training(
    backend: str,
    reference: Backend,
    net: Network,
    params64: Params,
    X: np.ndarray,
    y: np.ndarray,
    lr: float,
    losses: np.ndarray,
    factors: Sequence[tuple[float, str]],
) -> list[Explanation]:
    """A training run whose gradients agree (or are a multiple of the reference's) but whose
    run does not: is it the reference's gradient descent with the learning rate times one of
    ``factors``? Each is tested by stepping the float64 ``params64`` with the reference's
    gradients for up to `TRAINING_STEPS` steps against the run's ``losses``; the first that
    fits is the explanation."""
    k = min(len(losses), TRAINING_STEPS)
    if k < 2:
        return []  # the loss before the first step says nothing about the step
    net64 = replace(net, dtype="float64")
    tolerance = tolerances(net, X.shape[0], k).trajectory
    for factor, meaning in factors:
        if abs(factor - 1) <= tolerance:
            continue  # a run this close to the reference's is no explanation of a difference
        simulated, current = [], params64
        with np.errstate(over="ignore", invalid="ignore"):  # a wrong factor may diverge
            for _ in range(k):
                loss, grads = reference.loss_and_grads(net64, current, X, y)
                simulated.append(loss)
                current = [
                    {key: value - factor * lr * grads[i][key] for key, value in layer.items()}
                    for i, layer in enumerate(current)
                ]
                if not all(np.all(np.isfinite(v)) for layer in current for v in layer.values()):
                    break  # diverged: the rest of the run is no fit
        if len(simulated) < k:
            continue
        error, _ = relative_error(losses[:k], np.array(simulated), elementwise=True)
        if not error <= tolerance:
            continue
        if factor == -1:
            text = f"{backend}'s run is the reference's with each step's sign flipped: it climbs"
            return [Explanation(backend, "training run", "sign", -1.0, (), text)]
        text = f"{backend}'s run is the reference's with the learning rate × {_fraction(factor)}"
        text += f" ({meaning})" if meaning else ""
        return [Explanation(backend, "training run", "lr_scale", factor, (), text)]
    return []


def _float32_rounded(optimizer: Optimizer) -> Optimizer:
    """``optimizer`` with every float hyper-parameter rounded to float32, as Keras rounds a
    Python float."""
    rounded = {
        f.name: float(np.float32(getattr(optimizer, f.name)))
        for f in fields(optimizer)
        if isinstance(getattr(optimizer, f.name), float)
    }
    return replace(optimizer, **rounded)


def neighbours(training: Training) -> list[tuple[str, Training]]:
    """The runs a correct-looking implementation of ``training`` makes instead, each with what
    it differs in: the conventions that tell frameworks' optimizers apart."""
    o = training.optimizer
    changes: list[tuple[str, Optimizer]] = []
    if isinstance(o, Adam):
        other = {"keras": "paper", "paper": "keras"}[o.epsilon_placement]
        changes.append((f"ε placed as {_EPSILON[other]}", replace(o, epsilon_placement=other)))
        changes.append((f"amsgrad={not o.amsgrad}", replace(o, amsgrad=not o.amsgrad)))
    if isinstance(o, RMSprop):
        other = {"inside": "outside", "outside": "inside"}[o.epsilon_placement]
        changes.append((f"ε placed as {_EPSILON[other]}", replace(o, epsilon_placement=other)))
    if isinstance(o, SGD) and o.momentum:
        changes.append((f"nesterov={not o.nesterov}", replace(o, nesterov=not o.nesterov)))
    if o.weight_decay:
        changes.append(("no weight decay", replace(o, weight_decay=0.0)))
    rounded = _float32_rounded(o)
    if rounded != o:
        changes.append(("its hyper-parameters rounded to float32", rounded))
    found = [(text, replace(training, optimizer=changed)) for text, changed in changes]
    if training.batch_size is not None:
        found.append(("the full batch at every step", replace(training, batch_size=None)))
    return found


_EPSILON = {
    "keras": "Keras does (added to the uncorrected √v)",
    "paper": "the paper and optax do (added to √v̂)",
    "inside": "Keras and optax's default do (inside the square root)",
    "outside": "PyTorch does (outside the square root)",
}


def explain_optimizer(
    backend: str,
    reference: Backend,
    net64: Network,
    params64: Params,
    X: np.ndarray,
    y: np.ndarray,
    training: Training,
    observed: Trajectory,
    tolerance: float,
) -> list[Explanation]:
    """A run with an optimizer that parts from the reference's: is it the reference's run
    under one of the `neighbours` of ``training``? Each is run by the reference in float64 and
    held to the ``observed`` losses and final params (`tolerance.run_error`) at the run's
    trajectory ``tolerance``; the closest that fits is the explanation."""
    fits = []
    for meaning, neighbour in neighbours(training):
        run = neighbour.run(reference, net64, params64, X, y)
        error = run_error(observed.losses, observed.params, run.losses, run.params)
        if error <= tolerance:
            fits.append((error, meaning))
    if not fits:
        return []
    _, meaning = min(fits)
    text = f"{backend}'s run is the reference's {training.optimizer.name} with {meaning}"
    return [Explanation(backend, "training run", "convention", None, (), text)]


#: PyTorch's default ε of its batch and layer norms, where Keras's is 1e-3.
TORCH_EPSILON = 1e-5


@dataclass(frozen=True)
class _Rescaled(Dropout):
    """A Dropout whose kept units a port scales by ``factor`` in training, as no convention
    does: not at all, or by 1/rate, reading the rate as the keep probability."""

    factor: float = 1.0

    @property
    def scale(self) -> float:
        return self.factor


@dataclass(frozen=True)
class _HeldBatchNorm(BatchNorm):
    """A BatchNorm whose backward leaves out the path through ``held`` statistics ("mean",
    "var"): the reference differentiates it with them held constant."""

    held: tuple[str, ...] = ()


@dataclass(frozen=True)
class _HeldLayerNorm(LayerNorm):
    """A LayerNorm whose backward leaves out the path through ``held`` statistics."""

    held: tuple[str, ...] = ()


@dataclass(frozen=True)
class _OverwritingEmbedding(Embedding):
    """An Embedding whose backward writes each position's gradient over its id's row, the
    last write kept, where the scatter-add sums the positions of a repeated id."""

    overwrites: bool = True


@dataclass(frozen=True)
class _SlippedRNN(SimpleRNN):
    """A SimpleRNN as a hand-written port computes it with ``slip``, one of the reference's
    (JAX's ``SLIPS``)."""

    slip: str = ""


@dataclass(frozen=True)
class _SlippedLSTM(LSTM):
    """An LSTM as a hand-written port computes it with ``slip``."""

    slip: str = ""


def _recurrent_slips(layer: Recurrent, where: str, below: bool) -> list[tuple[str, str, frozenset]]:
    """The slips of a hand-written recurrent layer: (the reference's name for it, what it
    differs in, what it changes). ``below``: a layer with parameters lies below it, which its
    ∂C/∂x reaches."""
    slips = []
    if isinstance(layer, LSTM):
        slips += [
            ("blocks i, f, o, c", f"{where}'s blocks c and o swapped: CS231n's order i, f, o, g "
             "read from Keras's i, f, c, o", FORWARD),
            ("forget gate without σ", f"{where}'s forget gate without its σ, f = z_f", FORWARD),
            ("cell state not carried", f"{where}'s cell state not carried from step to step, "
             "c_t = i ⊙ c̃", FORWARD),
        ]  # fmt: skip
    slips += [
        ("truncated", f"{where}'s backpropagation through time truncated: ∂C/∂h_t not carried "
         "back to the steps before", GRADIENT),
        ("h_t in dU", f"h_t read in {where}'s ∂C/∂U = Σ_t h_{{t−1}}ᵀ δ_t where h_{{t−1}} "
         "belongs", GRADIENT),
    ]  # fmt: skip
    if below:
        text = f"{where}'s ∂C/∂x keeping only the last step's contribution"
        slips.append(("last step's dx", text, GRADIENT))
    return slips


#: The statistics a normalisation's backward is written without, and how it reads.
_HELD = {"mean": "the term through μ", "var": "the term through σ²"}


#: What a neighbour changes of what verify compares before the training run (every neighbour
#: changes the run).
FORWARD = frozenset({"predictions", "loss", "gradient"})
LOSS_AND_GRADIENT = frozenset({"loss", "gradient"})
GRADIENT = frozenset({"gradient"})
RUN_ONLY: frozenset[str] = frozenset()


class Neighbour(NamedTuple):
    """A network a port computes instead: what it differs in, the network, and which of
    predictions, loss and gradient that changes."""

    meaning: str
    net: Network
    changes: frozenset[str]


def layer_neighbours(net: Network) -> list[Neighbour]:
    """The networks a port of ``net``'s normalisations, dropout, embedding and recurrent layers
    computes instead, each with what it differs in: the conventions that tell frameworks' batch
    norm, layer norm, dropout and LSTM apart, the terms a hand-written backward leaves out or
    the repeated ids it overwrites, and the classic slips of backpropagation through time."""
    found = []
    stack = net.stack

    def every(change: Callable[[Any], Any]) -> Network:
        return replace(net, layers=[change(layer) for layer in stack])

    norms = [k for k, layer in enumerate(stack) if isinstance(layer, Norm)]
    epsilons = {stack[k].epsilon for k in norms} - {TORCH_EPSILON}  # type: ignore[union-attr]
    if epsilons:
        given = " and ".join(f"{e:g}" for e in sorted(epsilons))
        text = f"ε = {TORCH_EPSILON:g}, PyTorch's default, in every normalisation"
        found.append(Neighbour(text + f", where it is {given}", every(_torch_epsilon), FORWARD))
    for held, words in _HELD.items() if norms else ():
        text = f"every normalisation's backward written without {words}"
        found.append(Neighbour(text, every(partial(_held, statistic=held)), GRADIENT))
    for k, layer in enumerate(stack):
        place = sum(isinstance(below, Parametric) for below in stack[:k]) + 1  # as in params
        where = f"layer {place}'s {type(layer).__name__}"

        def swapped(other: Any, k: int = k) -> Network:
            return replace(net, layers=[*stack[:k], other, *stack[k + 1 :]])

        if isinstance(layer, Norm) and len(norms) > 1 and layer.epsilon != TORCH_EPSILON:
            text = f"ε = {TORCH_EPSILON:g} in {where}, where it is {layer.epsilon:g}"
            found.append(Neighbour(text, swapped(replace(layer, epsilon=TORCH_EPSILON)), FORWARD))
        if isinstance(layer, BatchNorm):
            kept = 1 - layer.momentum
            text = (
                f"momentum read as PyTorch reads it in {where}: {kept:g} of the old moving "
                f"statistic kept at each step, where Keras's momentum={layer.momentum:g} keeps "
                f"{layer.momentum:g}"
            )
            found.append(Neighbour(text, swapped(replace(layer, momentum=kept)), RUN_ONLY))
            other = "biased" if layer.unbiased else "unbiased"
            text = f"the batch's {other} variance in {where}'s moving variance"
            text += ", PyTorch's convention" if other == "unbiased" else ", Keras's convention"
            changed = swapped(replace(layer, moving_variance=other))
            found.append(Neighbour(text, changed, RUN_ONLY))
        if isinstance(layer, Embedding):
            text = (
                f"{where}'s backward writing each position's gradient over its id's row, where "
                "the scatter-add sums the positions of a repeated id"
            )
            found.append(Neighbour(text, swapped(_OverwritingEmbedding(**asdict(layer))), GRADIENT))
        if isinstance(layer, Recurrent):
            slipped = _SlippedLSTM if isinstance(layer, LSTM) else _SlippedRNN
            for slip, text, changes in _recurrent_slips(layer, where, place > 1):
                found.append(Neighbour(text, swapped(slipped(**asdict(layer), slip=slip)), changes))
        if isinstance(layer, Dropout):
            where = f"the Dropout after layer {place - 1}" if place > 1 else "the first Dropout"
            if layer.scaling == "inverted":  # the bare mistake first: its predictions agree
                text = f"{where}'s kept units not scaled by 1/{1 - layer.rate:g} in training"
                unscaled = swapped(_Rescaled(layer.rate, factor=1.0))
                found.append(Neighbour(text, unscaled, LOSS_AND_GRADIENT))
                text = (
                    f"{where} scaled at prediction, the 2012 paper's convention: its kept "
                    f"units as they are in training and every unit × {1 - layer.rate:g} in "
                    f"predictions, where Keras scales the kept ones by 1/{1 - layer.rate:g}"
                )
                at_prediction = swapped(replace(layer, scaling="at_prediction"))
                found.append(Neighbour(text, at_prediction, FORWARD))
            if layer.rate > 0:
                text = (
                    f"{where}'s rate read as the probability of keeping a unit (CS231n's p): "
                    f"its kept units scaled by 1/{layer.rate:g} where Keras scales them by "
                    f"1/{1 - layer.rate:g}"
                )
                misread = swapped(_Rescaled(layer.rate, factor=1 / layer.rate))
                found.append(Neighbour(text, misread, LOSS_AND_GRADIENT))
    return found


def _torch_epsilon(layer: Any) -> Any:
    """A normalisation with PyTorch's default ε; any other layer as is."""
    return replace(layer, epsilon=TORCH_EPSILON) if isinstance(layer, Norm) else layer


def _held(layer: Any, statistic: str) -> Any:
    """A normalisation as its `_Held` variant with ``statistic`` held; any other layer as is."""
    if isinstance(layer, BatchNorm):
        return _HeldBatchNorm(**{**asdict(layer), "held": (statistic,)})
    if isinstance(layer, LayerNorm):
        return _HeldLayerNorm(**{**asdict(layer), "held": (statistic,)})
    return layer


def explain_layer_conventions(
    backend: str,
    reference: Backend,
    inputs: tuple[Network, Params, np.ndarray, np.ndarray],
    training: Training,
    groups: set[str],
    observed: Any,
    point: float,
    trajectory: float,
    magnitudes: Params,
) -> list[Explanation]:
    """Does a `layer_neighbours` network explain every group of quantities the backend fails —
    its predictions, loss, gradient, training run (``observed`` its `compare.Outputs`)? Each
    neighbour is computed by the reference in float64 from the float64 ``inputs`` and held to
    the observed quantities at the tolerances ``point`` and ``trajectory``, the gradient
    relative to ``magnitudes``. Only a neighbour that changes just the quantities that failed
    among predictions, loss and gradient is tried, and only what it changes is computed: the
    rest is the reference's, which the backend's fit (they did not fail). Its predictions, loss
    and gradient must fit the backend's, and only then is its training run, the costly part,
    compared; the first that fits is the explanation, in one line."""
    net64, params64, X, y = inputs

    def fits(neighbour: Network, changes: frozenset[str]) -> bool:
        if "predictions" in changes:
            expected = reference.predict(neighbour, params64, X)
            if not _fits([observed.predictions], [expected], point, [np.abs(expected)]):
                return False
        if changes:  # the loss and the gradient, which one call computes
            value, grads = reference.loss_and_grads(neighbour, params64, X, y)
            loss = np.asarray(value, np.float64)
            if not _fits([np.asarray(observed.loss)], [loss], point, [np.abs(loss)]):
                return False
            keys = [(i, k) for i, layer in enumerate(grads) for k in layer]
            if not _fits(
                [observed.grads[i].get(k) for i, k in keys], [grads[i][k] for i, k in keys],
                point, [magnitudes[i][k] for i, k in keys],
            ):  # fmt: skip
                return False
        if "training run" in groups:
            run = training.run(reference, neighbour, params64, X, y)
            if (
                not run_error(observed.losses, observed.params, run.losses, run.params)
                <= trajectory
            ):
                return False
        return True

    quantities = [g for g in ("predictions", "loss", "gradient", "training run") if g in groups]
    for meaning, neighbour, changes in layer_neighbours(net64) if quantities else ():
        if changes == FORWARD & groups and fits(neighbour, changes):  # just what failed
            verb = "is" if len(quantities) == 1 else "are"
            text = f"{backend}'s {listing(quantities)} {verb} the network's with {meaning}"
            return [Explanation(backend, quantities[0], "convention", None, (), text)]
    return []


def none(backend: str, quantity: str) -> Explanation:
    return Explanation(backend, quantity, "none", None, (), f"{backend}'s {quantity}{NONE}")


# --- check_backward ------------------------------------------------------------------------------


def explain_inputs(
    observed: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    oracle: str,
    tolerance: float,
) -> list[Explanation]:
    """For ``check_backward``: gradients of named inputs that disagree with ``oracle``'s
    (`fits`, each input a group) — one factor common to all, else per input a factor, a sign or
    a transpose; two inputs' gradients swapped; or none."""
    groups: Groups = {n: {"": (observed.get(n), e, None)} for n, e in expected.items()}
    wrong, found = fits(groups, tolerance, None)
    explanations = []
    for fit in found:
        names = fit.groups
        if fit.kind == "transpose":  # one explanation per input
            for n in names:
                text = f"d{n} is the {oracle}' gradient transposed"
                explanations.append(Explanation("backward", n, "transpose", None, (), text))
        elif fit.kind == "clip":
            assert fit.factor is not None
            for n in names:
                text = f"d{n} is the {oracle}' gradient clipped to ±{fit.factor:.4g}"
                explanations.append(Explanation("backward", n, "clip", fit.factor, (), text))
        elif fit.kind == "swap":
            text = f"d{names[0]} and d{names[1]} are the {oracle}' gradients swapped"
            explanations.append(Explanation("backward", ", ".join(names), "swap", None, (), text))
        else:
            assert fit.factor is not None
            explanations.append(_input_scale(names, fit.factor, oracle))
    if wrong and not explanations:
        text = f"{listing([f'd{n}' for n in wrong])}{NONE}"
        explanations.append(Explanation("backward", ", ".join(wrong), "none", None, (), text))
    return explanations


def stale_state() -> Explanation:
    """For ``check_backward``: a backward that agrees only when called right after forward at
    the same inputs."""
    text = (
        "backward used state from another forward call: it agrees with the finite differences "
        "only when called right after forward at the same inputs (a cache shared between calls)"
    )
    return Explanation("backward", "gradient", "stale_state", None, (), text)


def not_linear(factor: float | None) -> Explanation:
    """For ``check_backward``: a backward whose gradients for the cotangent 2u are not twice
    its gradients for u — ``factor`` times them (1 when it ignores its cotangent), or None when
    no one factor fits."""
    if factor is not None and abs(factor - 1) <= 1e-3:
        text = (
            "backward ignores its cotangent: it returns the same gradients for u and for 2u. "
            "A backward returns the gradient of ⟨u, y⟩, linear in u: multiply by dout"
        )
    else:
        times = "not a multiple of them" if factor is None else f"{factor:.4g} × them"
        text = (
            f"backward is not linear in its cotangent: its gradients for 2u are {times}, "
            "where the gradient of ⟨u, y⟩ doubles with u"
        )
    return Explanation("backward", "gradient", "not_linear", factor, (), text)


def _input_scale(names: Sequence[str], factor: float, oracle: str) -> Explanation:
    subject = listing([f"d{n}" for n in names])
    verb = "is" if len(names) == 1 else "are"
    if factor == 0:
        text = f"{subject} {verb} zero where the {oracle} are not"
    else:
        size = "with the sign flipped" if factor == -1 else f"{_fraction(factor)} ×"
        text = f"{subject} {verb} {size} the {oracle}"
    return Explanation("backward", ", ".join(names), _kind(factor), factor, (), text)


def listing(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
