"""The catalogue of problems: each network, its data, its starting weights and its training run,
defined once for ``gradcheck verify``, ``gradcheck bench`` and the benchmarks in bench/.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gradcheck import datasets
from gradcheck.backends import Training
from gradcheck.layers import (
    LSTM,
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Layer,
    LayerNorm,
    MaxPool2D,
    SimpleRNN,
)
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
    #: Widths, or a list of layers (with ``input_shape``).
    layers: tuple[int, ...] | tuple[Layer, ...]
    #: For widths: one name for every weight layer, or one per weight layer.
    activation: str | tuple[str, ...] | None
    loss: str
    bias: bool | None
    init: str
    steps: int
    lr: float
    bench_steps: int
    optimizer: Optimizer | None = None
    batch_size: int | None = None
    #: The network's kind on the command line (``--model``): ``dense``, ``cnn``, ``norm``,
    #: ``embed``, ``rnn``, ``lstm`` or ``seq``.
    model: str = "dense"
    #: One sample's shape for a list of layers; the data then come as images.
    input_shape: tuple[int, ...] | None = None

    def training(self, steps: int) -> Training:
        """``steps`` of the problem's training, its batches (and Dropout masks) drawn from seed
        0."""
        return Training(steps, self.optimizer or SGD(self.lr), self.batch_size)

    def network(self, dtype: str = "float64") -> Network:
        return Network(
            self.layers,
            activation=self.activation,
            loss=self.loss,
            bias=self.bias,  # type: ignore[arg-type]
            dtype=dtype,
            input_shape=self.input_shape,  # type: ignore[arg-type]
        )

    def data(self, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
        load = getattr(datasets, self.dataset)
        forms = {
            "cnn": {"images": True},
            "embed": {"tokens": True},
            "rnn": {"sequences": True},
            "lstm": {"sequences": True},
        }
        X, y = load(**forms.get(self.model, {}))
        return self.network(dtype).inputs(X), y.astype(dtype)

    def params(self, dtype: str = "float64", seed: int = 0) -> Params:
        return self.network(dtype).init(seed=seed, scheme=self.init)

    def describe(self) -> str:
        if self.model != "dense":
            return f"{self.name} {self.model}"
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
# The digits as 8×8 images through a small CNN: 8 3×3 filters, relu, 2×2 max pooling, then
# a softmax layer; full-batch gradient descent.
_DIGITS_CNN = Problem(
    "digits_cnn",
    dataset="digits",
    layers=(
        Conv2D(8, 3, padding="same", activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(10, activation="softmax"),
    ),
    activation=None,
    loss="softmax_ce",
    bias=None,
    init="glorot_uniform",
    steps=100,
    lr=0.5,
    bench_steps=10,
    model="cnn",
    input_shape=(8, 8, 1),
)
# The digits through the layers people write by hand around a hidden layer: a Dense layer
# without bias (a BatchNorm's β is its bias), batch norm, relu, dropout, then a Dense layer with
# layer norm and relu, and a softmax layer; Adam on batches of 64 for 3 epochs, as digits_adam.
_DIGITS_NORM = replace(
    _DIGITS_ADAM,
    name="digits_norm",
    layers=(
        Dense(128, bias=False),
        BatchNorm(),
        Activation("relu"),
        Dropout(0.2),
        Dense(64),
        LayerNorm(),
        Activation("relu"),
        Dense(10, activation="softmax"),
    ),
    activation=None,
    bias=None,
    model="norm",
    input_shape=(64,),
)
# The digits as text: each image's 64 pixel values, 0 to 16, are 64 token ids, each looked up in
# an embedding of 8, then flattened into a softmax layer; Adam on batches of 64 for 3 epochs.
_DIGITS_EMBED = replace(
    _DIGITS_NORM,
    name="digits_embed",
    layers=(Embedding(17, 8), Flatten(), Dense(10, activation="softmax")),
    model="embed",
)
# The digits as sequences: each image's 8 rows are 8 time steps of 8 pixels, read by a SimpleRNN
# (or an LSTM) of 32 units whose last state feeds a softmax layer; Adam on batches of 64 for
# 3 epochs.
_DIGITS_RNN = replace(
    _DIGITS_NORM,
    name="digits_rnn",
    layers=(SimpleRNN(32), Dense(10, activation="softmax")),
    model="rnn",
    input_shape=(8, 8),
)
_DIGITS_LSTM = replace(
    _DIGITS_RNN,
    name="digits_lstm",
    layers=(LSTM(32), Dense(10, activation="softmax")),
    model="lstm",
)
# Sequence to sequence: 1024 bit streams of 10 steps, and at every step whether the bits so far
# hold an odd number of ones; an LSTM of 16 units returns every state, and a softmax layer acts
# on each; Adam on batches of 64 for 3 epochs (16 batches an epoch).
_PARITY = replace(
    _DIGITS_RNN,
    name="parity_seq",
    dataset="parity",
    layers=(LSTM(16, return_sequences=True), Dense(2, activation="softmax")),
    steps=48,
    bench_steps=48,
    model="seq",
    input_shape=(10, 1),
)
PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in (
        _NOTEBOOK,
        _DIGITS,
        _DIGITS_ADAM,
        _DIGITS_CNN,
        _DIGITS_NORM,
        _DIGITS_EMBED,
        _DIGITS_RNN,
        _DIGITS_LSTM,
        _PARITY,
    )
}
MODELS = ("dense", "cnn", "norm", "embed", "rnn", "lstm", "seq")


def for_dataset(dataset: str, model: str = "dense") -> Problem:
    """The first problem defined on ``dataset`` with a ``model`` network (the command line's
    ``--dataset`` and ``--model``): for ``dense`` and ``cnn`` one trained by plain gradient
    descent, for the others with Adam on mini-batches."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
    for problem in PROBLEMS.values():
        if problem.dataset == dataset and problem.model == model:
            return problem
    models = [problem.model for problem in PROBLEMS.values() if problem.dataset == dataset]
    if models:
        raise ValueError(
            f"dataset {dataset!r} has no {model} network; its models: "
            f"{', '.join(dict.fromkeys(models))}"
        )
    names = ", ".join(dict.fromkeys(p.dataset for p in PROBLEMS.values()))
    raise ValueError(f"dataset must be one of {names}; got {dataset!r}")
