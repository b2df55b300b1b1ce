"""Gradient-masking diagnostics: sanity checks a robustness number should pass before anyone believes it.

Following Carlini et al. 2019, "On Evaluating Adversarial Robustness" (Sec. 5.2, 5.4, 5.5), and the checks of
AutoAttack (Croce & Hein 2020: randomised defences, Square doing better than the white-box attacks). Each check
returns ``pass`` or ``warn`` with its numbers; a warning names the check and what it suggests. The checks are
heuristics: a pass does not prove robustness, a warning says the white-box numbers cannot be trusted yet.

1. ``unbounded``: PGD with eps = ``large_eps`` (1.0: the whole pixel box) must bring accuracy to about 0
   (<= ``unbounded_max_accuracy``); if not, the gradients do not lead the attack anywhere.
2. ``iterative-vs-single-step``: PGD (``n_steps``) must do at least as well as FGSM: accuracy(PGD) <=
   accuracy(FGSM) + ``tolerance``.
3. ``more-steps-and-restarts``: more steps (4 n_steps) and random restarts (``n_restarts``) must not raise the
   accuracy by more than ``tolerance``.
4. ``black-box-vs-white-box``: black-box Square (pyautoattack, ``n_queries``) must not beat the white-box attacks:
   accuracy(Square) >= worst case over every white-box attack above - ``tolerance``; a gradient-free attack doing
   better than gradient attacks means the gradients are masked.
5. ``deterministic``: two forward passes in eval mode give the same logits (relative difference <= 1e-5).

Accuracies are in percent of the examples checked; ``tolerance`` is in percentage points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aelf.core.accuracy import correct_mask, percent
from aelf.core.attacks import FGSM
from aelf.core.attacks.autoattack import AutoAttack
from aelf.core.checks import check_model_inputs
from aelf.core.errors import ConfigError
from aelf.core.fileio import write_json
from aelf.core.modes import evaluating
from aelf.core.run import open_run
from aelf.core.run_folder import CHECK
from aelf.workflows.evaluation.robustness import pgd

CHECK_FILE = CHECK  # in the run folder
DETERMINISM_RTOL = 1e-5  # float32 noise between identical passes (e.g. non-deterministic GPU kernels) stays below


@dataclass(frozen=True)
class CheckResult:
    """One diagnostic: ``status`` is ``pass`` or ``warn``; ``numbers`` what it measured; ``message`` why it warns."""

    name: str
    status: str
    numbers: dict
    message: str = ""


@dataclass
class MaskingReport:
    """The checks of :func:`check_model`, in the order they ran."""

    eps: float
    n_examples: int
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def warnings(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status == "warn"]

    def to_dict(self) -> dict:
        return {
            "eps": self.eps,
            "n_examples": self.n_examples,
            "passed": not self.warnings,
            "checks": [vars(check) for check in self.checks],
        }

    def markdown(self) -> str:
        lines = [
            f"Gradient-masking checks, l-inf eps {self.eps:.4g}, {self.n_examples} examples (accuracy in percent)",
            "",
            "| check | status | numbers |",
            "|---|---|---|",
        ]
        for check in self.checks:
            numbers = ", ".join(f"{key} {value:.4g}" for key, value in check.numbers.items())
            lines.append(f"| {check.name} | {check.status} | {numbers} |")
        lines.append("")
        lines += [f"warning: {check.message}" for check in self.warnings] or ["all checks passed"]
        return "\n".join(lines) + "\n"


def check(name: str, ok: bool, numbers: dict, message: str) -> CheckResult:
    return CheckResult(name, "pass" if ok else "warn", numbers, "" if ok else f"{name}: {message}")


@torch.no_grad()
def check_deterministic(model: nn.Module, x: torch.Tensor, batch_size: int) -> CheckResult:
    """Two eval-mode forward passes over x must give the same logits."""
    with evaluating(model):
        first = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        second = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    difference = (first - second).abs().max().item()
    scale = max(1.0, first.abs().max().item())
    agreement = percent(first.argmax(1) == second.argmax(1))
    return check(
        "deterministic",
        difference <= DETERMINISM_RTOL * scale,
        {"max_logit_difference": difference, "prediction_agreement": agreement},
        f"the model is randomised in eval mode (logits differ by up to {difference:.3g} between two identical "
        f"passes, predictions agree on {agreement:.1f}%): noise or dropout left on makes single-run gradient "
        "attacks unreliable; evaluate with expectation over transformation (pyautoattack version='rand') or "
        "remove the randomness",
    )


def check_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 0.3,
    n_examples: int | None = 200,
    tolerance: float = 2.0,
    n_steps: int = 20,
    n_restarts: int = 4,
    large_eps: float = 1.0,
    unbounded_max_accuracy: float = 5.0,
    n_queries: int = 1000,
    batch_size: int = 500,
    seed: int = 0,
) -> MaskingReport:
    """Run the gradient-masking checks on ``model`` (x in [0, 1] -> logits) with the first ``n_examples`` of x, y.

    x: (N, C, H, W) in [0, 1]; y: (N,); eps: the l-inf radius the model claims robustness at. See the module's
    docstring for each check and its threshold. The caller's random state is kept. Bad images or labels are an
    :class:`~aelf.core.checks.InputError` (a ``ValueError``) naming the problem.
    """
    if not eps > 0:
        raise ConfigError(f"check eps must be positive (got {eps})")
    if n_examples is not None and n_examples < 1:
        raise ConfigError(f"n_examples must be at least 1 (got {n_examples})")
    check_model_inputs(model, x, y)
    if len(x) == 0:
        raise ConfigError("x and y must be non-empty")
    if tolerance < 0 or n_steps < 1 or n_restarts < 2 or n_queries < 1 or not large_eps > eps:
        raise ConfigError(
            "check settings: tolerance >= 0, n_steps >= 1, n_restarts >= 2, n_queries >= 1, large_eps > eps"
        )
    x, y = x[:n_examples].detach(), y[:n_examples].detach()
    report = MaskingReport(eps, len(x))
    report.checks.append(check_deterministic(model, x, batch_size))

    cuda_devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        clean = correct_mask(model, x, y, None, batch_size)
        # Only clean-correct examples are attacked: the others count as fooled under every attack.
        todo = clean.nonzero().squeeze(1)

        def accuracy_under(attack) -> tuple[float, torch.Tensor]:
            torch.manual_seed(seed)
            correct = torch.zeros_like(clean)
            correct[todo] = correct_mask(model, x[todo], y[todo], attack, batch_size)
            return percent(correct), correct

        clean_accuracy = percent(clean)
        unbounded, _ = accuracy_under(pgd(large_eps, n_steps))
        report.checks.append(
            check(
                "unbounded",
                unbounded <= unbounded_max_accuracy,
                {"clean": clean_accuracy, "large_eps": large_eps, "accuracy": unbounded},
                f"gradient masking suspected: PGD at eps={large_eps:g} leaves {unbounded:.1f}% accuracy "
                f"(expected about 0, <= {unbounded_max_accuracy:g}): the gradients do not lead the attack; try the "
                "margin loss, BPDA through non-differentiable parts, or a black-box attack",
            )
        )

        fgsm, fgsm_correct = accuracy_under(FGSM(eps))
        iterative, pgd_correct = accuracy_under(pgd(eps, n_steps))
        report.checks.append(
            check(
                "iterative-vs-single-step",
                iterative <= fgsm + tolerance,
                {"fgsm": fgsm, "pgd": iterative, "tolerance": tolerance},
                f"gradient masking suspected: PGD-{n_steps} leaves {iterative:.1f}% accuracy, more than single-step "
                f"FGSM's {fgsm:.1f}% (+{tolerance:g}): the gradient is informative at the clean image only (e.g. a "
                "saturated softmax); try the margin loss or a larger step size",
            )
        )

        more_steps, more_steps_correct = accuracy_under(pgd(eps, 4 * n_steps))
        one_start, one_start_correct = accuracy_under(pgd(eps, n_steps, random_start=True))
        restarts, restarts_correct = accuracy_under(pgd(eps, n_steps, n_restarts=n_restarts))
        report.checks.append(
            check(
                "more-steps-and-restarts",
                more_steps <= iterative + tolerance and restarts <= one_start + tolerance,
                {
                    "steps": n_steps,
                    "pgd": iterative,
                    "more_steps": 4 * n_steps,
                    "pgd_more_steps": more_steps,
                    "random_start": one_start,
                    "restarts": n_restarts,
                    "pgd_restarts": restarts,
                    "tolerance": tolerance,
                },
                f"attack not converging or gradient masking suspected: PGD-{n_steps} {iterative:.1f}% -> "
                f"PGD-{4 * n_steps} {more_steps:.1f}%, random start {one_start:.1f}% -> {n_restarts} restarts "
                f"{restarts:.1f}%; a stronger attack must never leave more accuracy: check step sizes, randomness "
                "and gradients",
            )
        )

        _, margin_correct = accuracy_under(pgd(eps, n_steps, "margin"))
        white_box = percent(
            fgsm_correct & pgd_correct & more_steps_correct & one_start_correct & restarts_correct & margin_correct
        )
        square, _ = accuracy_under(
            AutoAttack(eps, version="custom", attacks=("square",), n_queries=n_queries, seed=seed)
        )
        report.checks.append(
            check(
                "black-box-vs-white-box",
                square >= white_box - tolerance,
                {"white_box": white_box, "square": square, "n_queries": n_queries, "tolerance": tolerance},
                f"gradient masking suspected: black-box Square ({n_queries} queries) leaves {square:.1f}% accuracy, "
                f"below the white-box worst case {white_box:.1f}% (FGSM, PGD-CE, PGD-margin, random restarts): "
                "gradient attacks are being misled; report the black-box number and attack the model adaptively",
            )
        )
    return report


def check_run(
    run_dir: str | Path,
    n_examples: int | None = 200,
    device: str = "auto",
    model: nn.Module | None = None,
    weights: str = "last",
    write: bool = True,
) -> MaskingReport:
    """:func:`check_model` on a finished run's first ``n_examples`` test images at its ``eval.attack.eps``; writes
    ``check.json`` into the run folder. ``model``: a fresh instance of a user's own network (see load_model);
    ``write=False``: only return the report (the CLI shows it first, then :func:`write_check`)."""

    if n_examples is not None and n_examples < 1:
        raise ConfigError(f"--n-examples must be at least 1 (got {n_examples})")
    with open_run(run_dir, device, model, weights) as run:
        report = check_model(
            run.model, run.x, run.y, run.config.eval.attack.eps, n_examples, batch_size=run.config.eval.batch_size
        )
    if write:
        write_check(run_dir, report, weights)
    return report


def write_check(run_dir: str | Path, report: MaskingReport, weights: str) -> Path:
    path = Path(run_dir) / CHECK_FILE
    write_json(path, {**report.to_dict(), "weights": weights})
    return path
