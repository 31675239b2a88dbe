import subprocess
import sys


def test_import_gradcheck_loads_no_framework():
    code = (
        "import sys, gradcheck; gradcheck.available_backends(); "
        "print(sorted(m for m in ('jax', 'tensorflow', 'keras', 'numba', 'sklearn') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
