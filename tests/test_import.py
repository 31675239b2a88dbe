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
    """The project modules a module imports anywhere in it, TYPE_CHECKING blocks and function
    bodies included, named below ``gradcheck``: ``ops``, ``kernels.numpy_conv``."""
    import ast

    found = set()

    def add(dotted):  # gradcheck.x.y -> x.y
        parts = dotted.split(".")
        if parts[0] == "gradcheck" and len(parts) > 1:
            found.add(".".join(parts[1:3] if parts[1] == "kernels" else parts[1:2]))

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in ("gradcheck", "gradcheck.kernels"):
            found |= {f"{node.module}.{alias.name}".split(".", 1)[1] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradcheck."):
            add(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
    return found


def test_the_modules_of_gradcheck_and_its_kernels_import_one_another_without_a_cycle():
    import graphlib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    modules = {
        **{p.stem: p for p in (root / "gradcheck").glob("*.py") if p.stem != "__init__"},
        **{f"kernels.{p.stem}": p for p in (root / "kernels").glob("*.py") if p.stem != "__init__"},
    }
    graph = {name: _imports(path) & (modules.keys() - {name}) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > len(modules)  # the graph was read
    assert any(name.startswith("kernels.") for deps in graph.values() for name in deps)
    assert graph["kernels.numba_dense"] >= {"kernels.numba_backprop", "network", "ops"}
    tuple(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


#: The project's importable modules: the package, and the tests' own helpers.
PROJECT = {"gradcheck", "tests", "helpers", "mutants", "gallery"}


def _private(name):
    """A module's own name: one leading underscore, not a dunder nor a protocol hook such as
    IPython's ``_repr_html_``."""
    return name.startswith("_") and not name.endswith("_")


def _sources():
    """Every Python source of the project, and every Python block of its docs and README, as
    (where, text)."""
    import re

    for folder in ("gradcheck", "kernels", "tests", "bench", "docs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", page.read_text(), re.M | re.S)
        for i, block in enumerate(blocks):
            yield f"{page.relative_to(ROOT)} block {i + 1}", block


def _defined(tree):
    """The private names a module defines or assigns: functions, classes, variables,
    attributes of self and cls, dataclass fields."""
    import ast

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {name for name in names if _private(name)}


def test_no_module_reaches_into_another_modules_private_names():
    """``from m import _x`` of a project module, or ``something._x`` where ``_x`` is a private
    name another project module defines and this one does not: each is a dependency on what its
    owner may change. A test or a page uses the public names."""
    import ast

    sources = list(_sources())
    trees = {where: ast.parse(text) for where, text in sources}
    owned = {where: _defined(tree) for where, tree in trees.items()}
    project = set().union(*owned.values())
    found = []
    for where, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "gradcheck",
                "tests",
                "helpers",
                "mutants",
                "gallery",
            ):
                found += [
                    f"{where}: from {node.module} import {a.name}"
                    for a in node.names
                    if _private(a.name)
                ]
            elif (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and node.attr in project
                and node.attr not in owned[where]
            ):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
