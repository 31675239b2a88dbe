"""Adapters from the ways people write kernels to `gradcheck.check_backward`'s
``forward(*inputs)`` and ``backward(u, *inputs)``.

Each returns the pair, to be unpacked into ``check_backward``::

    check_backward(*from_cache(affine_forward, affine_backward), x, w, b)
    check_backward(*from_layer(Dense, params=["W", "b"]), x, W, b)

Labels, masks and hyper-parameters travel as inputs too, held fixed with ``wrt=``::

    check_backward(*from_cache(conv_forward, conv_backward), x, w, b, conv_param,
                   names=["x", "w", "b", "conv_param"], wrt=["x", "w", "b"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gradcheck.arguments import binds, described

#: The public names, as the API reference shows them.
__all__ = [
    "Recorder",
    "from_cache",
    "from_layer",
]


def from_cache(
    forward: Callable[..., tuple[Any, Any]], backward: Callable[[Any, Any], Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Kernels written as ``forward(*inputs) -> (out, cache)`` and
    ``backward(dout, cache) -> gradients`` (a tuple, or one array for one input).

    Every backward call gets the cache of a forward call at its own inputs, made just before.

    Raises:
        TypeError: for a backward that cannot take ``(dout, cache)``, or a forward that cannot
            take the inputs, asking whether the two are swapped when the other one could.
    """
    why = binds(backward, 2)
    if why is not None:
        swapped = (
            "; forward could: are forward and backward swapped?" if not binds(forward, 2) else ""
        )
        raise TypeError(
            f"backward must take (dout, cache); {described(backward)} cannot: {why}{swapped}"
        )

    bound: set[int] = set()  # the input counts forward was found to take: a check each

    def forward_only(*inputs: Any) -> Any:
        if len(inputs) not in bound:
            why = binds(forward, len(inputs))
            if why is not None:
                swapped = binds(backward, len(inputs)) is None
                raise TypeError(
                    f"forward must take the {len(inputs)} inputs; {described(forward)} cannot: "
                    f"{why}"
                    + ("; backward could: are forward and backward swapped?" if swapped else "")
                )
            bound.add(len(inputs))
        out, _ = _pair(forward(*inputs))
        return out

    def backward_with_cache(u: Any, *inputs: Any) -> Any:
        _, cache = _pair(forward(*inputs))
        return backward(u, cache)

    return forward_only, backward_with_cache


def from_layer(
    make: Callable[[], Any],
    params: Sequence[str] = (),
    grads: Sequence[str] | Callable[[Any], Sequence[Any]] | None = None,
    forward: str = "forward",
    backward: str = "backward",
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Stateful layer objects: ``make()`` returns a fresh layer with a forward method ``(x) ->
    out`` and a backward method ``(dout) -> dx``; its parameters are set from the inputs after
    x.

    Args:
        make: builds a layer; called for every forward and backward, so no state carries over.
        params: the parameters' names, in the order they follow x among the inputs. Each is set
            as an attribute or, when the layer keeps a ``params`` dict holding the name, as an
            entry of it.
        grads: where backward leaves each parameter's gradient: attribute names or entries of a
            ``grads`` dict (default ``"d" + name``, or the name itself in ``grads``); or a
            function of the layer that returns them in the order of ``params`` — for a layer
            that hands its gradients to an optimizer, give it `Recorder`s and read them there.
        forward: the name of the layer's forward method (``forward_pass``, … in some
            libraries).
        backward: the name of its backward method (``backward_pass``, …).
    """
    params = list(params)
    grad_names = list(grads) if grads is not None and not callable(grads) else None
    if grad_names is not None and len(grad_names) != len(params):
        raise ValueError(
            f"grads must name one gradient per parameter ({len(params)}); got {grad_names}"
        )

    def build(values: Sequence[Any]) -> Any:
        if len(values) != len(params):
            raise ValueError(
                f"the layer takes x and {len(params)} parameters ({', '.join(params)}); got "
                f"{1 + len(values)} inputs"
            )
        layer = make()
        for name, value in zip(params, values, strict=True):
            store = getattr(layer, "params", None)
            if isinstance(store, dict) and name in store:
                store[name] = value
            else:
                setattr(layer, name, value)
        return layer

    def run_forward(x: Any, *values: Any) -> Any:
        return _method(build(values), forward, "forward")(x)

    def run_backward(u: Any, x: Any, *values: Any) -> tuple[Any, ...]:
        layer = build(values)
        _method(layer, forward, "forward")(x)
        dx = _method(layer, backward, "backward")(u)
        if callable(grads):
            found = list(grads(layer))
            if len(found) != len(params):
                raise ValueError(
                    f"grads(layer) must return one gradient per parameter ({len(params)}); "
                    f"got {len(found)}"
                )
        else:
            found = [_gradient(layer, name, i, grad_names) for i, name in enumerate(params)]
        return (dx, *found)

    return run_forward, run_backward


class Recorder:
    """An optimizer stand-in for layers that hand their gradients to an optimizer's
    ``update(w, grad)`` instead of keeping them: it keeps the last gradient it was given
    (``gradient``) and returns the weights unchanged. A layer that copies its optimizer per
    parameter gets a recorder per parameter."""

    gradient: Any = None

    def update(self, w: Any, grad: Any) -> Any:
        self.gradient = grad
        return w


def _method(layer: Any, name: str, role: str) -> Callable[..., Any]:
    """The layer's method called ``name``, or an error that lists the methods it has."""
    method = getattr(layer, name, None)
    if not callable(method):
        methods = sorted(
            m for m in dir(layer) if not m.startswith("_") and callable(getattr(layer, m))
        )
        raise AttributeError(
            f"the layer has no {role} method {name!r}; give from_layer({role}=...) the name of "
            f"its {role} method (its methods: {', '.join(methods)})"
        )
    return method


def _pair(result: Any) -> tuple[Any, Any]:
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(
            f"forward must return a pair (out, cache); got {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, tuple) else "")
        )
    return result


def _gradient(layer: Any, name: str, index: int, grad_names: list[str] | None) -> Any:
    store = getattr(layer, "grads", None)
    wanted = grad_names[index] if grad_names is not None else None
    for key in [wanted] if wanted else [name, f"d{name}"]:
        if isinstance(store, dict) and key in store:
            return store[key]
    attribute = wanted or f"d{name}"
    if not hasattr(layer, attribute):
        raise AttributeError(
            f"after backward the layer has no gradient for {name}: looked for attribute "
            f"{attribute!r}" + (f" and grads[{name!r}]" if isinstance(store, dict) else "")
        )
    return getattr(layer, attribute)
