"""The modules of src/fusedense import each other without a cycle, lazy imports included.

Edges come from the source, not from running it: every ``import`` / ``from … import`` statement
(at module level or inside a function), relative ones resolved, plus every string constant that
is exactly the dotted name of a fusedense submodule (the way ``importlib.import_module`` registries
such as ``_backends._MODULES`` or the CLI's ``COMMANDS`` name them; a bare "fusedense" is a label,
e.g. a program or system name, and docstrings are prose, so neither counts).

Packages: ``from pkg import name`` leads to the submodule ``pkg.name`` when there is one, else to
``pkg`` itself (its ``__init__``, which defines or re-exports the name). A package ``__init__``
gets only the edges its own statements make: the parent→child edges of its re-exports are real
and stay in the graph, and the implicit child→parent edge (importing ``pkg.mod`` runs
``pkg/__init__`` first) is left out, since that order is Python's own and never a cycle by itself.

The compiled modules (``fusedense._kernels.*``, from kernels/*.pyx) are leaves: a test below
checks that their sources import no Python module of the package (they ``cimport`` C declarations).
"""
import ast
import re
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src"
KERNELS = SOURCE.parent / "kernels"
PACKAGE = "fusedense"


def module_files():
    """``{dotted name: path}`` of every .py file of the package (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for path in sorted((SOURCE / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _docstrings(tree):
    """The string constants that are docstrings (first statement of a module, class or function)."""
    owners = [tree] + [node for node in ast.walk(tree)
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(owner.body[0].value) for owner in owners
            if owner.body and isinstance(owner.body[0], ast.Expr) and isinstance(owner.body[0].value, ast.Constant)}


def imports_of(name, path, modules):
    """The fusedense modules that module ``name`` (at ``path``) imports."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = _docstrings(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "." is the package the module is in (a package's own, for __init__)
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if "." in node.value and node.value in modules:
                found.add(node.value)
    # "import fusedense.x.y" names fusedense.x.y; keep the longest prefix that is one of our modules
    resolved = set()
    for target in found:
        parts = target.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        if parts:
            resolved.add(".".join(parts))
    resolved.discard(name)
    return resolved


def import_graph():
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One cycle as a list of modules (first == last), or None: depth-first search, iterative."""
    state = {}  # absent: unvisited, 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph[child])))
    return None


def test_the_import_graph_of_the_package_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_graph_sees_lazy_relative_and_by_name_imports():
    """The parser finds the edges the cycle check relies on (so a passing check means something)."""
    graph = import_graph()
    assert "fusedense.keras_io" in graph["fusedense"]  # `from .keras_io import load_keras, load_model` in __init__
    assert "fusedense.io" in graph["fusedense.keras_io"]  # `from . import io as _io`
    assert "fusedense.sklearn" in graph["fusedense"]  # by name, in the lazy-import table
    assert "fusedense._backends.cython_backend" in graph["fusedense._backends"]  # by name, importlib
    assert "fusedense.threads" in graph["fusedense._backends.cython_backend"]  # `from .. import threads`
    assert "fusedense.threads" in graph["fusedense.benchmarking.timing"]  # inside a function
    assert "fusedense.cli.demo" in graph["fusedense.cli"]  # the command table


def test_the_compiled_modules_import_no_python_module_of_the_package():
    python_imports = re.compile(r"^\s*(import\s+fusedense\b|from\s+(fusedense\b|\.)\S*\s+import\s)", re.MULTILINE)
    sources = sorted(KERNELS.glob("*.pyx")) + sorted(KERNELS.glob("*.pxd"))
    assert sources
    for path in sources:
        found = python_imports.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.name} imports a fusedense module: parse it into the graph"


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set(), "c": {"c"}}, ["c", "c"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),
])
def test_find_cycle(graph, cycle):
    assert find_cycle(graph) == cycle
