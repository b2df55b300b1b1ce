"""The model card's measurements: each accuracy found in a run folder's evaluation files (``eval.json``,
``reproduce-eval.json``, ``eval-suite-*.json``) as a row with its attack, its number of images and its source file,
and Wilson's 95% interval over the test images (:mod:`aelf.apps.card` says what they cover).
"""

from __future__ import annotations

from typing import Any

from aelf.core.fileio import read_json
from aelf.core.run_folder import EvalResult, RunFolder, as_dict
from aelf.workflows.evaluation.stats import wilson_interval

CONFIDENCE = 0.95


def interval(accuracy, n: int | None) -> str:
    """``[lo, hi]`` in percent: Wilson over n images, from an accuracy in percent rounded to 0.01; "-" when n is
    unknown or does not fit the accuracy."""
    if not isinstance(n, int) or n < 1 or not isinstance(accuracy, int | float):
        return "-"
    k = round(accuracy * n / 100)
    if not 0 <= k <= n or abs(100 * k / n - accuracy) > 0.0051:
        return "-"
    lo, hi = wilson_interval(k, n, CONFIDENCE)
    return f"[{100 * lo:.2f}, {100 * hi:.2f}]"


def describe_attack(spec: dict | None) -> str:
    """``PGD l-inf eps 0.3, 16 steps of 0.02, ce loss`` from an attack's settings."""
    if not isinstance(spec, dict):
        return "-"
    name = spec.get("name", "PGD" if "n_steps" in spec else "attack")
    parts = [f"{name} l-inf eps {spec['eps']:.4g}" if isinstance(spec.get("eps"), int | float) else str(name)]
    if "n_steps" in spec:
        parts.append(
            f"{spec['n_steps']} steps of {spec.get('step_size', '?'):.4g}"
            if isinstance(spec.get("step_size"), int | float)
            else f"{spec['n_steps']} steps"
        )
    if spec.get("loss") not in (None, "ce"):
        parts.append(f"{spec['loss']} loss")
    if (spec.get("n_restarts") or 1) > 1:
        parts.append(f"{spec['n_restarts']} restarts")
    if spec.get("random_start"):
        parts.append("random start")
    if spec.get("version"):
        parts.append(f"version {spec['version']}")
    return ", ".join(parts)


Row = tuple[str, str, Any, Any, str, str]  # kind, label, accuracy, images, attack, source file
Shifted = tuple[dict[str, Any], Any, str]  # {natural: {set: acc}, adversarial: {...}}, images, source file


def measurements(folder: RunFolder, n_test: int | None) -> tuple[list[Row], Shifted | None, set[str]]:
    """``(rows, shifted, measured)``: headline rows (kind, label, accuracy, n, attack, source), the shifted-set
    table from eval.json or reproduce-eval.json, and the kinds measured."""
    rows: list[Row] = []
    shifted: Shifted | None = None
    for weights in ("last", "best"):
        evaluated = folder.eval(weights)
        if evaluated is not None:
            rows += _eval_rows(evaluated, n_test, folder.eval_file(weights).name)
            n = evaluated.n_examples if evaluated.n_examples is not None else n_test
            shifted = shifted or (_tables(evaluated), n, folder.eval_file(weights).name)
    reproduced_rows, reproduced_shift = _reproduced_rows(folder, n_test, shifted is None)
    rows += reproduced_rows
    shifted = shifted or reproduced_shift
    for path in folder.suite_files():
        rows += _suite_rows(read_json(path), path.name)
    measured = {row[0] for row in rows if isinstance(row[2], int | float)}
    return rows, shifted, measured


def _tables(result: EvalResult) -> dict[str, Any]:
    return {"natural": result.natural, "adversarial": result.adversarial}


def _eval_rows(evaluated: EvalResult, n_test: int | None, source: str) -> list[Row]:
    n = evaluated.n_examples if evaluated.n_examples is not None else n_test
    which = ", best weights" if evaluated.weights == "best" else ""
    return [
        ("natural", f"natural (N){which}", evaluated.natural.get("N"), n, "-", source),
        (
            "PGD",
            f"adversarial (N){which}",
            evaluated.adversarial.get("N"),
            n,
            describe_attack(evaluated.attack),
            source,
        ),
    ]


def _reproduced_rows(folder: RunFolder, n_test: int | None, want_shift: bool) -> tuple[list[Row], Shifted | None]:
    """The rows of ``aelf reproduce``'s cached measurements and, when ``want_shift``, their shifted-set table."""
    saved = folder.reproduced()
    if saved is None:
        return [], None
    source = folder.reproduce_file.name
    result, key = saved.result, saved.key
    attacks = as_dict(key.get("test_attacks"))
    rows: list[Row] = []
    shifted: Shifted | None = None
    tables = EvalResult.from_json(result)
    if tables is not None:
        if want_shift:
            (label,) = list(attacks)[:1] or ["attack"]
            rows.append(("natural", "natural (N)", tables.natural.get("N"), n_test, "-", source))
            rows.append(
                (
                    "PGD",
                    f"adversarial (N), {label}",
                    tables.adversarial.get("N"),
                    n_test,
                    describe_attack(attacks.get(label)),
                    source,
                )
            )
            shifted = (_tables(tables), n_test, source)
    else:
        if isinstance(result.get("natural"), int | float):
            rows.append(("natural", "natural", result["natural"], n_test, "-", source))
        for label, spec in attacks.items():
            if isinstance(result.get(label), int | float):
                rows.append(("PGD", label, result[label], n_test, describe_attack(spec), source))
    if isinstance(result.get("AutoAttack"), int | float):
        examples = key.get("autoattack_examples")
        n = min(examples, n_test) if isinstance(examples, int) and n_test else examples or n_test
        spec = {"name": "AutoAttack", **as_dict(key.get("autoattack"))}
        rows.append(("AutoAttack", "AutoAttack", result["AutoAttack"], n, describe_attack(spec), source))
    return rows, shifted


def _suite_rows(suite, source: str) -> list:
    if not isinstance(suite, dict):
        return []
    n, name = suite.get("n_examples"), suite.get("suite", "?")
    if suite.get("weights") == "best":
        name += ", best weights"
    rows = [("natural", f"natural (suite {name})", suite.get("clean"), n, "-", source)]
    earlier: list[str] = []
    for entry in suite.get("attacks", []):
        if not isinstance(entry, dict):
            continue
        attack_name, spec = str(entry.get("name")), entry.get("attack")
        kind = "AutoAttack" if attack_name.startswith("AutoAttack") else "PGD" if "PGD" in attack_name else "other"
        if entry.get("accuracy") is not None:
            rows.append(
                (kind, f"{attack_name} alone (suite {name})", entry["accuracy"], n, describe_attack(spec), source)
            )
        elif kind != "other":
            within = f", worst case with {', '.join(earlier)}" if earlier else ""
            rows.append(
                (kind, f"{attack_name} (suite {name}{within})", entry.get("after"), n, describe_attack(spec), source)
            )
        earlier.append(attack_name)
    rows.append(
        (
            "worst case",
            f"worst case of suite {name} ({', '.join(earlier)})",
            suite.get("worst_case"),
            n,
            f"l-inf eps {suite.get('eps')}",
            source,
        )
    )
    return rows
