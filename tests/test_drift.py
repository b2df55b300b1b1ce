"""Knowledge written once: the version, each command-line option."""

import ast
import tomllib
from pathlib import Path

import aelf
from aelf.apps import parser as cli_parser

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once_and_the_package_metadata_reads_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "aelf.core.__version__"}
    # setuptools reads the attribute from the file without importing it (as here), so it must stay a literal
    module = ast.parse((ROOT / "src/aelf/core/__init__.py").read_text())
    literals = [
        node.value.value
        for node in module.body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert literals == [aelf.__version__]


def declared_options(source: str) -> list[str]:
    """Every option string given literally to an add_argument call (helpers pass names through a variable)."""
    options = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            options += [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
    return options


# Options of the same name that mean different things per command: a run folder, a figure folder, an HTML file...
PER_COMMAND = {"--out", "--dataset"}


def test_each_shared_command_line_option_is_declared_once():
    options = declared_options(Path(cli_parser.__file__).read_text())
    repeated = {name for name in options if options.count(name) > 1} - PER_COMMAND
    assert not repeated, (
        f"declare these once in aelf.apps.parser.SHARED_OPTIONS and add them with add_option: {sorted(repeated)}"
    )
    assert not set(options) & set(cli_parser.SHARED_OPTIONS), "a shared option is also declared by hand"


def test_the_declaration_check_sees_a_repeated_option():
    source = 'a.add_argument("--device", default="auto")\nb.add_argument("--device")\nc.add_argument("run")\n'
    assert declared_options(source) == ["--device", "--device"]
