"""The package's import structure: no cycles (package ``__init__`` files included), imports at module top
(except optional frameworks), and every module imports."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lpot_ir"

OPTIONAL = {
    "torch", "onnxscript", "tensorflow", "tf2onnx", "keras", "mxnet", "hyperopt", "matplotlib", "tqdm", "psutil",
    "sklearn", "PIL", "ray", "scipy", "pycocotools", "sacrebleu", "tokenizers", "tensorboardX", "tensorboard",
    "cloudpickle",
}
"""Optional frameworks and tools (pyproject extras): the only imports allowed inside functions."""


SCRIPTS = {"lpot_ir/frontends/_mxnet_export_script.py", "lpot_ir/backends/export/_mxnet_lowering_script.py"}
"""Files run by another interpreter (the isolated MXNet environment), not imported as modules."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if str(path.relative_to(ROOT)) in SCRIPTS:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function (``if TYPE_CHECKING:`` blocks skipped)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, local)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, local))
            visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        if path.name != "__init__.py":
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _is_import_module(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )


def _lazy_targets(module: str, tree: ast.AST) -> set[str]:
    """Modules a module imports by name with ``importlib.import_module``: in a module that calls it, every
    string literal naming a package module (``"lpot_ir.quantization"``), and every ``f"<prefix>.{...}"``
    argument completed by a string literal of the module (``f"lpot_ir.commands.{name}"`` with ``"tune"``
    in ``COMMANDS``; ``f"{__name__}.{module}"`` with ``"session"``). Strings are a superset of what runs."""
    calls = [node for node in ast.walk(tree) if _is_import_module(node)]
    if not calls:
        return set()
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    found = {s for s in strings if s in MODULES}
    for call in calls:
        argument = call.args[0] if call.args else None
        if not isinstance(argument, ast.JoinedStr):
            continue
        prefix = ""
        for part in argument.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                prefix += part.value
            elif not prefix and isinstance(part, ast.FormattedValue) and getattr(part.value, "id", None) == "__name__":
                prefix = module
            else:
                break
        found |= {prefix + s for s in strings if prefix + s in MODULES}
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> modules it makes Python execute: the target and each package above it (its ``__init__``)
    that is not already above the importer. Lazy ``importlib.import_module`` edges count too."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, set())
        tree = ast.parse(path.read_text())
        targets = [target for node, _local in _imports(tree) for target in _targets(module, path, node)]
        for target in [*targets, *sorted(_lazy_targets(module, tree))]:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                name = ".".join(parts[:end])
                if name in MODULES and name != module and not module.startswith(name + "."):
                    edges.add(name)
    return graph


def test_no_import_cycles() -> None:
    try:
        graphlib.TopologicalSorter(_graph()).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle (module-level and function-local imports alike): {exc.args[1]}") from None


def test_lazy_imports_are_edges_of_the_cycle_check() -> None:
    graph = _graph()
    assert {"lpot_ir.quantization", "lpot_ir.benchmark", "lpot_ir.common"} <= graph["lpot_ir"]
    assert "lpot_ir.commands.tune" in graph["lpot_ir.cli"]
    assert "lpot_ir.backends.onnxruntime.session" in graph["lpot_ir.backends.onnxruntime"]


def test_imports_sit_at_module_top_except_optional_frameworks() -> None:
    local = []
    for module, path in MODULES.items():
        for node, inside in _imports(ast.parse(path.read_text())):
            if not inside:
                continue
            for target in _targets(module, path, node):
                if target.split(".")[0] not in OPTIONAL:
                    local.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not local, "function-local imports of required modules:\n" + "\n".join(local)


def test_every_module_imports() -> None:
    """Every module imports in a fresh interpreter (the acyclic graph above means the order cannot matter)."""
    script = f"import importlib\nfor name in {sorted(MODULES)!r}:\n    importlib.import_module(name)\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
