"""The Table 2 layout: rows are methods, columns natural and adversarial accuracy on N, N(L), N(R), N(U), N(D)."""

from __future__ import annotations

from aelf.paper import SETS

METHOD_LABELS = {"st": "ST", "at": "AT", "jt": "JT", "aelfs": "AELFs"}


def _cells(row: dict) -> list[str]:
    return [f"{row['natural'][s]:.2f}" for s in SETS] + [f"{row['adversarial'][s]:.2f}" for s in SETS]


def shift_table(measured: dict, paper: dict | None, attack_label: str, paper_label: str = "paper") -> str:
    """Markdown: one row per measured method, followed by the paper's rows labelled as the paper's."""
    header = ["Method"] + [f"nat {s}" for s in SETS] + [f"adv {s}" for s in SETS]
    lines = [
        f"Natural test | Adversarial test {attack_label}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, row in measured.items():
        lines.append("| " + " | ".join([f"{METHOD_LABELS.get(method, method)} (measured)"] + _cells(row)) + " |")
    for method, row in (paper or {}).items():
        lines.append("| " + " | ".join([f"{METHOD_LABELS.get(method, method)} ({paper_label})"] + _cells(row)) + " |")
    return "\n".join(lines) + "\n"
