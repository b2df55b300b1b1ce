"""``aelf claims``: CLAIMS.md, the paper's claims checked against results files, generated and never edited by hand.

Each claim is a set of paired comparisons between runs of one reproduced experiment (the same seeds, the same test
images: :func:`aelf.workflows.evaluation.stats.paired_difference`), each with the direction the paper claims. At one
scale (an experiment's results file: preset, dataset, seeds) a claim is

- **supported**: every comparison goes the claimed way at 95%;
- **partly supported**: some do, none goes the other way, the rest are not distinguishable;
- **mixed**: some go each way;
- **contradicted**: none goes the claimed way and at least one goes the other way;
- **not distinguishable at this scale**: no comparison is distinguishable from 0 at 95%;
- **not measured here**: no results file of the experiments it needs was given.

Accuracy differences are in points; attention breadth is ``mass_90`` (the fraction of pixels that holds 90% of the
input gradient's mass, :mod:`aelf.workflows.attention.metrics`), larger is broader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aelf.core.checkpoint import read_json, write_text
from aelf.core.errors import CheckpointError, ConfigError
from aelf.workflows.evaluation import stats
from aelf.workflows.reproduction.evidence import AUTOATTACK, bits_at
from aelf.workflows.reproduction.paper import SETS

SHIFTED = SETS[1:]
BREADTH = "mass_90"
RATIOS = ("0.4-0.6", "0.5-0.5", "0.6-0.4")
SHIFT_EXPERIMENTS = ("table2", "table6", "fig3")
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Check:
    """One paired comparison of a claim: ``a`` against ``b`` on one measurement, expected ``better`` or ``worse``."""

    what: str
    a: str
    b: str
    path: tuple[str, ...]  # where the measurement sits in a run's result, e.g. ("adversarial", "N(U)")
    expected: str = stats.BETTER
    kind: str = "accuracy"  # "accuracy" (0/1 per image), "drop" (N minus a shifted set), "breadth" (mass_90)


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    where: str
    experiments: tuple[str, ...]  # results of any of these answer it
    checks: Callable[[dict], list[Check]]
    command: str  # how to measure it at this project's scale
    paper_scale: str  # what the paper's own scale needs


def _vs(a: str, b: str, path: tuple[str, ...], what: str, expected: str = stats.BETTER, kind: str = "accuracy"):
    return Check(what, a, b, path, expected, kind)


def _claim1(doc: dict) -> list[Check]:
    return [_vs("st", "at", ("attention", BREADTH), "gradient breadth (mass_90) on N, ST vs AT", kind="breadth")]


def _claim2(doc: dict) -> list[Check]:
    return [
        _vs("at", "st", ("natural", s), f"natural accuracy lost from N to {s}, AT vs ST", kind="drop") for s in SHIFTED
    ]


def _claim3(doc: dict) -> list[Check]:
    return [
        _vs("aelfs", base, ("natural", s), f"natural accuracy on {s}, AELFs vs {base.upper()}")
        for base in ("at", "jt")
        for s in SHIFTED
    ]


def _claim4(doc: dict) -> list[Check]:
    checks = [
        _vs("aelfs", base, ("adversarial", s), f"PGD accuracy on {s}, AELFs vs {base.upper()}")
        for base in ("at", "jt")
        for s in SETS
    ]
    if AUTOATTACK in _first_result(doc, "aelfs"):
        checks += [
            _vs("aelfs", base, (AUTOATTACK,), f"AutoAttack accuracy on N, AELFs vs {base.upper()}")
            for base in ("at", "jt")
        ]
    return checks


def _claim5(doc: dict) -> list[Check]:
    return [
        _vs(
            "aelfs",
            base,
            ("attention", BREADTH),
            f"gradient breadth (mass_90), AELFs vs {base.upper()}",
            kind="breadth",
        )
        for base in ("at", "jt")
    ]


def _first_attack(doc: dict) -> str:
    return next(iter(doc["test_attacks"]))


def _claim6(doc: dict) -> list[Check]:
    attack = _first_attack(doc)
    checks = []
    for ratio in RATIOS:
        jt = f"jt-{ratio}"
        checks.append(_vs(jt, "at", ("natural",), f"natural accuracy, JT {ratio} vs AT"))
        checks.append(_vs(jt, "at", (attack,), f"{attack} accuracy, JT {ratio} vs AT", stats.WORSE))
    checks.append(_vs("jt-0.6-0.4", "jt-0.4-0.6", ("natural",), "natural accuracy, JT 0.6:0.4 vs 0.4:0.6"))
    checks.append(_vs("jt-0.6-0.4", "jt-0.4-0.6", (attack,), f"{attack} accuracy, JT 0.6:0.4 vs 0.4:0.6", stats.WORSE))
    return checks


def _claim7(doc: dict) -> list[Check]:
    attack = _first_attack(doc)
    checks = []
    for ratio in RATIOS:
        jt, jt_star, aelfs = (f"{method}-{ratio}" for method in ("jt", "jt_star", "aelfs"))
        checks.append(_vs(jt_star, jt, (attack,), f"{attack} accuracy, JT* vs JT at {ratio}"))
        checks.append(_vs(aelfs, jt_star, (attack,), f"{attack} accuracy, AELFs vs JT* at {ratio}"))
    return checks


def _claim8(doc: dict) -> list[Check]:
    attack = _first_attack(doc)
    checks = []
    for path, name in ((("natural",), "natural"), ((attack,), attack)):
        checks.append(_vs("aelfs-beta0.6", "aelfs-beta0.1", path, f"{name} accuracy, beta 0.6 vs 0.1"))
        checks.append(_vs("aelfs-beta1.0", "aelfs-beta0.6", path, f"{name} accuracy, beta 1.0 vs 0.6", stats.WORSE))
    return checks


CPU_SHIFT = "aelf reproduce table2 --preset quick --seeds 8,9,10"
CLAIMS = (
    Claim(
        1,
        "ST's input gradient covers broader regions than AT's.",
        "Section 2.2, Fig. 2",
        SHIFT_EXPERIMENTS,
        _claim1,
        CPU_SHIFT,
        "full MNIST, 50 epochs: `aelf reproduce fig3 --preset paper` (a GPU: hours on CPU)",
    ),
    Claim(
        2,
        "AT loses more accuracy than ST on the shifted sets, most on N(U)/N(D).",
        "Section 2.2, Table 2, Fig. 3",
        SHIFT_EXPERIMENTS,
        _claim2,
        CPU_SHIFT,
        "full MNIST: `aelf reproduce table2 --preset paper --seeds 8,9,10`",
    ),
    Claim(
        3,
        "AELFs beats AT and JT on natural accuracy on the shifted sets.",
        "Section 4.1, Table 2",
        SHIFT_EXPERIMENTS,
        _claim3,
        CPU_SHIFT,
        "full MNIST: `aelf reproduce table2 --preset paper --seeds 8,9,10`",
    ),
    Claim(
        4,
        "AELFs beats AT and JT under attack, on N and on the shifted sets.",
        "Section 4.1, Table 2",
        SHIFT_EXPERIMENTS,
        _claim4,
        CPU_SHIFT,
        "full MNIST: `aelf reproduce table2 --preset paper --seeds 8,9,10`",
    ),
    Claim(
        5,
        "AELFs' gradient covers a broader region than AT's and JT's, close to ST's.",
        "Fig. 4, footnote 5",
        SHIFT_EXPERIMENTS,
        _claim5,
        CPU_SHIFT,
        "full MNIST: `aelf reproduce table2 --preset paper --seeds 8,9,10`",
    ),
    Claim(
        6,
        "JT gains natural and loses adversarial accuracy against AT, moving with the loss ratio.",
        "Fig. 1",
        ("fig1", "table3"),
        _claim6,
        "aelf reproduce fig1 --preset quick --seeds 8,9,10",
        "CIFAR-10, CNNb, 160 epochs: `aelf reproduce fig1 --preset paper --seeds 8,9,10` (a GPU, CIFAR-10 files)",
    ),
    Claim(
        7,
        "Each of AELFs' two actions helps: JT* beats JT, AELFs beats JT*.",
        "Section 4.2, Table 3",
        ("table3",),
        _claim7,
        "aelf reproduce table3 --preset quick --seeds 8,9,10",
        "CIFAR-10, CNNb, 160 epochs: `aelf reproduce table3 --preset paper --seeds 8,9,10` (a GPU, CIFAR-10 files)",
    ),
    Claim(
        8,
        "Accuracy rises with beta up to about 0.6 and falls past 0.8.",
        "Appendix B.2, Fig. 5",
        ("fig5",),
        _claim8,
        "aelf reproduce fig5 --preset quick --seeds 8,9,10",
        "CIFAR-10, CNNb, 160 epochs: `aelf reproduce fig5 --preset paper --seeds 8,9,10` (a GPU, CIFAR-10 files)",
    ),
)


@dataclass(frozen=True)
class Evidence:
    check: Check
    comparison: stats.Comparison
    paper: float | None  # the paper's difference for the same cell (PGD, single seed), when it reports both

    @property
    def agrees(self) -> bool:
        return self.comparison.verdict == self.check.expected

    @property
    def disagrees(self) -> bool:
        return self.comparison.verdict not in (self.check.expected, stats.NOT_DISTINGUISHABLE)


def claim_verdict(evidence: Sequence[Evidence]) -> str:
    agree = sum(e.agrees for e in evidence)
    disagree = sum(e.disagrees for e in evidence)
    if agree == len(evidence):
        return "supported"
    if agree and disagree:
        return "mixed"
    if disagree:
        return "contradicted"
    if agree:
        return "partly supported"
    return "not distinguishable at this scale"


def _first_result(doc: dict, key: str) -> dict:
    runs = doc.get("per_seed", {}).get(key)
    if not runs:
        raise ConfigError(f"{doc.get('experiment')}: no run {key!r} in the results file")
    return next(iter(runs.values()))


def _per_seed(doc: dict, key: str, path: tuple[str, ...], kind: str) -> np.ndarray:
    """seeds x images: 0/1 outcomes (accuracy), -1/0/1 drops (N right minus shifted-set right), or breadth values."""
    rows = []
    for seed in doc["seeds"]:
        result = doc["per_seed"][key][str(seed)]
        per_image = result.get("per_image")
        if per_image is None:
            raise CheckpointError(
                f"{doc['experiment']}/{key} seed {seed}: no per-image outcomes (re-run aelf reproduce to add them)"
            )
        if kind == "breadth":
            rows.append(np.asarray(per_image["attention"][path[1]], dtype=np.float64))
            continue
        outcome = bits_at(per_image, path).astype(np.int8)
        if kind == "drop":
            outcome = bits_at(per_image, ("natural", "N")).astype(np.int8) - outcome
        rows.append(outcome)
    return np.stack(rows)


def _paper_difference(doc: dict, check: Check) -> float | None:
    paper = doc.get("paper", {})
    if check.kind == "breadth" or check.a not in paper or check.b not in paper:
        return None
    try:
        if check.kind == "drop":
            a, b = (paper[k]["natural"]["N"] - paper[k][check.path[0]][check.path[1]] for k in (check.a, check.b))
            return round(a - b, 2)
        values = []
        for key in (check.a, check.b):
            node = paper[key]
            for part in check.path:
                node = node[part]
            values.append(node)
        return round(values[0] - values[1], 2)
    except (KeyError, TypeError):
        return None


def compare(doc: dict, check: Check) -> Evidence:
    a = _per_seed(doc, check.a, check.path, check.kind)
    b = _per_seed(doc, check.b, check.path, check.kind)
    if check.kind == "accuracy":
        comparison = stats.paired_difference(a, b)
    else:
        scale = 100.0 if check.kind == "drop" else 1.0  # drops in points, like accuracies
        comparison = stats.paired_mean_difference(a * scale, b * scale)
    return Evidence(check, comparison, _paper_difference(doc, check))


def find_results(paths: Sequence[str | Path]) -> list[Path]:
    """Every results file named by ``paths``: a file, or the results.json files below a folder."""
    found = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob(RESULTS_FILE))
        else:
            raise ConfigError(f"{path}: no such results file or folder")
    if not found:
        raise ConfigError(f"no {RESULTS_FILE} found in {', '.join(map(str, paths))}")
    return found


def scale_label(doc: dict) -> str:
    seeds = ", ".join(map(str, doc["seeds"]))
    changed = f" with {', '.join(doc['overrides'])}" if doc.get("overrides") else ""
    return f"{doc['experiment']} --preset {doc['preset']}{changed} on {doc['dataset']}, seeds {seeds}"


def claims_markdown(sources: Sequence[Path], command: str) -> str:
    docs = [(path, read_json(path)) for path in sources]
    lines = [
        "# The paper's claims, measured",
        "",
        f"Generated by `{command}` from the results files below; do not edit by hand. Each comparison is paired over "
        "the same seeds and test images (95% t-interval over seeds and images, aelf.workflows.evaluation."
        "stats); 'paper' is the paper's single-seed difference for the same cell where it reports both (its PGD, full "
        "data).",
        "",
        "| results file | experiment | sha256 |",
        "|---|---|---|",
    ]
    for path, doc in docs:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        lines.append(f"| {path} | {scale_label(doc)} | {digest} |")
    lines += ["", "How each scale departs from the paper (the results files' own notes):", ""]
    lines += [f"- {scale_label(doc)}: " + "; ".join(doc.get("notes", [])) for _path, doc in docs]
    found = {
        claim.number: [
            (doc, [compare(doc, check) for check in claim.checks(doc)])
            for _path, doc in docs
            if doc.get("experiment") in claim.experiments
        ]
        for claim in CLAIMS
    }
    lines += ["", "| claim | verdict at each scale measured |", "|---|---|"]
    for claim in CLAIMS:
        verdicts = "; ".join(f"{claim_verdict(evidence)} ({scale_label(doc)})" for doc, evidence in found[claim.number])
        lines.append(f"| {claim.number}. {claim.text} | {verdicts or 'not measured here'} |")
    lines.append("")
    for claim in CLAIMS:
        lines += [f"## {claim.number}. {claim.text}", "", f"Where the paper makes it: {claim.where}.", ""]
        if not found[claim.number]:
            lines += [
                "**Verdict: not measured here.**",
                "",
                f"- At this project's scale: `{claim.command}`.",
                f"- At the paper's scale: {claim.paper_scale}.",
                "",
            ]
            continue
        for doc, evidence in found[claim.number]:
            lines += [
                f"### {scale_label(doc)}: **{claim_verdict(evidence)}**",
                "",
                "| comparison | expected | measured A - B [95% interval] | verdict | paper |",
                "|---|---|---|---|---|",
            ]
            for e in evidence:
                digits = 3 if e.check.kind == "breadth" else 1
                paper = "-" if e.paper is None else f"{e.paper:+.2f}"
                lines.append(
                    f"| {e.check.what} | A {e.check.expected} | {e.comparison.format(digits).split(':')[0]} | "
                    f"{e.comparison.verdict} | {paper} |"
                )
            lines.append("")
        lines.append(f"At the paper's scale (not measured here): {claim.paper_scale}.")
        lines.append("")
    return "\n".join(lines)


def write_claims(paths: Sequence[str | Path], out: str | Path = "CLAIMS.md", command: str = "aelf claims") -> Path:
    out = Path(out)
    write_text(out, claims_markdown(find_results(paths), command))
    return out
