"""TensorFlow's no-CUDA lines kept off stderr, and nothing else: the filter on the lines the
standard wheel writes (copied from a run of it on a machine without a GPU), and the capture of
file descriptor 2 in a child process, where C++ logging writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from gradcheck.quiet import without_noise

# What `gradcheck verify` printed with tensorflow 2.21's standard wheel, before the filter.
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
NO_DRIVER = (
    "I0000 00:00:1796043896.995355    3604 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
)
CUINIT = (
    "E0000 00:00:1796043900.032288    3604 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
STANDARD_WHEEL = ABSL + NO_DRIVER + ABSL + NO_DRIVER + CUINIT


def test_the_standard_wheels_lines_are_dropped():
    assert without_noise(STANDARD_WHEEL) == ""


def test_everything_else_is_kept_in_order():
    user = "UserWarning: my own warning\n"
    error = "Traceback (most recent call last):\n  ValueError: mine\n"
    assert without_noise(user + STANDARD_WHEEL + error) == user + error


def test_a_failed_cuinit_with_a_driver_present_is_a_real_error_and_kept():
    assert without_noise(ABSL + CUINIT) == ABSL + CUINIT


def test_absls_notice_stays_when_it_introduces_another_log_line():
    other = (
        "W0000 00:00:1796043900.1    3604 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
    )
    assert without_noise(ABSL + NO_DRIVER + other) == ABSL + other


def test_a_child_writing_to_descriptor_2_keeps_only_its_own_lines():
    """C++ logging writes to file descriptor 2, under Python's sys.stderr; so does the child."""
    code = textwrap.dedent(
        f"""
        import os, sys, warnings
        from gradcheck.quiet import filtered_stderr
        print("before", file=sys.stderr, flush=True)
        with filtered_stderr():
            os.write(2, {STANDARD_WHEEL!r}.encode())
            warnings.warn("the user's own warning")
            os.write(2, b"a line of the user's\\n")
        print("after", file=sys.stderr, flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    lines = result.stderr.splitlines()
    assert lines[0] == "before"
    assert "UserWarning: the user's own warning" in lines[1]
    assert lines[2:] == ["a line of the user's", "after"]
