"""The data package stands on its own: its modules import only each other and the core helpers
(pyro_vae.errors, pyro_vae.atomic, pyro_vae.torch_files: the safe reading of .pt files), at any
level -- inside functions and TYPE_CHECKING blocks too -- and their imports form no cycle."""

import ast
from pathlib import Path

import pyro_vae.data

DATA_DIR = Path(pyro_vae.data.__file__).parent
PACKAGE = "pyro_vae.data"
ALLOWED = (PACKAGE, "pyro_vae.errors", "pyro_vae.atomic", "pyro_vae.torch_files")


def module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


DATA_MODULES = {module_name(path) for path in DATA_DIR.glob("*.py")}


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Every pyro_vae module ``source`` imports, at any depth of the tree; ``from P import name``
    counts as importing the module P.name where that is a module of the data package, else P."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            submodules = {f"{target}.{alias.name}" for alias in node.names} & DATA_MODULES
            found.update(submodules or {target})
    return {name for name in found if name == "pyro_vae" or name.startswith("pyro_vae.")}


def import_graph() -> dict[str, set[str]]:
    return {
        module_name(path): imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")
        for path in sorted(DATA_DIR.glob("*.py"))
    }


def outside(imports: set[str]) -> set[str]:
    return {name for name in imports if not any(name == a or name.startswith(a + ".") for a in ALLOWED)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_data_modules_import_nothing_above_the_data_layer():
    graph = import_graph()
    assert {PACKAGE, f"{PACKAGE}.catalog", f"{PACKAGE}.types", f"{PACKAGE}.cache"} <= set(graph)
    assert f"{PACKAGE}.types" in graph[f"{PACKAGE}.catalog"]  # the walk sees the imports
    wrong = {module: sorted(outside(imports)) for module, imports in graph.items() if outside(imports)}
    assert not wrong, f"modules of pyro_vae.data import modules above the data layer: {wrong}"


def test_the_data_package_has_no_import_cycle():
    graph = {module: {t for t in targets if t in DATA_MODULES} for module, targets in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in pyro_vae.data: {' -> '.join(cycle)}"


def test_the_checks_catch_function_level_imports_and_cycles():
    source = (
        "from pyro_vae.data.types import Split\n"
        "def f():\n"
        "    from pyro_vae.config import FitConfig\n"
        "    from ..variants import base\n"
        "    from . import catalog\n"
    )
    imports = imported_modules(source, f"{PACKAGE}.loader", is_package=False)
    assert imports == {f"{PACKAGE}.types", "pyro_vae.config", "pyro_vae.variants", f"{PACKAGE}.catalog"}
    assert outside(imports) == {"pyro_vae.config", "pyro_vae.variants"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
