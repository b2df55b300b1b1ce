"""The run folder has one owner (aelf.core.run_folder): no other source file spells the name of a run's file, and its
typed readers read what the trainer and the commands write."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from aelf.core import run_folder
from aelf.core.errors import CheckpointError
from aelf.core.fileio import write_json, write_text
from aelf.core.run_folder import BestInfo, CachedResult, EvalResult, Meta, RunFolder

SRC = Path(__file__).resolve().parents[1] / "src" / "aelf"
RUN_FILES = (
    "config.json",
    "meta.json",
    "metrics.jsonl",
    "model.safetensors",
    "best.safetensors",
    "best.json",
    "eval.json",
    "eval-best.json",
    "eval-suite-",
    "reproduce-eval.json",
    "check.json",
    "MODEL_CARD.md",
)


def string_literals(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module, f-strings' literal parts included, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_file_name_of_a_run_outside_its_owner():
    owner = SRC / "core" / "run_folder.py"
    found = [
        f"{path.relative_to(SRC)}:{line}: {name}"
        for path in sorted(SRC.rglob("*.py"))
        if path != owner
        for line, text in string_literals(path)
        for name in RUN_FILES
        if name in text
    ]
    assert not found, "name run files through aelf.core.run_folder:\n" + "\n".join(found)
    owned = {value for name, value in vars(run_folder).items() if name.isupper() and isinstance(value, str)}
    assert all(any(name in value for value in owned) for name in RUN_FILES)


def test_the_check_would_find_a_literal(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text('"""A docstring may say metrics.jsonl."""\nPATH = f"{1}/metrics.jsonl"\n')
    assert [text for _, text in string_literals(sneaky)] == ["/metrics.jsonl"]


def test_readers_of_a_run_folder(tmp_path):
    folder = RunFolder(tmp_path)
    assert not folder.is_run() and folder.meta() == Meta() and RunFolder(tmp_path).metrics == []
    assert folder.eval() is None and folder.best() is None and folder.reproduced() is None
    write_json(folder.meta_file, {"seed": 3, "world_size": 2, "aelf": "0.1.0", "data": {"source": "/d.npz"}})
    meta = folder.meta()
    assert (meta.seed, meta.world_size, meta.versions, meta.data) == (3, 2, {"aelf": "0.1.0"}, {"source": "/d.npz"})
    write_text(folder.metrics_file, json.dumps({"epoch": 1}) + "\n\n" + json.dumps({"epoch": 2}) + "\n")
    assert folder.metrics == [{"epoch": 1}, {"epoch": 2}]
    write_text(folder.metrics_file, "not json\n")
    assert folder.metrics == [{"epoch": 1}, {"epoch": 2}], "parsed once per folder object"
    with pytest.raises(CheckpointError, match="line 1 is not JSON"):
        _ = RunFolder(tmp_path).metrics
    tables = {"natural": {"N": 99.0}, "adversarial": {"N": 90.0}}
    write_json(folder.eval_file("best"), {**tables, "n_examples": 10, "weights": "best", "attack": {"eps": 0.3}})
    assert folder.eval("best") == EvalResult(tables["natural"], tables["adversarial"], {"eps": 0.3}, 10, "best")
    write_json(folder.best_file, {"epoch": 4, "val_adv_acc": 0.5})
    assert folder.best() is None, "best.json counts only with best.safetensors beside it"
    write_text(folder.best_weights, "")
    assert folder.best() == BestInfo(epoch=4, val_adv_acc=0.5)
    write_json(folder.reproduce_file, {"key": {"a": 1}, "result": {"natural": 98.0}})
    assert folder.reproduced() == CachedResult({"a": 1}, {"natural": 98.0})
    assert folder.suite_file("quick", "best").name == "eval-suite-quick-best.json"
    with pytest.raises(CheckpointError):
        folder.config()
