"""The README and the docs say about each claim only what CLAIMS.md prints for it.

CLAIMS.md is generated from the results files (``aelf claims studies``); the prose is written by hand. Two checks:
the README's claims table (between the ``claims-summary`` markers) matches CLAIMS.md cell by cell, and any other
sentence of the README or the docs that names a claim and a verdict word uses a word CLAIMS.md prints for that claim
(so write one claim's verdict per sentence).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ("partly supported", "supported", "mixed", "contradicted", "not distinguishable", "not measured here")
START, END = "<!-- claims-summary -->", "<!-- /claims-summary -->"


def claims_table(text: str) -> dict[int, dict[str, str]]:
    """CLAIMS.md's summary: claim number -> {scale label: verdict}."""
    found: dict[int, dict[str, str]] = {}
    for match in re.finditer(r"^\| (\d)\. [^|]*\| ([^|]*) \|$", text, re.M):
        cells = {}
        for part in match.group(2).split("; "):
            verdict = re.match(r"(.*?) \((.*)\)$", part)
            if verdict:
                cells[verdict.group(2)] = verdict.group(1)
        found[int(match.group(1))] = cells
    return found


def word_of(cell: str) -> str:
    return next((v for v in VERDICTS if cell.startswith(v)), cell)


def verdict_words(sentence: str) -> list[str]:
    """The verdict words a sentence uses ("supported" only where it is not part of "partly supported")."""
    return [v for v in VERDICTS if re.search(rf"(?<!partly )\b{v}\b" if v == "supported" else rf"\b{v}\b", sentence)]


def claim_numbers(sentence: str) -> list[int]:
    groups = re.findall(r"\bclaims? ((?:\d(?:, | and | or |-|/)?)+)", sentence)
    return [int(n) for group in groups for n in re.findall(r"\d", group)]


def readme_table(text: str) -> tuple[list[str], dict[int, list[str]]]:
    block = text.split(START, 1)[1].split(END, 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.strip().splitlines()]
    header, body = rows[0], [r for r in rows[2:] if r and r[0]]
    return header[1:], {int(re.match(r"(\d)", r[0]).group(1)): r[1:] for r in body}


def docs_texts() -> dict[str, str]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths if p.is_file()}


def test_the_readme_claims_table_is_what_claims_md_prints():
    measured = claims_table((ROOT / "CLAIMS.md").read_text())
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme, "the README keeps its claims table between the claims-summary markers"
    scales, rows = readme_table(readme)
    assert set(rows) == set(measured), "one row per claim of CLAIMS.md"
    for number, cells in rows.items():
        for scale, cell in zip(scales, cells, strict=True):
            labels = [label for label in measured[number] if label.startswith(scale + ",")]
            expected = measured[number][labels[0]] if labels else "-"
            assert word_of(cell) == word_of(expected), (
                f"claim {number} at {scale}: README {cell!r}, CLAIMS.md {expected!r}"
            )


@pytest.mark.parametrize("name", sorted(docs_texts()))
def test_every_sentence_naming_a_claim_and_a_verdict_agrees_with_claims_md(name):
    measured = claims_table((ROOT / "CLAIMS.md").read_text())
    text = docs_texts()[name]
    if START in text:
        text = text.split(START, 1)[0] + text.split(END, 1)[1]
    for sentence in re.split(r"(?<=[.;])\s+", text.replace("\n", " ")):
        for number in claim_numbers(sentence):
            for word in verdict_words(sentence):
                assert number in measured, f"{name}: claim {number} is not in CLAIMS.md"
                assert word in {word_of(v) for v in measured[number].values()}, (
                    f"{name}: {sentence.strip()[:200]!r} says {word!r} of claim {number}; CLAIMS.md prints "
                    f"{sorted(set(measured[number].values()))}"
                )
