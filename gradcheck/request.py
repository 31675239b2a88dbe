"""A verify call's request: its arguments checked once, before any work, and the problem each
implementation runs — in the net's dtype, and upcast exactly to float64 for the reference."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from gradcheck.arguments import is_count
from gradcheck.backends import Backend, Training, available_backends, resolve
from gradcheck.compare import Check
from gradcheck.finite_diff import MODES
from gradcheck.ladder import DERIVATIVE
from gradcheck.network import (
    Network,
    Params,
    as_network,
    check_batches,
    check_data,
    check_params,
    check_steps_lr,
)
from gradcheck.optimizers import Optimizer, as_optimizer, batch_schedule
from gradcheck.terminal import Progress

#: The public names, as the API reference shows them.
__all__ = ["Inputs", "Reference", "Request"]


class Inputs(NamedTuple):
    """What one implementation runs on: the network, its params and the data, in one dtype."""

    net: Network
    params: Params
    X: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Reference:
    """The backend the others are compared with, and the names of its float64 run: ``name``,
    under which it votes — the backend's own for a float64 net, whose float64 run is the
    reference; ``"jax in float64"`` for a float32 net, whose float32 run is judged like the
    others — and ``label``, as the report shows it."""

    backend: Backend
    dtype: str

    @property
    def label(self) -> str:
        return f"{self.backend.name} in float64"

    @property
    def name(self) -> str:
        return self.backend.name if self.dtype == "float64" else self.label


@dataclass(frozen=True)
class Request:
    """One verify call, validated (`Request.of`): the problem in the net's dtype (`inputs`) and
    in float64 (`inputs64`), the backends, the reference, the training run, and how to witness,
    time, repeat and report progress."""

    inputs: Inputs
    backends: list[Backend]
    reference: Reference
    training: Training
    finite_differences: str | None
    timing: bool
    repeats: int
    progress: Progress | None
    #: On the dtype ladder (`gradcheck.ladder`), each backend judged in a narrower dtype that
    #: also runs in float64, by name: its float64 run's name.
    float64_runs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        net: Network,
        X: Any,
        y: Any,
        params: Params | None,
        backends: Sequence[str | Backend] | None,
        steps: int,
        lr: float | None,
        reference: str | Backend | None,
        finite_differences: str | None,
        optimizer: Optimizer | None,
        batch_size: int | None,
        seed: int,
        progress: Progress | None,
        repeats: int,
        timing: bool,
    ) -> Request:
        """verify's arguments checked, before any work is done: a clear error for each bad
        one."""
        net = as_network(net)
        X, y = check_data(net, X, y)
        params = check_params(net, net.init() if params is None else params)
        optimizer = as_optimizer(optimizer, 1.0 if lr is None and optimizer is None else lr)
        steps, _ = check_steps_lr(steps, optimizer.lr)
        batch_schedule(len(X), batch_size, steps, seed)  # refuses a bad batch_size or seed
        check_batches(net, len(X), batch_size)
        if progress is not None and not callable(progress):
            raise TypeError(
                f"progress must be a callable (done, total, label) or None; got {progress!r}"
            )
        if not is_count(repeats, 1):
            raise ValueError(f"repeats must be an integer of at least 1; got {repeats!r}")
        if finite_differences is not None and finite_differences not in MODES:
            raise ValueError(
                f"finite_differences must be one of {', '.join(MODES)} or None; "
                f"got {finite_differences!r}"
            )
        requested = [resolve(b) for b in (available_backends() if backends is None else backends)]
        if not requested:
            raise ValueError("backends must name at least one backend; got none")
        names = [b.name for b in requested]
        if len(set(names)) != len(names):
            raise ValueError(f"backends must have distinct names; got {names}")
        if reference is None:
            reference = "jax" if "jax" in available_backends() else requested[0]
        reference = resolve(reference)
        untrained = list(
            dict.fromkeys(b.name for b in [*requested, reference] if not hasattr(b, "train"))
        )
        if steps > 0 and untrained:
            raise ValueError(
                f"steps must be 0 for a backend without a train method "
                f"({', '.join(untrained)}), which compares predictions, loss and gradients "
                f"only; got {steps}"
            )
        return cls(
            inputs=Inputs(net, params, X, y),
            backends=requested,
            reference=Reference(reference, net.dtype),
            training=Training(steps, optimizer, batch_size, seed),
            finite_differences=finite_differences,
            timing=timing,
            repeats=repeats,
            progress=progress,
        )

    @property
    def net(self) -> Network:
        return self.inputs.net

    @cached_property
    def inputs64(self) -> Inputs:
        """The problem upcast exactly to float64, which the reference and the witness run."""
        net64 = dataclasses.replace(self.net, dtype="float64")
        return Inputs(
            net64,
            check_params(net64, self.inputs.params),
            net64.inputs(self.inputs.X),
            self.inputs.y.astype(np.float64),
        )

    @property
    def others(self) -> list[Backend]:
        """The backends judged against the reference: every one but the reference itself."""
        return [b for b in self.backends if b.name != self.reference.name]

    def inputs_of(self, name: str) -> Inputs:
        """What the implementation ``name`` runs on: the reference's float64 run and the
        backends' float64 runs run on `inputs64`, every other backend in the net's dtype."""
        return self.inputs64 if name in self.in_float64 else self.inputs

    @property
    def in_float64(self) -> set[str]:
        """The implementations that run in float64 whatever the net's dtype: the reference's
        run and the backends' float64 runs."""
        return {self.reference.name, *self.float64_runs.values()}

    def backend_of(self, name: str) -> Backend | None:
        """The backend judged under the name ``name``, a float64 run's included; None for the
        reference's own run and the finite differences."""
        runs = {b.name: b for b in self.others}
        runs |= {run: runs[name] for name, run in self.float64_runs.items()}
        return runs.get(name)

    def run_of(self, check: Check) -> str:
        """The run a check judges: a backend's float64 run for its derivative on the dtype
        ladder (the check names the backend), else the implementation it names."""
        return self.float64_runs[check.backend] if check.part == DERIVATIVE else check.backend

    def own_float64_run(self, name: str) -> str | None:
        """On the dtype ladder, the float64 run a narrow run's precision is judged against: the
        backend's own, or the reference's for the reference's backend; None off the ladder."""
        if name in self.float64_runs:
            return self.float64_runs[name]
        narrow = self.reference.name != self.reference.backend.name
        return self.reference.name if narrow and name == self.reference.backend.name else None

    @property
    def sizes(self) -> tuple[int, ...]:
        """(N, K): samples and outputs, after which a factor is named; (N, K, T) for outputs
        at T time steps."""
        N, shape = self.inputs.X.shape[0], self.net.output_shape
        return (N, self.net.outputs) if len(shape) == 1 else (N, self.net.outputs, shape[0])
