"""First-call costs, each in a fresh process so nothing is already compiled or imported.

``numba`` compiles on its first call and caches the machine code on disk; the cold figure uses
an empty cache directory, the cached one a cache filled by an earlier process. ``jax`` and
``keras`` trace and compile their training loops in every new process (keras's figure leaves out
importing TensorFlow, which happens at the backend's first use). The timed figure is the whole
process; the summary gives the first training call alone, less a second, warm call of the same
size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gradcheck

FIRST_CALL = """
import json, sys, time
import gradcheck
from gradcheck import benchmarks
case = benchmarks.case("notebook", "float64")
start = time.perf_counter()
case.train(sys.argv[1])
first = time.perf_counter() - start
start = time.perf_counter()
case.train(sys.argv[1])
print(json.dumps({"first": first, "warm": time.perf_counter() - start}))
"""


def _first_call(name: str, cache_dir: Path | None) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)} if cache_dir else None
    result = subprocess.run(
        [sys.executable, "-c", FIRST_CALL, name],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).parent,
    )
    seconds = json.loads(result.stdout)
    return seconds["first"] - seconds["warm"]


CASES = [
    pytest.param(name, cached, id=f"{name}-{'cached' if cached else 'cold'}")
    for name in ("numba", "jax", "keras")
    if name in gradcheck.available_backends()
    for cached in ((False, True) if name == "numba" else (False,))
]


# Untimed, every case runs the same script in the same cache: the first one is enough.
@pytest.mark.untimed(keep=lambda p: [p["name"], p["cached"]] == list(CASES[0].values))
@pytest.mark.parametrize(("name", "cached"), CASES)
def test_first_call(machine, first_calls, tmp_path, name, cached):
    # Untimed (make test), a case only has to run: in the project's own Numba cache, which the
    # tests have filled, rather than compiling everything again in an empty one.
    cache_dir = None if machine.disabled else tmp_path
    if cached and cache_dir:
        _first_call(name, cache_dir)  # fill the cache
    machine.group = "first training call in a fresh process (notebook, float64)"
    compile_seconds = machine.pedantic(_first_call, args=(name, cache_dir), rounds=1)
    machine.extra_info["first_call_minus_warm_s"] = compile_seconds
    label = f"{name} {'cached' if cached else 'cold'}"
    if not machine.disabled:
        first_calls[label] = compile_seconds
