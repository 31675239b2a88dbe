"""Check the derivative rules a framework function carries: ``jax.custom_vjp``,
``jax.custom_jvp`` and TensorFlow's ``tf.custom_gradient``.

A rule is the framework's own reverse mode (VJP) or forward mode (JVP) of ``f``, which a custom
rule replaces. `check_rule` forms them as the framework does and hands them to the checking core
as a hand-written backward or jvp would be (`gradcheck.check_backward`,
`gradcheck.check_jvp`): against finite differences of f's own primal computation in float64,
and against the framework's autodiff of ``reference``, the same function without the rule. With
``order=2`` the VJP is itself a function whose derivative is checked: a backward that is right
but not differentiable correctly (a ``stop_gradient`` inside it) fails there.

The framework is imported only when a rule of it is checked.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradcheck.arguments import (
    check_settings,
    chosen_inputs,
    float_input,
    input_names,
    narrowest,
)
from gradcheck.autodiff import JAX, TensorFlow, as_tuple, float64
from gradcheck.check_backward import (
    BackwardCheck,
    check_backward,
    check_jvp,
)
from gradcheck.compare import Check, against_reference
from gradcheck.tolerance import rounding_floor

#: The frameworks whose rules `check_rule` checks.
FRAMEWORKS = ("jax", "tensorflow")
#: The modes a rule is checked in: reverse (its VJP) and forward (its JVP).
MODES = ("rev", "fwd")
#: The oracle a rule is compared with when ``reference`` is given.
REFERENCE = "reference autodiff"
#: Random cotangents (tangents) the rule is compared with the reference's autodiff along.
REFERENCE_PROBES = 2


def check_rule(
    f: Callable[..., Any],
    *inputs: Any,
    modes: Sequence[str] = MODES,
    order: int = 1,
    reference: Callable[..., Any] | None = None,
    names: Sequence[str] | None = None,
    wrt: Sequence[str | int] | None = None,
    seed: int = 0,
    rtol: float | None = None,
    raise_exception: bool = True,
) -> BackwardCheck:
    """Check the derivative rules of a JAX or TensorFlow function ``f``.

    Args:
        f: a JAX function (carrying ``jax.custom_vjp`` or ``jax.custom_jvp`` rules, itself or
            inside) or a TensorFlow function (decorated with ``tf.custom_gradient``); the
            framework is told from ``f`` and, for a plain Python function, from what it
            returns. A NumPy function is refused: its hand-written backward is checked by
            `gradcheck.check_backward`.
        inputs: float arrays, or for a JAX function pytrees of them (a dict of parameters),
            checked leaf by leaf and each leaf named by its input's name and key path
            (``params['W']``); each input is differentiated unless ``wrt`` says otherwise.
        wrt: the inputs to differentiate, by name or position, or single leaves by path.
        modes: ``"rev"`` checks the VJP, ``"fwd"`` the JVP.
        order: 1, or 2 to check the VJP's own derivative as well (the VJP of the VJP).
        reference: the same function without the custom rule; its autodiff is a second oracle.
        names: a name per input for the messages, as for `gradcheck.check_backward`.
        seed: for the cotangents, tangents and directions.
        rtol: the relative tolerance for the rule's rounding, as for `gradcheck.check_backward`.
        raise_exception: raise AssertionError when a rule disagrees (the default), or return
            the result with ``ok`` False.

    Returns:
        A `gradcheck.BackwardCheck` whose checks name the rule they judge: ``vjp``, ``jvp``
        or ``vjp of vjp``.

    Raises:
        AssertionError: with ``raise_exception``, when a rule disagrees.
        ValueError, TypeError: for arguments that check nothing or cannot be checked, before any
            work is done.
    """
    __tracebackhide__ = True  # a failing check shows the caller's line, not ours
    modes = _modes(modes)
    if order not in (1, 2) or isinstance(order, bool):
        raise ValueError(f"order must be 1 or 2; got {order!r}")
    if reference is not None and not callable(reference):
        raise TypeError(
            f"reference must be the function without its rule, or None; got {reference!r}"
        )
    check_settings(1, 1, seed, rtol, 0)
    leaves = _Leaves.of(inputs, input_names(names, len(inputs)))
    positions = leaves.chosen(wrt)
    labels = leaves.labels
    arrays = list(leaves.arrays)
    for p in positions:
        arrays[p] = float_input(labels[p], arrays[p])
    framework = _framework(f, leaves.inputs(arrays))
    if framework == "jax":
        f = leaves.on_leaves(f)
        reference = None if reference is None else leaves.on_leaves(reference)
    elif leaves.trees:
        raise TypeError(
            "inputs of a TensorFlow function must be arrays; got a pytree for "
            f"{', '.join(leaves.trees)} (only a JAX function's inputs are flattened)"
        )
    autodiff = JAX if framework == "jax" else TensorFlow
    notes = []
    if "fwd" in modes and not autodiff.has_jvp(f, arrays):
        modes = tuple(m for m in modes if m != "fwd")
        notes.append(autodiff.NO_JVP)
    if not modes:
        raise ValueError(f"modes must include 'rev' for this function: {autodiff.NO_JVP}")
    # The finite differences see f in float64 from float64 inputs; the rule runs in the inputs'
    # own dtypes, and the tolerance is theirs.
    dtypes = [np.asarray(a).dtype for a in arrays]
    wide = [float64(a) for a in arrays]
    y = autodiff.primal(f)(*arrays)  # an array, or a tuple of them
    outputs = as_tuple(y)
    if rtol is None:  # the rule's rounding, in the narrowest of its inputs' dtypes
        dtype = narrowest([dtypes[p] for p in positions])
        rtol = rounding_floor(dtype, sum(np.size(o) for o in outputs))
    shared: dict[str, Any] = {
        "names": labels,
        "wrt": positions,
        "seed": seed,
        "rtol": rtol,
        "raise_exception": False,
    }
    parts = []
    if "rev" in modes:
        backward = _narrowed(autodiff.vjp(f), positions, dtypes)
        parts.append(("vjp", check_backward(autodiff.primal(f), backward, *wide, **shared)))
    if "fwd" in modes:
        jvp = _narrowed(autodiff.jvp(f), positions, dtypes)
        parts.append(("jvp", check_jvp(autodiff.primal(f), jvp, *wide, **shared)))
    if order == 2:
        parts.append(
            ("vjp of vjp", _second_order(autodiff, f, y, arrays, labels, positions, shared))
        )
    checks = [
        dataclasses.replace(c, backend=rule) if c.backend in ("backward", "jvp") else c
        for rule, part in parts
        for c in part.checks
    ]
    if reference is not None:
        checks += _against_reference(
            autodiff, f, reference, y, arrays, labels, positions, modes, seed, rtol
        )
    result = BackwardCheck(
        checks,
        parts[0][1].cotangents,
        sum(part.forward_passes for _, part in parts),
        list(dict.fromkeys([*notes, *(note for _, part in parts for note in part.notes)])),
        list({e.text: e for _, part in parts for e in part.explanations}.values()),
        rules=tuple(rule for rule, _ in parts),
    )
    if raise_exception and not result.ok:
        raise AssertionError(str(result))
    return result


@dataclasses.dataclass(frozen=True)
class _Leaves:
    """The inputs as the arrays at their leaves. A JAX pytree (a dict, list or tuple of arrays,
    or a node registered with JAX) is flattened, and each leaf is named by its input's name and
    its key path: ``params['W']``. An array is its own leaf, named as its input."""

    arrays: list[Any]
    labels: list[str]
    owners: list[int]  # the input each leaf belongs to
    input_names: list[str]
    structures: list[Any] | None  # the inputs' tree structures; None when every input is a leaf
    trees: list[str]  # the names of the inputs that are trees

    @classmethod
    def of(cls, inputs: Sequence[Any], names: list[str]) -> _Leaves:
        trees = [name for x, name in zip(inputs, names, strict=True) if _is_tree(x)]
        if not trees:
            return cls(list(inputs), names, list(range(len(inputs))), names, None, trees)
        from jax import tree_util

        arrays, labels, owners, structures = [], [], [], []
        for i, (x, name) in enumerate(zip(inputs, names, strict=True)):
            paths, structure = tree_util.tree_flatten_with_path(x)
            arrays += [leaf for _, leaf in paths]
            labels += [name + tree_util.keystr(path) for path, _ in paths]
            owners += [i] * len(paths)
            structures.append(structure)
        return cls(arrays, labels, owners, names, structures, trees)

    def chosen(self, wrt: Sequence[str | int] | None) -> list[int]:
        """The positions of the leaves ``wrt`` chooses: every leaf of an input it names or gives
        the position of, and a leaf it names by its path (``params['W']``)."""
        if wrt is None:
            return list(range(len(self.labels)))
        items = [wrt] if isinstance(wrt, (str, int)) else list(wrt)
        paths = [label for label in self.labels if label not in self.input_names]
        for item in items:
            if paths and isinstance(item, str) and item not in (*paths, *self.input_names):
                raise ValueError(
                    f"wrt must name inputs among {self.input_names}, leaves among {paths} "
                    f"or give inputs' positions; got {item!r}"
                )
        leaves = [self.labels.index(item) for item in items if item in paths]
        rest = [item for item in items if item not in paths]
        inputs = chosen_inputs(rest, self.input_names) if rest or not leaves else []
        return sorted({*leaves, *(i for i, owner in enumerate(self.owners) if owner in inputs)})

    def inputs(self, arrays: Sequence[Any]) -> tuple[Any, ...]:
        """The inputs rebuilt from their leaves."""
        if self.structures is None:
            return tuple(arrays)
        rebuilt, start = [], 0
        for structure in self.structures:
            stop = start + structure.num_leaves
            rebuilt.append(structure.unflatten(arrays[start:stop]))
            start = stop
        return tuple(rebuilt)

    def on_leaves(self, f: Callable[..., Any]) -> Callable[..., Any]:
        """JAX function ``f`` as a function of the leaves, returning its output's leaves: an
        array, or a tuple of them."""
        from jax import tree_util

        def flat(*arrays: Any) -> Any:
            out = f(*self.inputs(arrays))
            leaves, structure = tree_util.tree_flatten(out)
            return leaves[0] if tree_util.treedef_is_leaf(structure) else tuple(leaves)

        return flat


def _is_tree(x: Any) -> bool:
    """Whether x is a container of arrays: a dict, list or tuple, or a node registered with JAX
    (which is then imported already)."""
    if isinstance(x, (dict, list, tuple)):
        return True
    jax = sys.modules.get("jax")
    return jax is not None and not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(x))


def _modes(modes: Sequence[str]) -> tuple[str, ...]:
    chosen = (modes,) if isinstance(modes, str) else tuple(modes)
    if not chosen or any(mode not in MODES for mode in chosen):
        raise ValueError(f"modes must name modes among {', '.join(MODES)}; got {modes!r}")
    return chosen


def _framework(f: Any, inputs: Sequence[Any]) -> str:
    """``"jax"`` or ``"tensorflow"``: from f's type (a ``custom_vjp``, a jitted or
    ``tf.function``) or else from the type of what f returns."""
    if not callable(f):
        raise TypeError(f"f must be a JAX or TensorFlow function; got {f!r}")
    kind = _owner(type(f))
    if kind is None:
        out = f(*inputs)
        leaf = out
        while isinstance(leaf, (tuple, list, dict)) and leaf:  # its first leaf
            leaf = next(iter(leaf.values())) if isinstance(leaf, dict) else leaf[0]
        kind = _owner(type(leaf))
        if kind is None:
            raise TypeError(
                f"f must be a JAX or TensorFlow function; it returned a {type(leaf).__module__}."
                f"{type(leaf).__name__}. A NumPy function's hand-written backward is checked by "
                "gradcheck.check_backward(forward, backward, *inputs)"
            )
    return kind


def _owner(kind: type) -> str | None:
    module = kind.__module__.split(".")[0]
    if module in ("jax", "jaxlib"):
        return "jax"
    if module in ("tensorflow", "keras", "tf_keras"):
        return "tensorflow"
    return None


def _narrowed(
    rule: Callable[..., Any], positions: list[int], dtypes: list[np.dtype]
) -> Callable[..., Any]:
    """``rule(probe, positions, *inputs)`` as the core calls a backward or a jvp, with the
    inputs and the probe (a cotangent or tangents) in the inputs' own dtypes."""
    dtype = dtypes[positions[0]]

    def called(probe: Any, *xs: Any) -> Any:
        narrow = [np.asarray(x).astype(d) for x, d in zip(xs, dtypes, strict=True)]
        cast = tuple(np.asarray(p).astype(dtype) for p in as_tuple(probe))
        return rule(cast if isinstance(probe, tuple) else cast[0], positions, *narrow)

    return called


def _second_order(
    autodiff: type[JAX] | type[TensorFlow],
    f: Callable[..., Any],
    y: Any,
    arrays: list[np.ndarray],
    labels: list[str],
    positions: list[int],
    shared: dict[str, Any],
) -> BackwardCheck:
    """The VJP as a function of the inputs and its cotangents (one per output of f), checked
    like a hand-written kernel: its own VJP (the framework's, through the rule) against finite
    differences of it. ``y`` is f's output at the inputs, an array or a tuple of them."""
    dtype = arrays[positions[0]].dtype
    rng = np.random.default_rng(shared["seed"])
    us = [rng.standard_normal(np.shape(y_k)).astype(dtype) for y_k in as_tuple(y)]
    n, k = len(arrays), len(us)
    vjp = autodiff.vjp_function(f, positions, n, k)
    differentiated = [*positions, *range(n, n + k)]
    backward = _narrowed(autodiff.vjp(vjp), differentiated, [a.dtype for a in [*arrays, *us]])
    stem = "cotangent" if "u" in labels else "u"
    names = [stem] if k == 1 else [f"{stem}{i}" for i in range(k)]
    return check_backward(
        autodiff.primal(vjp),
        backward,
        *[float64(a) for a in [*arrays, *us]],
        **{**shared, "names": [*labels, *names], "wrt": differentiated},
    )


def _against_reference(
    autodiff: type[JAX] | type[TensorFlow],
    f: Callable[..., Any],
    reference: Callable[..., Any],
    y: Any,
    arrays: list[np.ndarray],
    labels: list[str],
    positions: list[int],
    modes: tuple[str, ...],
    seed: int,
    floor: float,
) -> list[Check]:
    """The rule's VJP (JVP) against the framework's autodiff of ``reference`` for
    `REFERENCE_PROBES` random cotangents (tangents), at the tolerance policy's ``floor``;
    ``y`` is f's output at the inputs."""
    rng = np.random.default_rng([seed, 1])
    dtype = arrays[positions[0]].dtype
    checks = []
    for _ in range(REFERENCE_PROBES):
        if "rev" in modes:
            us = tuple(rng.standard_normal(np.shape(v)).astype(dtype) for v in as_tuple(y))
            u = us if isinstance(y, tuple) else us[0]
            got = as_tuple(autodiff.vjp(f)(u, positions, *arrays))
            want = as_tuple(autodiff.vjp(reference)(u, positions, *arrays))
            checks += [
                against_reference("vjp", "gradient", g, w, floor, oracle=REFERENCE, input=labels[p])
                for p, g, w in zip(positions, got, want, strict=True)
            ]
        if "fwd" in modes:
            vs = [rng.standard_normal(arrays[p].shape).astype(arrays[p].dtype) for p in positions]
            v = vs[0] if len(vs) == 1 else tuple(vs)
            got = as_tuple(autodiff.jvp(f)(v, positions, *arrays))
            want = as_tuple(autodiff.jvp(reference)(v, positions, *arrays))
            name = ", ".join(labels[p] for p in positions)
            checks += [
                against_reference("jvp", "tangent", g, w, floor, oracle=REFERENCE, input=name)
                for g, w in zip(got, want, strict=True)
            ]
    return checks
