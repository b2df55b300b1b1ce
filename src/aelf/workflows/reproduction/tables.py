"""Markdown tables of measured results next to the paper's (always labelled as the paper's)."""

from __future__ import annotations

from aelf.core.methods import METHODS
from aelf.workflows.reproduction.paper import SETS

METHOD_LABELS = {name: method.label for name, method in METHODS.items()}  # a run keyed by its method's name


def attack_label(attack) -> str:
    """``PGD(0.3, 16, 0.02)`` in the paper's notation PGD(eps, steps, step size), ``+rs`` with a random start;
    ``FGSM(0.3)`` for an attack without steps."""
    if not hasattr(attack, "n_steps"):
        return f"{type(attack).__name__}({attack.eps:.4g})"
    text = f"PGD({attack.eps:.4g}, {attack.n_steps}, {attack.step_size:.4g})"
    return text + ("+rs" if getattr(attack, "random_start", False) else "")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _shift_cells(row: dict) -> list[str]:
    return [f"{row['natural'][s]:.2f}" for s in SETS] + [f"{row['adversarial'][s]:.2f}" for s in SETS]


def shift_table(
    measured: dict,
    paper: dict | None,
    attack_text: str,
    paper_label: str = "paper",
    labels: dict | None = None,
    extra: str | None = None,
) -> str:
    """The Table 2 layout: one row per measured run, then the paper's rows labelled as the paper's.

    ``measured``/``paper``: run key -> ``{"natural": {set: acc}, "adversarial": {set: acc}}``; ``labels``: run key ->
    row label (default: the method's name); ``extra``: a key of the measured rows shown as a last column (e.g. the
    AutoAttack accuracy on N; ``-`` in the paper's rows).
    """
    labels = {**METHOD_LABELS, **(labels or {})}
    header = ["Method"] + [f"nat {s}" for s in SETS] + [f"adv {s}" for s in SETS] + ([f"{extra} N"] if extra else [])
    lines = [f"Natural test | Adversarial test {attack_text}", "", _row(header), "|" + "---|" * len(header)]
    for key, row in measured.items():
        tail = [f"{row[extra]:.2f}"] if extra else []
        lines.append(_row([f"{labels.get(key, key)} (measured)"] + _shift_cells(row) + tail))
    for key, row in (paper or {}).items():
        lines.append(_row([f"{labels.get(key, key)} ({paper_label})"] + _shift_cells(row) + (["-"] if extra else [])))
    return "\n".join(lines) + "\n"


def robust_table(
    measured: dict, paper: dict, test_attacks: dict, paper_label: str, labels: dict, extra: str | None = None
) -> str:
    """One row per run: natural accuracy and one column per test attack, measured, then the paper's figures for the
    same run where the paper has them (``-`` where it has none).

    ``measured``: run key -> ``{"natural": acc, label: acc, ...}``; ``paper``: run key -> the same keys; ``extra``: a
    measured key with no paper counterpart (e.g. the AutoAttack accuracy), shown after the measured columns.
    """
    columns = ["natural", *test_attacks]
    measured_columns = columns + ([extra] if extra else [])
    paper_columns = columns if paper_label else []  # a study with no paper counterpart: measured columns only
    header = (
        ["Method"] + [f"{c} (measured)" for c in measured_columns] + [f"{c} ({paper_label})" for c in paper_columns]
    )
    lines = [
        "Test attacks: " + ", ".join(f"{label} = {attack_label(a)}" for label, a in test_attacks.items()),
        "",
        _row(header),
        "|" + "---|" * len(header),
    ]
    for key, row in measured.items():
        ours = [f"{row[c]:.2f}" for c in measured_columns]
        theirs = [f"{paper[key][c]:.2f}" if key in paper and c in paper[key] else "-" for c in paper_columns]
        lines.append(_row([labels.get(key, key)] + ours + theirs))
    return "\n".join(lines) + "\n"
