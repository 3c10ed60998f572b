"""The code's habits, checked: ruff's lint rules and formatting, the import layers of
docs/design.md (import-linter), and no long library function without a stated reason."""

import ast
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_vae"
# Lines of a function's body, its docstring not counted, above which the function says why it
# stays whole with a `# long: <why>` comment between its `def` line and its first statement.
MAX_FUNCTION_LINES = 60
LONG_MARKER = "# long:"


def _run(*args: str, cwd: Path = ROOT, pythonpath: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return _run("-c", command, "--no-cache", "--no-logo", cwd=cwd, pythonpath=pythonpath)


def test_ruff_finds_nothing():
    done = _run("-m", "ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_code_is_formatted_by_ruff():
    done = _run("-m", "ruff", "format", "--check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, "run `ruff format .`; it would change:\n" + done.stdout + done.stderr


def test_imports_keep_the_layers():
    done = _lint_imports(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kept, 0 broken" in done.stdout, done.stdout


def test_an_uphill_import_breaks_the_layers_contract(tmp_path):
    """A function-level import of the engine from a model, planted in a copy of the package, is
    refused: the contract checks what the tests say it checks."""
    shutil.copytree(PACKAGE, tmp_path / "pyro_vae", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "pyro_vae" / "models" / "vae.py"
    planted.write_text(planted.read_text() + "\n\ndef _uphill():\n    from ..engine import loop\n\n    return loop\n")
    done = _lint_imports(tmp_path, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Layers: nothing lower imports anything higher BROKEN" in done.stdout, done.stdout
    assert "pyro_vae.models.vae -> pyro_vae.engine.loop" in done.stdout, done.stdout


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, line, body lines) of each function in ``source`` whose body, docstring left out, is
    longer than ``limit`` lines and that has no `# long:` comment before its first statement."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
        length = node.end_lineno - body[0].lineno + 1
        head = lines[node.lineno - 1 : body[0].lineno - 1]
        if length > limit and not any(LONG_MARKER in line for line in head):
            found.append((node.name, node.lineno, length))
    return found


def test_the_long_function_check_counts_body_lines_and_reads_the_marker():
    def function(lines: int, marker: str = "") -> str:
        body = "".join(f"    x{i} = {i}\n" for i in range(lines))
        return f'def f():\n    """A docstring\n    of two lines."""\n{marker}{body}'

    assert long_functions(function(60)) == []
    assert long_functions(function(61)) == [("f", 1, 61)]
    assert long_functions(function(61, "    # long: one equation, read top to bottom\n")) == []
    nested = textwrap.indent(function(61), "    ")
    assert long_functions(f"class C:\n{nested}") == [("f", 2, 61)]


def test_no_library_function_is_long_without_a_reason():
    found = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, line, length in long_functions(path.read_text())
    ]
    assert not found, (
        f"functions over {MAX_FUNCTION_LINES} lines (docstring not counted): split them, or "
        f"say why one stays whole with a `{LONG_MARKER} <why>` comment after its signature:\n" + "\n".join(found)
    )


def test_the_tools_are_in_the_test_extra_and_pinned():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    pinned = [line.split("==")[0] for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line]
    for tool in ("ruff", "import-linter"):
        assert any(requirement.startswith(tool) for requirement in extra), tool
        assert tool in pinned, tool
