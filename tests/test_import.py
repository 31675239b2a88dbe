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


def _imports(path):
    """The gradcheck modules a module imports anywhere in it, TYPE_CHECKING blocks and
    function bodies included."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "gradcheck":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradcheck."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("gradcheck.")}
    return found


def test_the_modules_of_gradcheck_import_one_another_without_a_cycle():
    import graphlib
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "gradcheck"
    modules = {path.stem: path for path in package.glob("*.py") if path.stem != "__init__"}
    graph = {name: _imports(path) & (modules.keys() - {name}) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > len(modules)  # the graph was read
    tuple(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
