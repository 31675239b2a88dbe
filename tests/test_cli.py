"""The gradcheck command: its default run, its options and its exit status."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gradcheck
from gradcheck.cli import main

SCRIPT = Path(sys.executable).with_name("gradcheck")


def test_console_script_verifies_the_notebook_network():
    """Every installed backend, and not a line of its framework's start-up noise on stderr."""
    result = subprocess.run([str(SCRIPT), "verify"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "3-4-1 sigmoid/sigmoid half_sse, no bias, float64" in result.stdout
    assert "4 samples, 2000 steps, lr 1" in result.stdout
    for name in gradcheck.available_backends():
        assert name in result.stdout
    verdict = f"all {len(gradcheck.available_backends())} backends agree with the reference"
    assert result.stdout.rstrip().endswith(verdict)
    assert "FAIL" not in result.stdout


def test_python_dash_m_with_json():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradcheck",
            "verify",
            "--json",
            "--steps",
            "10",
            "--dtype",
            "float32",
            "--backends",
            "numpy",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["steps"] == 10
    assert data["network"]["dtype"] == "float32"
    assert {c["backend"] for c in data["checks"]} == {"numpy", "finite differences"}
    # on the dtype ladder: numpy's float32 run against its float64 run, and that run's derivative
    parts = {c["part"] for c in data["checks"] if c["backend"] == "numpy"}
    assert parts == {"precision", "derivative"}
    seconds = data["seconds"]["numpy"]
    assert set(seconds) == {"import", "first_call", "first_train", "train", "compile"}
    assert seconds["compile"] == pytest.approx(max(seconds["first_train"] - seconds["train"], 0))
    stages = data["stages"]
    assert list(stages) == [
        "jax (the reference)", "the horizon", "numpy", "numpy in float64",
        "finite differences (auto)", "the verdict",
    ]  # fmt: skip
    assert all(s >= 0 for s in stages.values())
    assert stages["numpy"] >= seconds["first_call"] + seconds["first_train"] + seconds["train"]


def test_options_build_the_network_asked_for(capsys):
    status = main(
        [
            "verify",
            "--layers",
            "3",
            "6",
            "5",
            "1",
            "--activation",
            "tanh",
            "relu",
            "sigmoid",
            "--loss",
            "bce",
            "--bias",
            "--steps",
            "7",
            "--lr",
            "0.3",
            "--seed",
            "4",
            "--init",
            "glorot_uniform",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert status == 0
    assert data["network"] == {
        "layers": [3, 6, 5, 1],
        "input_shape": [3],
        "activations": ["tanh", "relu", "sigmoid"],
        "loss": "bce",
        "bias": True,
        "dtype": "float64",
    }
    assert (data["steps"], data["lr"]) == (7, 0.3)


def test_digits_dataset_defaults(capsys):
    status = main(
        [
            "verify",
            "--dataset",
            "digits",
            "--steps",
            "2",
            "--backends",
            "numpy",
            "--dtype",
            "float32",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "64-128-10 sigmoid/softmax softmax_ce, bias, float32" in out
    assert "1797 samples" in out


def test_training_options_build_the_run_asked_for(capsys):
    """Epochs count batches (4 samples in batches of 3: two a epoch), settings left out take
    Keras's defaults, --lr the optimizer's default, and the JSON and header record them all."""
    argv = ["verify", "--optimizer", "adam", "--beta2", "0.99", "--batch-size", "3"]
    argv += ["--epochs", "5", "--seed", "4", "--backends", "numpy", "numba"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == 10
    assert (data["batch_size"], data["seed"]) == (3, 4)
    assert data["optimizer"] == {
        "name": "adam", "lr": 0.001, "weight_decay": 0.0, "beta_1": 0.9, "beta_2": 0.99,
        "epsilon": 1e-7, "amsgrad": False, "epsilon_placement": "keras",
    }  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 samples, 10 steps; reference: jax in float64" in out
    assert "training: adam(lr=0.001, weight_decay=0, beta_1=0.9, beta_2=0.99" in out
    assert "batches of 3 (seed 4)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "--loss", "softmax_ce"], "softmax output"),
        (["verify", "--backends", "torch"], "got 'torch'"),
        (["verify", "--backends", "nowhere:thing"], "could not be imported"),
        (["verify", "--dataset", "digits", "--layers", "3", "4", "10"], "X must have layers[0]"),
        (["verify", "--activation", "relu", "tanh", "sigmoid"], "one name per weight layer"),
        (["verify", "--steps", "-1"], "steps must be a non-negative integer"),
        (["verify", "--lr", "0"], "lr must be a positive finite number"),
        (["verify", "--beta1", "0.5"], "--beta1 need --optimizer"),
        (["verify", "--optimizer", "sgd", "--beta1", "0.5"], "--beta1 does not apply to"),
        (["verify", "--optimizer", "adam", "--centered"], "--centered does not apply to"),
        (["verify", "--optimizer", "adam", "--beta2", "1"], "beta_2 must be in [0, 1); got 1.0"),
        (["verify", "--optimizer", "momentum", "--momentum", "0"], "needs a momentum in (0, 1)"),
        (
            ["verify", "--optimizer", "adam", "--epsilon-placement", "inside"],
            "epsilon_placement must be one of keras, paper; got 'inside'",
        ),
        (["verify", "--steps", "5", "--epochs", "2"], "give --steps or --epochs, not both"),
        (["verify", "--epochs", "0"], "--epochs must be a positive integer; got 0"),
        (["verify", "--batch-size", "5"], "batch_size must be None or an integer from 1 to the 4"),
        (["verify", "--batch-size", "0"], "batch_size must be None or an integer from 1"),
        (["verify", "--model", "cnn"], "dataset 'seed_xor' has no cnn network"),
        (
            ["verify", "--dataset", "digits", "--model", "cnn", "--layers", "64", "10"],
            "--layers is for the dense model; --model cnn is fixed",
        ),
        (
            ["verify", "--dataset", "digits", "--model", "cnn", "--data", "nowhere.npz"],
            "--data nowhere.npz: no such file",
        ),
    ],
)
def test_bad_usage_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["verify", "--loss", "hinge"], ["verify", "--layers", "x"], []])
def test_argparse_errors_exit_2(argv):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2


def test_a_disagreeing_backend_exits_1(tmp_path):
    (tmp_path / "my_kernels.py").write_text(
        textwrap.dedent("""
        import gradcheck

        class Sloppy:
            name = "sloppy"
            inner = gradcheck.get_backend("numpy")

            def predict(self, net, params, X):
                return self.inner.predict(net, params, X)

            def loss_and_grads(self, net, params, X, y):
                loss, grads = self.inner.loss_and_grads(net, params, X, y)
                return loss * (1 + 1e-9), grads

            def train(self, net, params, X, y, steps, lr):
                return self.inner.train(net, params, X, y, steps, lr)

        backend = Sloppy()
    """)
    )
    result = subprocess.run(
        [str(SCRIPT), "verify", "--backends", "numpy", "my_kernels:backend", "--steps", "5"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )
    assert result.returncode == 1, result.stderr
    assert "sloppy" in result.stdout
    assert "FAIL" in result.stdout


def test_bench_prints_json_rows_for_the_matrix_asked_for(capsys):
    status = main(
        [
            "bench",
            "--problems",
            "notebook",
            "--dtypes",
            "float64",
            "float32",
            "--backends",
            "numpy",
            "numba",
            "--rounds",
            "1",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0
    data = json.loads(captured.out)
    rows = data["rows"]
    assert {(r["backend"], r["dtype"]) for r in rows} == {
        *((b, d) for b in ("numpy", "numba") for d in ("float64", "float32")),
        ("floor", "float64"),  # the notebook's hand-written loop, beside the backends
    }
    for dtype in ("float64", "float32"):
        group = [r for r in rows if r["dtype"] == dtype]
        fastest = min(r["best_seconds_per_step"] for r in group)
        for r in group:  # each ratio is its own best time over the fastest of its group
            assert r["ratio_to_fastest"] == pytest.approx(r["best_seconds_per_step"] / fastest)
    assert all(r["seconds_per_step"] > 0 and r["steps"] == 2000 for r in rows)
    assert captured.err == ""  # --json is silent: no progress bar
    conditions = data["conditions"]
    assert conditions["blas_threads"] >= 1
    assert conditions["contended"] == bool(conditions["contention"])


def test_bench_table_and_chart(tmp_path, capsys):
    chart = tmp_path / "chart.png"
    status = main(
        [
            "bench",
            "--problems",
            "digits",
            "--dtypes",
            "float32",
            "--backends",
            "numpy",
            "--rounds",
            "1",
            "--plot",
            str(chart),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "% matmul" in out
    assert "plain matmul (1797x64 @ 64x128), float32" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--backends", "torch"], "got 'torch'"),
        (["bench", "--rounds", "0"], "rounds must be a positive integer"),
    ],
)
def test_bench_bad_usage_exits_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_traceback():
    """``gradcheck verify | head -1``: the command ends quietly when the pipe closes."""
    producer = subprocess.Popen(
        [str(SCRIPT), "verify", "--backends", "numpy", "--steps", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert producer.stdout is not None
    producer.stdout.close()  # the reader is gone before a line is written
    _, err = producer.communicate()
    assert err == b""


# --- on a terminal ------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as rich asks."""

    def isatty(self) -> bool:
        return True


def as_terminal(monkeypatch):
    """stdout and stderr as terminals 66 columns wide; the progress bar shown at once. (Set in
    the test itself: pytest's capture takes the streams back between setup and call.)"""
    from gradcheck import terminal as term

    out, err = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(term, "PROGRESS_DELAY", 0.0)
    monkeypatch.setenv("COLUMNS", "66")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    return out, err


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_on_a_terminal_verify_fits_the_width_in_colour_with_a_progress_bar(monkeypatch):
    out, err = as_terminal(monkeypatch)
    status = main(["verify", "--steps", "20", "--backends", "numpy", "numba"])
    assert status == 0
    text = out.getvalue()
    shown = ANSI.sub("", text)
    assert all(len(line) <= 66 for line in shown.splitlines())  # wrapped to fit
    rows = [line for line in shown.splitlines() if line.rstrip().endswith(" ok")]
    # 7 rows for each backend and 4 for the finite differences, each status whole and green
    assert text.count("\x1b[32mok\x1b[0m") == len(rows) == 18
    assert "numpy predictions" in re.sub(r"\s+", " ", shown)
    bar = ANSI.sub("", err.getvalue())  # drawn from the first stage to the last
    assert "jax (the reference)" in bar
    assert "done" in bar
    assert "600/600" in bar  # the reference, the horizon, 2 backends, finite differences, verdict


def test_the_bar_draws_every_stage_however_quick(monkeypatch):
    """Each stage's label reaches the terminal when it begins, not at rich's next refresh,
    which a stage quicker than a tenth of a second never met."""
    from gradcheck import terminal as term

    _, err = as_terminal(monkeypatch)
    stages = [f"stage {k}" for k in range(5)]
    with term.progress() as update:
        for k, label in enumerate(stages):
            update(k, len(stages), label)
    bar = ANSI.sub("", err.getvalue())
    assert all(label in bar for label in stages), bar


def test_no_color_turns_the_colour_off_and_json_the_bar(monkeypatch):
    out, err = as_terminal(monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["verify", "--steps", "20", "--backends", "numpy"]) == 0
    assert "\x1b[3" not in out.getvalue()  # no colour
    out.seek(0), out.truncate(), err.seek(0), err.truncate()
    assert main(["verify", "--steps", "20", "--backends", "numpy", "--json"]) == 0
    assert err.getvalue() == ""
    json.loads(out.getvalue())


def test_away_from_a_terminal_the_output_is_plain_and_unwrapped(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    assert main(["verify", "--steps", "20", "--backends", "numpy"]) == 0
    captured = capsys.readouterr()
    assert "\x1b[" not in captured.out
    assert captured.err == ""
    assert any(len(line) > 40 for line in captured.out.splitlines())  # not folded to COLUMNS


MYLAYERS = (
    "import gradcheck\n\n\n"
    "class Mine:\n"
    "    name = 'mine'\n\n"
    "    def __getattr__(self, method):\n"
    "        return getattr(gradcheck.get_backend('numpy'), method)\n\n\n"
    "backend = Mine()\n"
)


def test_the_console_script_imports_a_backend_from_the_current_folder(tmp_path):
    """``--backends module:object`` finds the module in the folder the command runs in, as
    ``python -m gradcheck`` does: for verify, and for bench beside the built-in backends."""
    (tmp_path / "mylayers.py").write_text(MYLAYERS)
    verified = subprocess.run(
        [str(SCRIPT), "verify", "--backends", "numpy", "mylayers:backend", "--steps", "5"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "mine " in verified.stdout
    assert verified.stdout.rstrip().endswith("both backends agree with the reference")
    benched = subprocess.run(
        [str(SCRIPT), "bench", "--backends", "numpy", "mylayers:backend", "--problems",
         "notebook", "--dtypes", "float64", "--rounds", "1", "--json"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert benched.returncode == 0, benched.stderr
    rows = json.loads(benched.stdout)["rows"]
    assert {"numpy", "mine"} <= {row["backend"] for row in rows}
