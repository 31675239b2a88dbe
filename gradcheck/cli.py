"""The ``gradcheck`` command.

``gradcheck bench`` times every backend's training loop (see ``gradcheck.benchmarks``).
``gradcheck verify`` with no options verifies the notebook's network (3-4-1, sigmoid, no bias,
½SSE, U[0,1) weights, 2000 steps of lr 1) on the notebook's four samples with every available
backend. Exit status: 0 when every backend agrees, 1 when any disagrees, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradcheck import optimizers, problems, terminal
from gradcheck.backends import Backend, available_backends, resolve
from gradcheck.benchmarks import DTYPES as BENCH_DTYPES
from gradcheck.benchmarks import PROBLEMS
from gradcheck.finite_diff import ELEMENTWISE_MAX, ELEMENTWISE_SECONDS
from gradcheck.network import (
    ACTIVATIONS,
    DTYPES,
    INIT_SCHEMES,
    LOSSES,
    Network,
    check_data,
    check_steps_lr,
)
from gradcheck.verify import FD_MODES, verify


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser; the docs' "Command line" page is generated from it."""
    parser = argparse.ArgumentParser(
        prog="gradcheck", description="Prove hand-written backpropagation right."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    verify_cmd = commands.add_parser(
        "verify",
        help="run every backend from the same weights and compare them",
        description="Run backends from the same weights and compare predictions, loss, "
        "gradients and a training run with the reference. Options left out take the "
        "dataset's defaults (seed_xor: the notebook's 3-4-1 network).",
        epilog="Exit status: 0 when every backend agrees, 1 when any disagrees, 2 on bad usage.",
    )
    verify_cmd.add_argument(
        "--dataset",
        choices=sorted({p.dataset for p in problems.PROBLEMS.values()}),
        default="seed_xor",
        help="the data, and the defaults of every option below from its problem in the catalogue",
    )
    verify_cmd.add_argument(
        "--data",
        metavar="FILE.npz",
        help="your own data: an .npz file with arrays X and y (the dataset's defaults for the "
        "network still apply; give --layers to match your data)",
    )
    verify_cmd.add_argument(
        "--model",
        choices=problems.MODELS,
        default="dense",
        help="the dataset's fully connected network; or (digits) its CNN: 8×8×1 → Conv2D 8 "
        "filters 3×3 same relu → MaxPool 2 → Flatten → Dense 10 softmax; or (digits) its "
        "normalised network, trained with Adam on batches of 64: Dense 128 no bias → BatchNorm "
        "→ relu → Dropout 0.2 → Dense 64 → LayerNorm → relu → Dense 10 softmax; or (digits) "
        "its pixel values 0-16 as 64 token ids, trained likewise: Embedding 17→8 → Flatten → "
        "Dense 10 softmax; or (digits) its 8 rows as 8 time steps, trained likewise: SimpleRNN "
        "32 (rnn) or LSTM 32 (lstm) → Dense 10 softmax; or (parity, bit streams with their "
        "running parity as a target at every step) seq: LSTM 16 returning every state → Dense "
        "2 softmax at every step",
    )
    verify_cmd.add_argument(
        "--layers", type=int, nargs="+", metavar="WIDTH", help="the widths, input to output"
    )
    verify_cmd.add_argument(
        "--activation",
        nargs="+",
        choices=ACTIVATIONS,
        metavar="NAME",
        help="one for every layer, or one per weight layer: " + ", ".join(ACTIVATIONS),
    )
    verify_cmd.add_argument("--loss", choices=LOSSES, help="the loss of the output layer")
    verify_cmd.add_argument(
        "--bias", action=argparse.BooleanOptionalAction, default=None, help="biases on every layer"
    )
    verify_cmd.add_argument(
        "--dtype", choices=DTYPES, default="float64", help="what the backends compute in"
    )
    verify_cmd.add_argument("--steps", type=int, help="the training run's steps")
    verify_cmd.add_argument("--lr", type=float, help="the learning rate")
    verify_cmd.add_argument(
        "--seed", type=int, default=0, help="the seed of the initial weights and the batch order"
    )
    training = verify_cmd.add_argument_group(
        "training",
        "The training run compared (default: plain full-batch gradient descent). Settings left "
        "out take Keras's defaults; --lr defaults to the dataset's for the SGDs and to 0.001 "
        "for rmsprop and adam.",
    )
    training.add_argument(
        "--optimizer", choices=optimizers.NAMES, help="Keras's update rule of that name"
    )
    training.add_argument("--momentum", type=float, help="momentum, nesterov (0.9), rmsprop (0)")
    training.add_argument("--rho", type=float, help="rmsprop (0.9)")
    training.add_argument("--beta1", type=float, help="adam (0.9)")
    training.add_argument("--beta2", type=float, help="adam (0.999)")
    training.add_argument("--epsilon", type=float, help="rmsprop, adam (1e-7)")
    training.add_argument(
        "--epsilon-placement",
        choices=("keras", "paper", "inside", "outside"),
        help="adam: keras or paper; rmsprop: inside or outside the square root (Keras's)",
    )
    training.add_argument("--centered", action="store_true", help="rmsprop")
    training.add_argument("--amsgrad", action="store_true", help="adam")
    training.add_argument("--weight-decay", type=float, help="decoupled, any optimizer (0)")
    training.add_argument("--batch-size", type=int, help="mini-batches (default: the full batch)")
    training.add_argument(
        "--epochs", type=int, help="train this many epochs instead of --steps steps"
    )
    verify_cmd.add_argument("--init", choices=INIT_SCHEMES, help="how the weights are drawn")
    verify_cmd.add_argument(
        "--backends",
        nargs="+",
        metavar="BACKEND",
        help="built-in names, or module:object for your own backend, its module imported from "
        "the current folder or the installed packages (default: all available)",
    )
    verify_cmd.add_argument(
        "--finite-differences",
        choices=(*FD_MODES, "none"),
        default="auto",
        help="the finite-difference oracle: every parameter, random directions, or none "
        f"(default auto: every parameter up to {ELEMENTWISE_MAX} estimated to take at most "
        f"{ELEMENTWISE_SECONDS:g} s)",
    )
    verify_cmd.add_argument(
        "--timing",
        action="store_true",
        help="train each backend a second time and report training and compile time apart",
    )
    verify_cmd.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every implementation this many times from the same inputs and report each "
        "one's run-to-run difference (default 1: once)",
    )
    verify_cmd.add_argument(
        "--json", action="store_true", help="print the report as JSON (timings included)"
    )

    bench_cmd = commands.add_parser(
        "bench",
        help="time every backend's training loop and print the ratios",
        description="Time each backend's training run on the notebook and digits problems in "
        "float64 and float32: the best and the median time per step of rounds interleaved "
        "across the backends, the ratio of the bests to the fastest, GFLOP/s against a "
        "plain matmul measured in the same run, and the first call's compile time.",
    )
    bench_cmd.add_argument(
        "--backends",
        nargs="+",
        metavar="BACKEND",
        help="built-in names, or module:object for your own backend, as for verify "
        "(default: all available)",
    )
    bench_cmd.add_argument(
        "--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS), help="what to train"
    )
    bench_cmd.add_argument(
        "--dtypes", nargs="+", choices=BENCH_DTYPES, default=list(BENCH_DTYPES), help="in which"
    )
    bench_cmd.add_argument(
        "--rounds",
        type=int,
        default=20,
        help="timed rounds per backend, interleaved with the others' (default 20)",
    )
    bench_cmd.add_argument(
        "--single-thread",
        action="store_true",
        help="run BLAS, JAX, TensorFlow and Numba on one thread each: slower, but ratios that "
        "hold up on a machine busy with other work",
    )
    bench_cmd.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_cmd.add_argument(
        "--plot", metavar="FILE.png", help="also write a chart of the times and loss curves"
    )
    return parser


def _backend(spec: str) -> Backend:
    """A built-in backend by name, or a user's backend given as ``module:object``, its module
    imported from the current folder first (as ``python -m gradcheck`` does), then from the
    installed packages."""
    if ":" not in spec:
        return resolve(spec)
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return resolve(getattr(importlib.import_module(module_name), attribute))
    except (ImportError, AttributeError) as error:
        raise ValueError(f"backend {spec!r} could not be imported: {error}") from error


def _load(path: str) -> tuple[Any, Any]:
    """X and y from an .npz file, without unpickling anything."""
    if not os.path.isfile(path):
        raise ValueError(f"--data {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"--data {path} is not an .npz file (a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"X", "y"} - set(data.files)
            if missing:
                raise ValueError(
                    f"--data {path} must hold arrays X and y; it has {sorted(data.files)}"
                )
            return data["X"], data["y"]
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"--data {path} could not be read: {error}") from None
    except ValueError as error:
        if "pickle" in str(error):
            raise ValueError(f"--data {path} holds pickled objects, which are not loaded") from None
        raise


def _problem(args: argparse.Namespace) -> dict[str, Any]:
    """verify()'s arguments from the command line, every one checked before any work."""
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1; got {args.repeats}")
    preset = problems.for_dataset(args.dataset, args.model)
    if args.model != "dense":
        for flag in ("layers", "activation", "bias"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} is for the dense model; --model {args.model} is fixed")
    options = {
        key: value if value is not None else getattr(preset, key)
        for key, value in {
            "layers": args.layers,
            "activation": args.activation,
            "loss": args.loss,
            "bias": args.bias,
            "init": args.init,
            "steps": args.steps,
            "lr": args.lr,
        }.items()
    }
    activation = options["activation"]
    net = Network(
        options["layers"],
        activation=activation[0]
        if isinstance(activation, list) and len(activation) == 1
        else activation,
        loss=options["loss"],
        bias=options["bias"],
        dtype=args.dtype,
        input_shape=preset.input_shape,  # type: ignore[arg-type]
    )
    X, y = check_data(net, *(_load(args.data) if args.data else preset.data()))
    batch_size = args.batch_size if args.batch_size is not None else preset.batch_size
    optimizers.batch_schedule(len(X), batch_size, 0, args.seed)  # refuses bad ones
    if args.epochs is not None:
        if args.steps is not None:
            raise ValueError("give --steps or --epochs, not both")
        if args.epochs < 1:
            raise ValueError(f"--epochs must be a positive integer; got {args.epochs}")
        options["steps"] = args.epochs * math.ceil(len(X) / (batch_size or len(X)))
    optimizer = _optimizer(args, preset.lr)
    if optimizer is None and preset.optimizer is not None:  # the problem's own, at --lr
        lr = preset.optimizer.lr if args.lr is None else args.lr
        optimizer = dataclasses.replace(preset.optimizer, lr=lr)
    steps, lr = check_steps_lr(
        options["steps"], options["lr"] if optimizer is None else optimizer.lr
    )
    return {
        "net": net,
        "X": X,
        "y": y,
        "params": net.init(seed=args.seed, scheme=options["init"]),
        "backends": None if args.backends is None else [_backend(s) for s in args.backends],
        "steps": steps,
        "lr": lr if optimizer is None else None,
        "optimizer": optimizer,
        "batch_size": batch_size,
        "seed": args.seed,
        "timing": args.timing or args.json,
        "repeats": args.repeats,
        "finite_differences": None
        if args.finite_differences == "none"
        else args.finite_differences,
    }


#: The optimizer setting of each training option.
_SETTINGS = {
    "--momentum": "momentum",
    "--rho": "rho",
    "--beta1": "beta_1",
    "--beta2": "beta_2",
    "--epsilon": "epsilon",
    "--epsilon-placement": "epsilon_placement",
    "--centered": "centered",
    "--amsgrad": "amsgrad",
    "--weight-decay": "weight_decay",
}


def _optimizer(args: argparse.Namespace, dataset_lr: float) -> optimizers.Optimizer | None:
    """The optimizer the training options ask for; None for plain gradient descent at --lr."""
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in _SETTINGS}
    given = {flag: v for flag, v in values.items() if v is not None and v is not False}
    if args.optimizer is None:
        if given:
            raise ValueError(f"{', '.join(given)} need --optimizer")
        return None
    for flag in given:
        if not optimizers.accepts(args.optimizer, _SETTINGS[flag]):
            raise ValueError(f"{flag} does not apply to --optimizer {args.optimizer}")
    lr = args.lr if args.lr is not None else optimizers.DEFAULT_LR[args.optimizer] or dataset_lr
    return optimizers.make(args.optimizer, lr, **{_SETTINGS[f]: v for f, v in given.items()})


def _bench(args: argparse.Namespace) -> int:
    from gradcheck import benchmarks

    # an unknown or missing backend, or a module:object that does not import, is bad usage,
    # found before any timing
    backends = [_backend(spec) for spec in args.backends or available_backends()]
    if args.rounds < 1:
        raise ValueError(f"rounds must be a positive integer; got {args.rounds}")
    if args.single_thread:
        benchmarks.pin_framework_threads()
    with terminal.progress(enabled=not args.json) as progress:
        rows, conditions = benchmarks.run(
            backends,
            args.problems,
            args.dtypes,
            args.rounds,
            progress=progress,
            single_thread=args.single_thread,
        )
    if args.json:
        terminal.emit(json.dumps(benchmarks.to_dict(rows, conditions), indent=2))
    else:
        terminal.show(*benchmarks.summary(rows, conditions))
    if args.plot:
        benchmarks.plot(rows, backends, args.plot)
        print(f"chart written to {args.plot}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        try:
            return _bench(args)
        except (ValueError, ImportError) as error:
            print(f"gradcheck: error: {error}", file=sys.stderr)
            return 2
    try:
        problem = _problem(args)
    except (ValueError, TypeError, ImportError) as error:
        print(f"gradcheck: error: {error}", file=sys.stderr)
        return 2
    with terminal.progress(enabled=not args.json) as progress:
        report = verify(**problem, progress=progress)
    if args.json:
        terminal.emit(json.dumps(report.to_dict(), indent=2))
    else:
        terminal.show(report)
    return 0 if report.ok else 1
