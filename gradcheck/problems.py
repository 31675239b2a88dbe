"""The catalogue of problems: each network, its data, its starting weights and its training run,
defined once for ``gradcheck verify``, ``gradcheck bench`` and the benchmarks in bench/.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gradcheck import datasets
from gradcheck.backends import Training
from gradcheck.network import Network, Params
from gradcheck.optimizers import SGD, Adam, Optimizer


@dataclass(frozen=True)
class Problem:
    """A named problem. ``steps`` is the training run ``verify`` compares — plain full-batch
    gradient descent at ``lr``, or ``optimizer`` on batches of ``batch_size`` — and a benchmark
    round times ``bench_steps`` of the same steps."""

    name: str
    #: The function in `gradcheck.datasets` that gives X and y.
    dataset: str
    layers: tuple[int, ...]
    #: One name for every weight layer, or one per weight layer.
    activation: str | tuple[str, ...]
    loss: str
    bias: bool
    init: str
    steps: int
    lr: float
    bench_steps: int
    optimizer: Optimizer | None = None
    batch_size: int | None = None

    def training(self, steps: int) -> Training:
        """``steps`` of the problem's training, its batches drawn from seed 0."""
        return Training(steps, self.optimizer or SGD(self.lr), self.batch_size)

    def network(self, dtype: str = "float64") -> Network:
        return Network(
            self.layers, activation=self.activation, loss=self.loss, bias=self.bias, dtype=dtype
        )

    def data(self, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
        X, y = getattr(datasets, self.dataset)()
        return X.astype(dtype), y.astype(dtype)

    def params(self, dtype: str = "float64", seed: int = 0) -> Params:
        return self.network(dtype).init(seed=seed, scheme=self.init)

    def describe(self) -> str:
        return f"{self.name} {'-'.join(map(str, self.layers))}"


# The notebook: 3-4-1 sigmoid, no biases, ½SSE, U[0,1) weights, 2000 full-batch steps of 1.
_NOTEBOOK = Problem(
    "notebook",
    dataset="seed_xor",
    layers=(3, 4, 1),
    activation="sigmoid",
    loss="half_sse",
    bias=False,
    init="uniform",
    steps=2000,
    lr=1.0,
    bench_steps=2000,
)
# 1797 digits, 64-128-10, sigmoid then softmax with softmax_ce, full batch.
_DIGITS = Problem(
    "digits",
    dataset="digits",
    layers=(64, 128, 10),
    activation=("sigmoid", "softmax"),
    loss="softmax_ce",
    bias=True,
    init="glorot_uniform",
    steps=100,
    lr=0.5,
    bench_steps=10,
)
# The same network trained as people train it: Adam with Keras's defaults, batches of 64,
# 3 epochs (29 batches an epoch, the last of 5).
_DIGITS_ADAM = replace(
    _DIGITS,
    name="digits_adam",
    steps=87,
    lr=1e-3,
    bench_steps=87,
    optimizer=Adam(1e-3),
    batch_size=64,
)
PROBLEMS: dict[str, Problem] = {p.name: p for p in (_NOTEBOOK, _DIGITS, _DIGITS_ADAM)}


def for_dataset(dataset: str) -> Problem:
    """The first problem defined on ``dataset`` (the command line's ``--dataset``), whose
    training is plain gradient descent."""
    for problem in PROBLEMS.values():
        if problem.dataset == dataset:
            return problem
    names = ", ".join(p.dataset for p in PROBLEMS.values())
    raise ValueError(f"dataset must be one of {names}; got {dataset!r}")
