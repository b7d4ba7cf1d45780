"""The package's layers hold (docs/architecture.md): no import cycles, lazy imports included;
no layer imports one above it; the DAG and the report import no torch; every import inside a
function says why it is there."""

import ast
import subprocess
import sys

import pytest

from conftest import REPO

SRC = REPO / "src"

# Layer of each top-level part of the package, lowest first. A module may import its own
# layer and those below it, never one above.
LAYERS = {
    "core": 0,  # runtime, writers, paths, progress, config, metrics, results
    "data": 1,
    "weights": 1,
    "features": 2,
    "protocols": 3,
    "workflow": 4,  # study, resources: what the rule files call while the DAG is built
    "reporting": 5,
    "cli": 6,  # cost.py: the `python -m medtransfer.cost` entry point
}
PARTS = {"data": "data", "weights": "weights", "features": "features", "protocols": "protocols",
         "study": "workflow", "resources": "workflow", "reporting": "reporting", "cost": "cli"}
# The registry (protocols/__init__.py) is torch-free and imported by the DAG and the report;
# the protocol modules below it are not: reporting may import the registry only.
REGISTRY = "medtransfer.protocols"


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted((SRC / "medtransfer").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The package module that ``import name`` (or ``from name import x``) loads."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module, lazy: bool | None = None):
    """(node, imported module) of every package import; ``lazy``: only those inside (True) or
    outside (False) function bodies. Imports under ``if TYPE_CHECKING:`` never run: skipped."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and lazy in (None, in_function):
                names = ([a.name for a in child.names] if isinstance(child, ast.Import) else
                         [child.module] + [f"{child.module}.{a.name}" for a in child.names] if child.module else [])
                for name in names:
                    if name.startswith("medtransfer"):
                        yield child, _target(name)
            yield from walk(child, inside)
    yield from walk(tree, False)


def _layer(module: str) -> str:
    part = module.split(".")[1] if "." in module else ""
    return PARTS.get(part, "core")


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, tree in MODULES.items():
        for _, target in _imports(tree):
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                edges.setdefault(name, set()).add(target)
    return edges


def test_no_import_cycles_lazy_imports_included():
    edges, cycles = _edges(), []
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_layer_imports_a_layer_above_it():
    wrong = []
    for name, targets in _edges().items():
        for target in targets:
            if LAYERS[_layer(target)] > LAYERS[_layer(name)]:
                wrong.append(f"{name} ({_layer(name)}) imports {target} ({_layer(target)})")
            if _layer(name) == "reporting" and _layer(target) == "protocols" and target != REGISTRY:
                wrong.append(f"{name} imports the protocol module {target}: reporting reads the registry only")
    assert wrong == []


def test_every_import_inside_a_function_says_why():
    """Lazy imports keep torch (or another heavy library) out of the DAG build and the report
    jobs; each carries a comment on its line, or the line above, giving the reason."""
    missing = []
    for path in sorted((SRC / "medtransfer").rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if "#" not in line and not above.startswith("#"):
                        missing.append(f"{path.relative_to(SRC)}:{node.lineno}: {line.strip()}")
    assert sorted(set(missing)) == []


@pytest.mark.parametrize("module", [
    "medtransfer.study", "medtransfer.resources", "medtransfer.paths", "medtransfer.protocols",
    "medtransfer.reporting.compare", "medtransfer.reporting.table", "medtransfer.reporting.summary",
    "medtransfer.reporting.figures", "medtransfer.reporting.correlate", "medtransfer.reporting.cost",
])
def test_the_dag_and_the_report_import_no_torch(module):
    code = f"import sys, {module}; heavy = [m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
