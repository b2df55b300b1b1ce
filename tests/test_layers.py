"""The layers a reader sees in the folders: core -> workflows -> apps. A module imports only its own layer or lower
ones, only at module level (no import inside a function to dodge a cycle), and never the package facade ``aelf``.
The one exception: the command line imports each command's modules when the command runs (``aelf --help`` loads
none of them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aelf"
RANK = {"core": 0, "workflows": 1, "apps": 2}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aelf" and parts[1] in RANK else None


def aelf_imports(tree: ast.AST):
    """(module imported, line, at module level?) for every import of aelf."""
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "aelf" else [f"aelf.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "aelf" or name.startswith("aelf."):
                yield name, node.lineno, id(node) in top


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)
LAZY = {Path("apps/cli.py"), Path("apps/parser.py")}  # may import inside functions: `aelf --help` loads no torch


def test_every_module_lives_in_a_layer():
    stray = [p.relative_to(PACKAGE) for p in MODULES if p.relative_to(PACKAGE).parts[0] not in RANK]
    assert not stray, f"modules outside core/, workflows/, apps/: {stray}"
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top_level == ["__init__.py", "__main__.py"], top_level


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_of_a_higher_layer_and_none_inside_functions(path):
    own = path.relative_to(PACKAGE).parts[0]
    for name, line, module_level in aelf_imports(ast.parse(path.read_text())):
        where = f"{path.relative_to(PACKAGE)}:{line} imports {name}"
        assert module_level or path.relative_to(PACKAGE) in LAZY, f"{where} inside a function or block"
        assert name not in ("aelf", "aelf.__init__"), f"{where}: the package facade (import the defining module)"
        target = layer_of(name)
        assert target is not None, f"{where}: not a module of a layer"
        assert RANK[target] <= RANK[own], f"{where}: {own} must not import {target}"


def test_the_rule_catches_an_upward_import(tmp_path):
    """The check above can fail: a core module importing an app is found."""
    tree = ast.parse("import torch\n\ndef f():\n    from aelf.apps.cli import main\n")
    found = list(aelf_imports(tree))
    assert found == [("aelf.apps.cli", 4, False)]
    assert RANK[layer_of(found[0][0])] > RANK["core"]


BENCH = PACKAGE.parents[1] / "bench"
MAX_LINES = 500  # one job per file
MAX_CORE_FUNCTION = 60  # lines of a function in core/: longer ones are split into named steps


@pytest.mark.parametrize("path", [*PACKAGE.rglob("*.py"), *BENCH.rglob("*.py")], ids=lambda p: p.name)
def test_no_file_is_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path}: {lines} lines; give one of its jobs a file of its own"


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_in_core_is_over_60_lines():
    found = {
        str(path.relative_to(PACKAGE)): long
        for path in (PACKAGE / "core").rglob("*.py")
        if (long := long_functions(path.read_text(), MAX_CORE_FUNCTION))
    }
    assert not found, found


def test_the_length_check_sees_a_long_function():
    source = "def f():\n" + "    x = 1\n" * 61
    assert long_functions(source, MAX_CORE_FUNCTION) == [("f", 62)]
