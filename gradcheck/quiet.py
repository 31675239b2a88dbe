"""TensorFlow's report that a machine has no CUDA, kept off stderr — and nothing else.

The standard ``tensorflow`` wheel is built with CUDA. On a machine without it, TensorFlow's C++
logging writes, before any Python code can configure it (``TF_CPP_MIN_LOG_LEVEL`` does not reach
these lines), that it could not find CUDA drivers, that ``cuInit`` failed, and absl's notice that
its log is not initialised yet — five lines on every run, while TensorFlow loads and first lists
its devices. `filtered_stderr` captures file descriptor 2 for that while and writes back every
line except those: anything else written meanwhile, the user's own warnings and errors
included, reaches stderr as it was written.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: An absl log line: severity, date, time, thread, file:line] message.
_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] ")
_NO_DRIVER = re.compile(_LOG_LINE.pattern + r"Could not find cuda drivers on your machine")
_CUINIT = re.compile(_LOG_LINE.pattern + r"failed call to cuInit: ")
_ABSL_NOTICE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)


def without_noise(text: str) -> str:
    """``text`` less TensorFlow's no-CUDA lines: "could not find cuda drivers"; a failed
    ``cuInit`` when that line says there is no driver (with a driver, it is a real error); and
    absl's notice when no other log line is left for it to introduce."""
    lines = text.splitlines(keepends=True)
    no_driver = any(_NO_DRIVER.match(line) for line in lines)
    kept = [
        line
        for line in lines
        if not _NO_DRIVER.match(line) and not (no_driver and _CUINIT.match(line))
    ]
    if not any(_LOG_LINE.match(line) for line in kept):
        kept = [line for line in kept if line.rstrip("\n") != _ABSL_NOTICE]
    return "".join(kept)


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """Within the block, file descriptor 2 goes to a temporary file; at its end, whatever was
    written there goes to stderr less `without_noise`'s lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = without_noise(capture.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
