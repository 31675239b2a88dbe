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


def test_the_kernels_install_inside_the_gradcheck_namespace(tmp_path):
    """Nothing named plainly ``kernels`` (a published package of its own) comes with gradcheck;
    run from outside the repository, where the checkout's folder is not on the path."""
    code = (
        "import importlib.util, gradcheck.kernels.numpy_backprop as nb; "
        "print(importlib.util.find_spec('kernels'), nb.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.split() == ["None", "gradcheck.kernels.numpy_backprop"]
