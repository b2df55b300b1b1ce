"""Evaluation suites: several attacks, per-attack robust accuracy and the per-example worst case over all of them.

A robustness number from one attack is an upper bound that a stronger attack may lower (Carlini et al. 2019). A
suite runs attacks from cheap to expensive and counts an example as robust only if it is classified correctly on
the clean image and under every attack. Suites are defined from one l-inf eps (a run's ``eval.attack.eps``):

- ``quick``: FGSM; PGD-CE-20 (20 steps of 2.5 eps / 20 from the clean image, like the paper's test attack) and
  PGD-margin-20-rs (the CW margin loss from a random start: a different loss and start, which on our ST test model
  fools examples that the CE run from the clean image misses);
- ``standard``: quick, then AutoAttack-quick (APGD-CE, APGD-T with 3 target classes; pyautoattack);
- ``full``: standard, then PGD-CE-100x5 and PGD-margin-100x5 (100 steps of 2.5 eps / 100, 5 random restarts),
  then AutoAttack-standard (APGD-CE, APGD-T, FAB-T, Square: the authors' standard evaluation).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aelf.core.accuracy import correct_mask, percent
from aelf.core.attacks import FGSM, PGD
from aelf.core.attacks.autoattack import AutoAttack
from aelf.core.attacks.external import external_attacks
from aelf.core.checks import check_model_inputs, checked_once
from aelf.core.errors import ConfigError
from aelf.core.fileio import write_json
from aelf.core.protocols import Attack
from aelf.core.run import open_run
from aelf.core.run_folder import suite_name

SUITES = ("quick", "standard", "full")
STEP_REACH = 2.5  # PGD step size = 2.5 eps / n_steps (Madry et al. 2018): the steps can cross the ball and back


def pgd(eps: float, n_steps: int, loss: str = "ce", n_restarts: int = 1, random_start: bool = False) -> PGD:
    """PGD with the suites' step rule (2.5 eps / n_steps, at most 1: the whole pixel range); restarts always come
    with a random start."""
    step_size = min(1.0, STEP_REACH * eps / n_steps) if eps > 0 else 1.0  # eps 0: no perturbation, any valid step
    return PGD(eps, n_steps, step_size, random_start or n_restarts > 1, loss, n_restarts)


def suite_attacks(suite: str, eps: float) -> dict[str, Attack]:
    """``{name: attack}`` of a suite at l-inf radius eps (pixel units), in the order they run."""
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r} (choose from: {', '.join(SUITES)})")
    if not eps >= 0:
        raise ConfigError(f"suite eps must be >= 0 (got {eps})")
    attacks: dict[str, Attack] = {
        "FGSM": FGSM(eps),
        "PGD-CE-20": pgd(eps, 20),
        "PGD-margin-20-rs": pgd(eps, 20, "margin", random_start=True),
    }
    if suite in ("standard", "full"):
        attacks["AutoAttack-quick"] = AutoAttack(eps, version="quick")
    if suite == "full":
        attacks["PGD-CE-100x5"] = pgd(eps, 100, n_restarts=5)
        attacks["PGD-margin-100x5"] = pgd(eps, 100, "margin", n_restarts=5)
        attacks["AutoAttack-standard"] = AutoAttack(eps, version="standard")
    return attacks


def with_extra_attacks(
    suite: str, eps: float, extra_attacks: dict | None = None, model: nn.Module | None = None
) -> dict[str, Attack]:
    """The suite's attacks, then ``extra_attacks`` ``{name: attack}`` from elsewhere: any callable ``(model, x, y) ->
    x_adv``, a torchattacks-style attack bound to ``model`` (called as ``attack(x, y)``) or, when aelf loads the
    model itself, ``lambda model: attack`` that builds one (:func:`aelf.core.attacks.external.external_attacks`).
    Each is checked on every call, against the suite's eps too."""
    attacks = suite_attacks(suite, eps)
    if extra_attacks:
        extra = external_attacks(extra_attacks, eps, model)
        clash = sorted(set(extra) & set(attacks))
        if clash:
            raise ConfigError(f"extra attack name {clash[0]!r} is already an attack of suite {suite}; rename it")
        attacks.update(extra)
    return attacks


def attack_settings(attack) -> dict:
    """The attack's class and settings (the fields of an attack dataclass, or what an attack from elsewhere says of
    itself), JSON-able."""
    if callable(getattr(attack, "describe", None)):
        return attack.describe()
    fields = vars(attack) if dataclasses.is_dataclass(attack) else {}
    settings = {key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()}
    return {"name": type(attack).__name__, **settings}


@dataclass
class SuiteResult:
    """Accuracies in percent and per-example masks over the N evaluated examples.

    ``correct[name]``: (N,) bool, correct under that attack (``clean``: no attack). With ``individual=False`` an
    attack runs only on examples still robust, so an example fooled earlier is False for every later attack.
    ``after[name]``: accuracy under the worst case of the clean check and every attack up to this one.
    ``alone[name]``: accuracy under this attack by itself (only when run with ``individual=True``).
    """

    suite: str
    eps: float
    individual: bool
    attacks: dict[str, dict]
    correct: dict[str, torch.Tensor] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    alone: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def robust(self) -> torch.Tensor:
        """(N,) bool: the per-example worst case, correct on the clean image and under every attack."""
        masks = list(self.correct.values())
        robust = masks[0].clone()
        for mask in masks[1:]:
            robust &= mask
        return robust

    @property
    def worst_case(self) -> float:
        """Robust accuracy in percent: the share of examples correct under every attack."""
        return percent(self.robust)

    @property
    def clean(self) -> float:
        return percent(self.correct["clean"])

    def to_dict(self) -> dict:
        """JSON-able summary (no per-example masks)."""
        return {
            "suite": self.suite,
            "eps": self.eps,
            "n_examples": len(self.correct["clean"]),
            "individual": self.individual,
            "clean": self.clean,
            "worst_case": self.worst_case,
            "attacks": [
                {
                    "name": name,
                    "accuracy": self.alone.get(name),
                    "after": self.after[name],
                    "seconds": self.seconds[name],
                    "attack": spec,
                }
                for name, spec in self.attacks.items()
            ],
        }

    def markdown(self) -> str:
        """The table: clean accuracy, each attack (alone and the running worst case) and the worst case."""
        n = len(self.correct["clean"])
        lines = [
            f"Suite `{self.suite}`, l-inf eps {self.eps:.4g}, {n} examples (accuracy in percent)",
            "",
            "| attack | accuracy alone | worst case so far |",
            "|---|---|---|",
            f"| clean | {self.clean:.2f} | {self.clean:.2f} |",
        ]
        for name in self.attacks:
            alone = f"{self.alone[name]:.2f}" if name in self.alone else "-"
            lines.append(f"| {name} | {alone} | {self.after[name]:.2f} |")
        lines.append(f"| **worst case** | | **{self.worst_case:.2f}** |")
        if not self.individual:
            lines += ["", "Each attack ran only on the examples no earlier attack had fooled (accuracy alone: -)."]
        return "\n".join(lines) + "\n"


def run_suite(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    suite: str = "quick",
    eps: float = 0.3,
    batch_size: int = 500,
    individual: bool = False,
    seed: int = 0,
    attacks: dict | None = None,
) -> SuiteResult:
    """Run the suite's attacks on ``model`` (inputs in [0, 1], logits out) and take the per-example worst case.

    x: (N, C, H, W) in [0, 1]; y: (N,). ``individual``: run every attack on every clean-correct example (each
    attack's own accuracy, slower) instead of only on those still robust. ``attacks``: ``{name: attack}`` to run
    instead of the named suite's. Random starts are seeded with ``seed``; the caller's random state is kept.
    """
    if len(x) != len(y):
        raise ConfigError(f"x and y differ in length ({len(x)} vs {len(y)})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1 (got {batch_size})")
    attacks = attacks if attacks is not None else suite_attacks(suite, eps)
    x, y = x.detach(), y.detach()
    result = SuiteResult(suite, eps, individual, {name: attack_settings(a) for name, a in attacks.items()})
    clean = correct_mask(model, x, y, None, batch_size)
    result.correct["clean"] = clean
    robust = clean.clone()
    cuda_devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        for name, attack in attacks.items():
            torch.manual_seed(seed)  # each attack's random starts do not depend on which attacks ran before it
            start = time.perf_counter()
            # Already-fooled examples are skipped: they cannot become robust again, and attacks are the cost.
            todo = (clean if individual else robust).nonzero().squeeze(1)
            correct = torch.zeros_like(clean)
            correct[todo] = correct_mask(model, x[todo], y[todo], attack, batch_size)
            robust &= correct
            result.correct[name] = correct
            result.after[name] = percent(robust)
            if individual:
                result.alone[name] = percent(correct)
            result.seconds[name] = round(time.perf_counter() - start, 2)
    return result


def evaluate_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    suite: str = "quick",
    eps: float = 0.3,
    batch_size: int = 500,
    individual: bool = False,
    seed: int = 0,
    extra_attacks: dict | None = None,
) -> SuiteResult:
    """Evaluate your own model with a suite: ``model`` takes x in [0, 1] ((N, C, H, W)) and returns logits.

    ``extra_attacks``: ``{name: attack}`` from elsewhere, run after the suite's and counted in the worst case
    (:func:`with_extra_attacks`). ``result.worst_case`` is the robust accuracy in percent, ``result.markdown()`` the
    table, ``result.to_dict()`` the JSON, ``result.robust`` the (N,) per-example mask. See :func:`run_suite`. Bad
    images or labels are an :class:`~aelf.core.checks.InputError` (a ``ValueError``) naming the problem.
    """
    check_model_inputs(model, x, y)
    attacks = with_extra_attacks(suite, eps, extra_attacks, model)
    with checked_once():
        return run_suite(model, x, y, suite, eps, batch_size, individual, seed, attacks=attacks)


def suite_file(suite: str, weights: str = "last") -> str:
    """``eval-suite-SUITE.json``; ``eval-suite-SUITE-best.json`` for the best weights (:mod:`aelf.core.run_folder`)."""
    return suite_name(suite, weights)


def evaluate_run_suite(
    run_dir: str | Path,
    suite: str = "quick",
    eps: float | None = None,
    n_examples: int | None = None,
    device: str = "auto",
    individual: bool = False,
    model: nn.Module | None = None,
    weights: str = "last",
    extra_attacks: dict | None = None,
    write: bool = True,
    data: str | Path | None = None,
) -> SuiteResult:
    """A suite on a finished run's test set (its first ``n_examples``), at the run's ``eval.attack.eps`` unless eps
    is given; writes ``eval-suite-SUITE.json`` (``eval-suite-SUITE-best.json`` for the best weights) into the run
    folder. ``model``: a fresh instance of a user's own network, as for :func:`aelf.load_model`; ``weights``:
    ``last`` (default) or ``best``; ``extra_attacks``: attacks from elsewhere to add (:func:`with_extra_attacks`; one
    bound to a model is given as ``lambda model: ...``, since the run's model is loaded here). ``write=False``: only
    return the result (the CLI shows it first, then :func:`write_suite`); ``data``: the run's data file at a new
    place (:func:`aelf.core.run.load_dataset`)."""

    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r} (choose from: {', '.join(SUITES)})")
    if n_examples is not None and n_examples < 1:
        raise ConfigError(f"--n-examples must be at least 1 (got {n_examples})")
    with open_run(run_dir, device, model, weights, n_examples=n_examples, data=data) as run:
        eps = run.config.eval.attack.eps if eps is None else eps
        attacks = with_extra_attacks(suite, eps, extra_attacks, run.model)
        result = run_suite(run.model, run.x, run.y, suite, eps, run.config.eval.batch_size, individual, attacks=attacks)
    if write:
        write_suite(run_dir, suite, weights, result)
    return result


def write_suite(run_dir: str | Path, suite: str, weights: str, result: SuiteResult) -> Path:
    path = Path(run_dir) / suite_file(suite, weights)
    write_json(path, {**result.to_dict(), "weights": weights})
    return path
