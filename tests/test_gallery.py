"""The checker measured on hand-written layers (tests/gallery.py), at realistic sizes.

Every correct kernel passes for every seed and dtype the plugin's fixtures give (`make
test-thorough` runs ``--gradcheck-seeds 20`` over float64 and float32; `make test` each kernel
once, the dtype and seed in turn) — no false alarm, at a kink, in float32, or anywhere; every
realistic bug is caught (by `make test` once, the dtype and seed in turn; by `make
test-thorough` in both dtypes at three seeds); and the layer-object style checks the same
arithmetic as the ``(out, cache)`` style.
"""

from __future__ import annotations

import numpy as np
import pytest
from gallery import KERNELS, layer_class
from helpers import DTYPES, SEEDS, in_turn

from gradcheck import check_backward
from gradcheck.adapters import from_cache, from_layer

#: The bugs are checked over these seeds: a caught bug is caught at every seed.
BUG_SEEDS = (0, 1, 2)
NAMES = list(KERNELS)

PLANTED = [(kernel, bug) for kernel, k in KERNELS.items() for bug in k.bugs]


def _default(kernel, bug):
    """The default suite's dtype and seed for a bug: each in turn. A bug below float32's own
    resolution (a leaky relu's slope of 0.01 left out) is caught in float32 too, by the dtype
    ladder's float64 run."""
    return in_turn(PLANTED.index((kernel, bug)), DTYPES, BUG_SEEDS)


BUGS = [
    pytest.param(
        kernel,
        bug,
        dtype,
        seed,
        marks=() if (dtype, seed) == _default(kernel, bug) else pytest.mark.thorough,
    )
    for kernel, bug in PLANTED
    for dtype in DTYPES
    for seed in BUG_SEEDS
]


def _inputs(kernel, seed, dtype):
    return kernel.inputs(np.random.default_rng(seed), dtype)


def _check(kernel, backward, inputs, seed):
    return check_backward(
        *from_cache(kernel.forward, backward),
        *inputs,
        names=kernel.names,
        wrt=kernel.wrt,
        seed=seed,
        raise_exception=False,
    )


@pytest.mark.sweep(
    keep=lambda p: (
        (p["gradcheck_dtype"], p["gradcheck_seed"])
        == in_turn(NAMES.index(p["name"]), DTYPES, SEEDS)
    )
)
@pytest.mark.parametrize("name", NAMES)
def test_a_correct_kernel_is_never_flagged(name, gradcheck_dtype, gradcheck_seed):
    kernel = KERNELS[name]
    result = _check(kernel, kernel.backward, _inputs(kernel, gradcheck_seed, gradcheck_dtype), 0)
    assert result.ok, str(result)
    assert {f.input for f in result.findings} == set(kernel.wrt)


@pytest.mark.parametrize(("name", "bug", "dtype", "seed"), BUGS)
def test_a_realistic_bug_is_caught(name, bug, dtype, seed):
    kernel = KERNELS[name]
    result = _check(kernel, kernel.bugs[bug], _inputs(kernel, seed, dtype), seed)
    assert not result.ok, str(result)


def test_every_kernel_has_two_bugs():
    for name, kernel in KERNELS.items():
        assert len(kernel.bugs) >= 2, name


# the default slice: every third kernel, the dtype in turn
@pytest.mark.sweep(
    keep=lambda p: (
        NAMES.index(p["name"]) % 3 == 0
        and (p["dtype"],) == in_turn(NAMES.index(p["name"]) // 3, DTYPES)
    )
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [n for n in NAMES if KERNELS[n].names[0] in KERNELS[n].wrt])
def test_the_layer_object_style_checks_the_same(name, dtype):
    """The kernel as a stateful layer, through from_layer: correct passes, a bug fails. (A
    layer whose input is not differentiated, an Embedding's ids, has no such style.)"""
    kernel = KERNELS[name]
    inputs = _inputs(kernel, 0, dtype)
    fixed = {n: v for n, v in zip(kernel.names, inputs, strict=True) if n in kernel.fixed}
    given = [v for n, v in zip(kernel.names, inputs, strict=True) if n in kernel.wrt]
    names = [n for n in kernel.names if n in kernel.wrt]
    bug = next(iter(kernel.bugs))
    for backward, should_pass in [(None, True), (kernel.bugs[bug], False)]:
        layer = layer_class(kernel, backward, **fixed)
        result = check_backward(
            *from_layer(layer, params=kernel.params), *given, names=names, raise_exception=False
        )
        assert result.ok is should_pass, str(result)
