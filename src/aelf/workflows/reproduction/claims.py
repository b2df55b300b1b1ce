"""The paper's claims as paired comparisons, and the rule that turns a claim's comparisons into a verdict.

Each claim is a set of paired comparisons between runs of one reproduced experiment (the same seeds, the same test
images: :mod:`aelf.workflows.evaluation.stats`), each with the sign of A - B that the paper claims. The rule
(:data:`RULE`, printed at the top of CLAIMS.md) is fixed here, before any result is read:

- a comparison **agrees** when its 95% interval lies entirely on the claimed side of 0, and **disagrees** when it
  lies entirely on the other side;
- **supported**: every comparison of the claim agrees. Each must pass on its own, so no correction for the number
  of comparisons is needed (an intersection-union test);
- otherwise each comparison is counted only when it survives Holm's correction over the claim's comparisons
  (family-wise error 5%): **partly supported** when at least one agrees and none disagrees (the verdict names which
  agreed), **mixed** when some agree and some disagree, **contradicted** when none agrees and at least one
  disagrees, **not distinguishable at this scale** when none survives either way;
- a claim about a curve's shape (claim 8) is **contradicted** when the curve goes the other way where the claim
  says it rises, whatever it does elsewhere: a curve that only falls is not "rises, then falls".

Measurements: accuracy (0/1 per image, in points); a *contrast*, the per-image difference of two outcomes of the
same run (N minus a shifted set: the accuracy lost to the shift; in points); and attention breadth, ``mass_90``
(the fraction of pixels that holds 90% of the input gradient's mass, :mod:`aelf.workflows.attention.metrics`;
larger is broader). B may be the mean of two runs (``b2``): "AELFs is closer to ST than to AT" is AELFs against the
midpoint of ST and AT, which holds exactly when AELFs recovers at least half of the ST - AT gap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from aelf.core.errors import CheckpointError, ConfigError
from aelf.workflows.evaluation import stats
from aelf.workflows.reproduction.evidence import AUTOATTACK, bits_at
from aelf.workflows.reproduction.paper import SETS

SHIFTED = SETS[1:]
BREADTH = "mass_90"
RATIOS = ("0.4-0.6", "0.5-0.5", "0.6-0.4")
SHIFT_EXPERIMENTS = ("table2", "table6", "fig3")
ABOVE, BELOW = "> 0", "< 0"  # the claimed sign of A - B
ALPHA = 0.05  # each interval is 95%; Holm's family-wise level

RULE = (
    "How a verdict is reached (fixed before any result was read; aelf.workflows.reproduction.claims): each "
    "comparison is A - B, paired over the same seeds and test images, with a 95% t-interval over seeds and images. "
    "It *agrees* when the whole interval lies on the side of 0 that the claim states, and *disagrees* when it lies "
    "on the other side. **supported**: every comparison of the claim agrees (each on its own, so no correction for "
    "their number is needed). Otherwise comparisons count only when they survive Holm's correction over the "
    "claim's comparisons (family-wise 5%): **partly supported** when at least one agrees and none disagrees (the "
    "comparisons that agree are named), **mixed** when some agree and some disagree, **contradicted** when none "
    "agrees and at least one disagrees, **not distinguishable at this scale** when none survives. A claim about a "
    "curve's shape (8) is contradicted when the curve goes the other way where the claim has it rise. 'paper' is "
    "the paper's single-seed difference for the same cell (its PGD, its data and eps, named under each scale), "
    "where it reports both cells."
)


@dataclass(frozen=True)
class Check:
    """One paired comparison: ``a`` against ``b`` (or the mean of ``b`` and ``b2``) on one measurement.

    ``path``: where the measurement sits in a run's per-image results, e.g. ``("adversarial", "N(U)")``; for a
    ``contrast`` the value per image is the outcome at ``path`` minus the outcome at ``minus``. ``role``: ``rise``
    or ``fall`` for the comparisons of a shape claim.
    """

    what: str
    a: str
    b: str
    path: tuple[str, ...]
    expected: str = ABOVE
    kind: str = "accuracy"  # "accuracy" (0/1 per image), "contrast" (path minus minus), "breadth" (mass_90)
    minus: tuple[str, ...] | None = None
    b2: str | None = None
    role: str = ""


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    where: str
    experiments: tuple[str, ...]  # results of any of these answer it
    checks: Callable[[dict], list[Check]]
    command: str  # how to measure it at this project's scale
    paper_scale: str  # what the paper's own scale needs
    shape: bool = False  # judged by the shape rule (a rise that goes the other way contradicts it)
    note: str = ""  # what the reader must know to read its paper column
    detail: Callable[[dict], str] | None = None  # a descriptive line per scale (not part of the verdict)


def _loss(s: str, a: str = "at", b: str = "st") -> Check:
    return Check(
        f"natural accuracy lost from N to {s}: {a.upper()}'s loss minus {b.upper()}'s",
        a,
        b,
        ("natural", "N"),
        kind="contrast",
        minus=("natural", s),
    )


def _claim1(doc: dict) -> list[Check]:
    return [Check("gradient breadth (mass_90) on N, ST minus AT", "st", "at", ("attention", BREADTH), kind="breadth")]


def _claim2(doc: dict) -> list[Check]:
    checks = [_loss(s) for s in SHIFTED]
    for most in ("N(U)", "N(D)"):
        for less in ("N(L)", "N(R)"):
            checks.append(
                Check(
                    f"AT's extra loss (over ST's) on {most} minus its extra loss on {less}",
                    "at",
                    "st",
                    ("natural", less),
                    kind="contrast",
                    minus=("natural", most),
                )
            )
    return checks


def _claim3(doc: dict) -> list[Check]:
    return [
        Check(f"natural accuracy on {s}, AELFs minus {base.upper()}", "aelfs", base, ("natural", s))
        for base in ("at", "jt")
        for s in SHIFTED
    ]


def _claim4(doc: dict) -> list[Check]:
    checks = [
        Check(f"PGD accuracy on {s}, AELFs minus {base.upper()}", "aelfs", base, ("adversarial", s))
        for base in ("at", "jt")
        for s in SETS
    ]
    if AUTOATTACK in first_result(doc, "aelfs"):
        checks += [
            Check(f"AutoAttack accuracy on N, AELFs minus {base.upper()}", "aelfs", base, (AUTOATTACK,))
            for base in ("at", "jt")
        ]
    return checks


def _claim5(doc: dict) -> list[Check]:
    breadth = ("attention", BREADTH)
    checks = [
        Check(f"gradient breadth (mass_90), AELFs minus {base.upper()}", "aelfs", base, breadth, kind="breadth")
        for base in ("at", "jt")
    ]
    checks.append(
        Check(
            "close to ST's: AELFs minus the midpoint of ST and AT (> 0: AELFs recovers at least half of the ST - AT "
            "breadth gap)",
            "aelfs",
            "st",
            breadth,
            kind="breadth",
            b2="at",
        )
    )
    return checks


def _first_attack(doc: dict) -> str:
    return next(iter(doc["test_attacks"]))


def _claim6(doc: dict) -> list[Check]:
    attack = _first_attack(doc)
    checks = []
    for ratio in RATIOS:
        jt = f"jt-{ratio}"
        checks.append(Check(f"natural accuracy, JT {ratio} minus AT", jt, "at", ("natural",)))
        checks.append(Check(f"{attack} accuracy, JT {ratio} minus AT", jt, "at", (attack,), BELOW))
    checks.append(Check("natural accuracy, JT 0.6:0.4 minus 0.4:0.6", "jt-0.6-0.4", "jt-0.4-0.6", ("natural",)))
    checks.append(Check(f"{attack} accuracy, JT 0.6:0.4 minus 0.4:0.6", "jt-0.6-0.4", "jt-0.4-0.6", (attack,), BELOW))
    return checks


def _claim7(doc: dict) -> list[Check]:
    attack = _first_attack(doc)
    if doc["experiment"] == "ablation":
        return _claim7_ablation(doc, attack)
    checks = []
    for ratio in RATIOS:
        jt, jt_star, aelfs = (f"{method}-{ratio}" for method in ("jt", "jt_star", "aelfs"))
        checks.append(Check(f"{attack} accuracy, JT* minus JT at {ratio}", jt_star, jt, (attack,)))
        checks.append(Check(f"{attack} accuracy, AELFs minus JT* at {ratio}", aelfs, jt_star, (attack,)))
    return checks


def _claim7_ablation(doc: dict, attack: str) -> list[Check]:
    """Claim 7 on the ablation's runs: beta 0.05 (where Table 3's beta 0.5 collapses the features at these widths),
    ratio 0.5:0.5; JT* is AELFs with its head trained (``aelfs-head``: the ST start and the penalty)."""
    paths: list[tuple[str, tuple[str, ...]]] = [(f"{attack} accuracy on N", ("adversarial", "N"))]
    if AUTOATTACK in first_result(doc, "aelfs"):
        paths.append(("AutoAttack accuracy on N", (AUTOATTACK,)))
    checks = []
    for what, path in paths:
        checks.append(Check(f"{what}, JT* minus JT at beta 0.05, 0.5:0.5", "aelfs-head", "jt", path))
        checks.append(Check(f"{what}, AELFs minus JT* at beta 0.05, 0.5:0.5", "aelfs", "aelfs-head", path))
    return checks


def _claim8(doc: dict) -> list[Check]:
    attack = _first_attack(doc)
    checks = []
    for path, name in ((("natural",), "natural"), ((attack,), attack)):
        checks.append(
            Check(f"{name} accuracy, beta 0.6 minus 0.1", "aelfs-beta0.6", "aelfs-beta0.1", path, role="rise")
        )
        checks.append(
            Check(f"{name} accuracy, beta 1.0 minus 0.6", "aelfs-beta1.0", "aelfs-beta0.6", path, BELOW, role="fall")
        )
    return checks


CPU_SHIFT = "aelf reproduce table2 --preset quick --seeds 8,9,10,11,12 --out studies/table2-quick"
TABLE3_ROWS = (
    "The paper's Table 3 does not say which loss ratio its three JT rows use; the paper column reads them as "
    "0.4:0.6, 0.5:0.5 and 0.6:0.4 from the row order (aelf.workflows.reproduction.paper)."
)
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
        note="'Close to ST's' is read, before looking, as: AELFs recovers at least half of the ST - AT breadth gap.",
        detail=lambda doc: recovered_text(doc),
    ),
    Claim(
        6,
        "JT gains natural and loses adversarial accuracy against AT, moving with the loss ratio.",
        "Fig. 1",
        ("fig1", "table3"),
        _claim6,
        "aelf reproduce fig1 --preset quick --seeds 8,9,10",
        "CIFAR-10, CNNb, 160 epochs: `aelf reproduce fig1 --preset paper --seeds 8,9,10` (a GPU, CIFAR-10 files)",
        note=TABLE3_ROWS,
    ),
    Claim(
        7,
        "Each of AELFs' two actions helps: JT* beats JT, AELFs beats JT*.",
        "Section 4.2, Table 3",
        ("table3", "ablation"),
        _claim7,
        "aelf reproduce table3 --preset quick --seeds 8,9,10 (beta 0.5); aelf reproduce ablation --seeds 8,9,10,11,12 "
        "(beta 0.05)",
        "CIFAR-10, CNNb, 160 epochs: `aelf reproduce table3 --preset paper --seeds 8,9,10` (a GPU, CIFAR-10 files)",
        note=TABLE3_ROWS,
    ),
    Claim(
        8,
        "Accuracy rises with beta up to about 0.6 and falls past 0.8.",
        "Appendix B.2, Fig. 5",
        ("fig5",),
        _claim8,
        "aelf reproduce fig5 --preset quick --seeds 8,9,10",
        "CIFAR-10, CNNb, 160 epochs: `aelf reproduce fig5 --preset paper --seeds 8,9,10` (a GPU, CIFAR-10 files)",
        shape=True,
        detail=lambda doc: peak_text(doc),
    ),
)


@dataclass(frozen=True)
class Evidence:
    check: Check
    comparison: stats.Comparison
    paper: float | None  # the paper's difference for the same cell (PGD, single seed), when it reports both

    @property
    def agrees(self) -> bool:
        return _sign(self.comparison.verdict) == self.check.expected

    @property
    def disagrees(self) -> bool:
        return _sign(self.comparison.verdict) not in (self.check.expected, None)


def _sign(verdict: str) -> str | None:
    return {stats.BETTER: ABOVE, stats.WORSE: BELOW}.get(verdict)


def holm_survivors(evidence: Sequence[Evidence], alpha: float = ALPHA) -> list[bool]:
    """Which comparisons Holm's step-down procedure keeps at family-wise level ``alpha`` (Holm 1979)."""
    order = sorted(range(len(evidence)), key=lambda i: evidence[i].comparison.p_value or 0.0)
    kept = [False] * len(evidence)
    for rank, i in enumerate(order):
        if (evidence[i].comparison.p_value or 0.0) > alpha / (len(evidence) - rank):
            break
        kept[i] = True
    return kept


@dataclass(frozen=True)
class Verdict:
    word: str
    agreeing: tuple[str, ...] = ()  # for "partly supported": the comparisons that agree after Holm


def claim_verdict(evidence: Sequence[Evidence], shape: bool = False) -> Verdict:
    """The verdict of one claim at one scale, by :data:`RULE`."""
    if all(e.agrees for e in evidence):
        return Verdict("supported")
    kept = holm_survivors(evidence)
    agree = [e for e, k in zip(evidence, kept, strict=True) if k and e.agrees]
    disagree = [e for e, k in zip(evidence, kept, strict=True) if k and e.disagrees]
    if shape and any(e.check.role == "rise" for e in disagree):
        return Verdict("contradicted")
    if agree and disagree:
        return Verdict("mixed")
    if disagree:
        return Verdict("contradicted")
    if agree:
        return Verdict("partly supported", tuple(e.check.what for e in agree))
    return Verdict("not distinguishable at this scale")


def first_result(doc: dict, key: str) -> dict:
    runs = doc.get("per_seed", {}).get(key)
    if not runs:
        raise ConfigError(f"{doc.get('experiment')}: no run {key!r} in the results file")
    return next(iter(runs.values()))


def _per_seed(doc: dict, key: str, check: Check) -> np.ndarray:
    """seeds x images: 0/1 outcomes, -1/0/1 contrasts, or breadth values."""
    rows: list[np.ndarray] = []
    for seed in doc["seeds"]:
        per_image = doc["per_seed"][key][str(seed)].get("per_image")
        if per_image is None:
            raise CheckpointError(
                f"{doc['experiment']}/{key} seed {seed}: no per-image outcomes (re-run aelf reproduce to add them)"
            )
        if check.kind == "breadth":
            rows.append(np.asarray(per_image["attention"][check.path[1]], dtype=np.float64))
            continue
        outcome = bits_at(per_image, check.path).astype(np.int8)
        if check.minus is not None:
            outcome = outcome - bits_at(per_image, check.minus).astype(np.int8)
        rows.append(outcome)
    return np.stack(rows)


def _paper_value(paper: dict, key: str, check: Check) -> float:
    def at(path: tuple[str, ...]) -> float:
        node = paper[key]
        for part in path:
            node = node[part]
        return node

    return at(check.path) - (at(check.minus) if check.minus is not None else 0.0)


def _paper_difference(doc: dict, check: Check) -> float | None:
    paper = doc.get("paper", {})
    if check.kind == "breadth" or check.b2 is not None or check.a not in paper or check.b not in paper:
        return None
    try:
        return round(_paper_value(paper, check.a, check) - _paper_value(paper, check.b, check), 2)
    except (KeyError, TypeError):
        return None


def compare(doc: dict, check: Check) -> Evidence:
    a = _per_seed(doc, check.a, check)
    b = _per_seed(doc, check.b, check)
    if check.b2 is not None:
        b = (b + _per_seed(doc, check.b2, check)) / 2
    if check.kind == "accuracy":
        comparison = stats.paired_difference(a, b)
    else:
        scale = 100.0 if check.kind == "contrast" else 1.0  # contrasts in points, like accuracies
        comparison = stats.paired_mean_difference(a * scale, b * scale)
    return Evidence(check, comparison, _paper_difference(doc, check))


def evidence_of(claim: Claim, doc: dict) -> list[Evidence]:
    return [compare(doc, check) for check in claim.checks(doc)]


def peak_text(doc: dict) -> str:
    """Claim 8's curve: where the mean natural and attacked accuracy peak over beta, and where each seed's does."""
    keys = sorted((k for k in doc["per_seed"] if k.startswith("aelfs-beta")), key=lambda k: float(k[10:]))
    if not keys:
        return ""
    attack = _first_attack(doc)
    parts = []
    for path, name in ((("natural",), "natural"), ((attack,), attack)):
        curve = np.array(
            [[bits_at(doc["per_seed"][k][str(s)]["per_image"], path).mean() for s in doc["seeds"]] for k in keys]
        )
        best = [keys[i][10:] for i in curve.argmax(axis=0)]
        parts.append(
            f"{name} accuracy peaks at beta {keys[int(curve.mean(axis=1).argmax())][10:]} on the mean over seeds "
            f"(per seed: {', '.join(best)})"
        )
    return "; ".join(parts) + f", of beta {', '.join(k[10:] for k in keys)}."


def recovered_text(doc: dict) -> str:
    """Claim 5, descriptive: the share of the ST - AT breadth gap that AELFs recovers, from the mean breadths."""
    st, at, aelfs = (doc["measured"][k]["attention"][BREADTH]["mean"] for k in ("st", "at", "aelfs"))
    if st == at:
        return ""
    return (
        f"Mean breadth (mass_90): ST {st:.3f}, AT {at:.3f}, AELFs {aelfs:.3f}: AELFs recovers "
        f"{100 * (aelfs - at) / (st - at):.0f}% of the ST - AT gap (means over seeds and images; the interval is the "
        "comparison with the midpoint above)."
    )
