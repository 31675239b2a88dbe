"""A framework's reverse and forward mode of a function of arrays, as NumPy callables: JAX's and
TensorFlow's, each imported only when one of its functions is differentiated. `gradcheck.rules`
checks a framework function's rules through them, and ``check_backward``'s and ``check_jvp``'s
``jax_forward`` is differentiated by `JAX`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["JAX", "TensorFlow", "as_tuple", "float64"]


def _numpy(out: Any) -> Any:
    """A framework's output as NumPy: an array, or a tuple of them."""
    if isinstance(out, (tuple, list)):
        return tuple(np.asarray(o) for o in out)
    return np.asarray(out)


def as_tuple(value: Any) -> tuple[Any, ...]:
    """A tuple as it is; anything else as the tuple of it."""
    return value if isinstance(value, tuple) else (value,)


def float64(x: Any) -> Any:
    """A float array in float64; anything else as an array, unchanged."""
    array = np.asarray(x)
    return array.astype(np.float64) if array.dtype.kind == "f" else array


class _Autodiff:
    """A framework's reverse and forward mode of a function of arrays, as NumPy callables:
    ``primal(f)`` in float64; ``vjp(f)(u, positions, *inputs)`` and ``jvp(f)(v, positions,
    *inputs)`` in the inputs' own dtypes; ``vjp_function(f, positions, n, outputs)``, the VJP
    as a framework function of the n inputs and a cotangent per output; ``has_jvp(f,
    inputs)``, whether the framework forms f's JVP from its rule, and ``NO_JVP``, why not where
    it does not."""

    NO_JVP = ""

    @staticmethod
    def has_jvp(f: Callable[..., Any], inputs: Sequence[Any]) -> bool:
        raise NotImplementedError

    @staticmethod
    def primal(f: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError

    @staticmethod
    def vjp(f: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError

    @staticmethod
    def jvp(f: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError

    @staticmethod
    def vjp_function(
        f: Callable[..., Any], positions: list[int], n: int, outputs: int = 1
    ) -> Callable[..., Any]:
        raise NotImplementedError


class JAX(_Autodiff):
    NO_JVP = "JAX forms no JVP of a jax.custom_vjp function, so only its VJP was checked"

    @staticmethod
    def has_jvp(f: Callable[..., Any], inputs: Sequence[Any]) -> bool:
        import jax

        zeros = tuple(np.zeros_like(np.asarray(x)) for x in inputs)
        try:
            jax.jvp(f, tuple(np.asarray(x) for x in inputs), zeros)
        except TypeError as error:  # "can't apply forward-mode autodiff (jvp) to a custom_vjp"
            if "custom_vjp" in str(error):
                return False
            raise
        return True

    @staticmethod
    def primal(f: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        def forward(*xs: Any) -> Any:
            with jax.enable_x64(True):
                return _numpy(f(*map(float64, xs)))

        return forward

    @staticmethod
    def vjp(f: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        def backward(u: Any, positions: list[int], *xs: Any) -> Any:
            with jax.enable_x64(True):
                out, pull = jax.vjp(JAX._of(f, positions, xs), *[xs[p] for p in positions])
                leaves = jax.tree.leaves(out)
                cast = [
                    np.asarray(c, leaf.dtype) for c, leaf in zip(as_tuple(u), leaves, strict=True)
                ]
                grads = pull(jax.tree.unflatten(jax.tree.structure(out), cast))
                return _numpy(grads) if len(positions) > 1 else np.asarray(grads[0])

        return backward

    @staticmethod
    def jvp(f: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        def jvp(v: Any, positions: list[int], *xs: Any) -> Any:
            with jax.enable_x64(True):
                tangents = tuple(np.asarray(t) for t in as_tuple(v))
                primals = tuple(xs[p] for p in positions)
                _, out = jax.jvp(JAX._of(f, positions, xs), primals, tangents)
                return _numpy(out)

        return jvp

    @staticmethod
    def vjp_function(
        f: Callable[..., Any], positions: list[int], n: int, outputs: int = 1
    ) -> Callable[..., Any]:
        import jax

        def vjp(*args: Any) -> Any:
            xs, u = args[:n], (tuple(args[n:]) if outputs > 1 else args[n])
            _, pull = jax.vjp(JAX._of(f, positions, xs), *[xs[p] for p in positions])
            grads = pull(u)
            return grads if len(positions) > 1 else grads[0]

        return vjp

    @staticmethod
    def _of(f: Callable[..., Any], positions: list[int], xs: Sequence[Any]) -> Callable[..., Any]:
        """f as a function of its differentiated inputs, the others fixed."""

        def moved(*chosen: Any) -> Any:
            args = list(xs)
            for p, x in zip(positions, chosen, strict=True):
                args[p] = x
            return f(*args)

        return moved


class TensorFlow(_Autodiff):
    NO_JVP = (
        "TensorFlow's forward mode (tf.autodiff.ForwardAccumulator) differentiates the primal "
        "operations, not the tf.custom_gradient rule, so only the rule's VJP was checked"
    )

    @staticmethod
    def has_jvp(f: Callable[..., Any], inputs: Sequence[Any]) -> bool:
        return False

    @staticmethod
    def primal(f: Callable[..., Any]) -> Callable[..., Any]:
        import tensorflow as tf

        return lambda *xs: _numpy(f(*[tf.constant(float64(x)) for x in xs]))

    @staticmethod
    def vjp(f: Callable[..., Any]) -> Callable[..., Any]:
        import tensorflow as tf

        def backward(u: Any, positions: list[int], *xs: Any) -> Any:
            args = [tf.constant(np.asarray(x)) for x in xs]
            with tf.GradientTape() as tape:
                tape.watch([args[p] for p in positions])
                out = f(*args)
            outs = list(as_tuple(out))
            cast = [
                tf.constant(np.asarray(c, o.dtype.as_numpy_dtype))
                for c, o in zip(as_tuple(u), outs, strict=True)
            ]
            found = tape.gradient(outs, [args[p] for p in positions], output_gradients=cast)
            grads = [  # None: the output does not depend on that input
                np.zeros_like(xs[p]) if g is None else np.asarray(g)
                for p, g in zip(positions, found, strict=True)
            ]
            return tuple(grads) if len(positions) > 1 else grads[0]

        return backward

    @staticmethod
    def jvp(f: Callable[..., Any]) -> Callable[..., Any]:
        import tensorflow as tf

        def jvp(v: Any, positions: list[int], *xs: Any) -> Any:
            args = [tf.constant(np.asarray(x)) for x in xs]
            primals = [args[p] for p in positions]
            tangents = [tf.constant(np.asarray(t)) for t in as_tuple(v)]
            with tf.autodiff.ForwardAccumulator(primals, tangents) as accumulator:
                out = f(*args)
            outs = as_tuple(out)
            tangent = [
                np.zeros(o.shape, o.dtype.as_numpy_dtype) if t is None else np.asarray(t)
                for o, t in zip(outs, (accumulator.jvp(o) for o in outs), strict=True)
            ]
            return tuple(tangent) if isinstance(out, (tuple, list)) else tangent[0]

        return jvp

    @staticmethod
    def vjp_function(
        f: Callable[..., Any], positions: list[int], n: int, outputs: int = 1
    ) -> Callable[..., Any]:
        import tensorflow as tf

        def vjp(*args: Any) -> Any:
            xs, u = list(args[:n]), (list(args[n:]) if outputs > 1 else args[n])
            with tf.GradientTape() as tape:
                tape.watch([xs[p] for p in positions])
                out = f(*xs)
            grads = tape.gradient(out, [xs[p] for p in positions], output_gradients=u)
            return tuple(grads) if len(positions) > 1 else grads[0]

        return vjp
