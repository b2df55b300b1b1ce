"""AutoAttack (Croce & Hein 2020) through the authors' package ``pyautoattack``, called like every aelf attack.

``AutoAttack(eps)(model, x, y) -> x_adv``. Versions:

- ``standard``: the authors' standard evaluation, APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes),
  Square (5,000 queries), each run only on the examples the earlier ones did not fool;
- ``plus``: the authors' plus version (adds APGD-DLR and untargeted FAB, 5 restarts each);
- ``quick``: a cheaper subset, APGD-CE (1 restart, 100 iterations) and APGD-T with 3 target classes instead of 9;
- ``custom``: the attacks named in ``attacks`` (``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab``, ``fab-t``,
  ``square``) with the standard version's settings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from aelf.core.attacks.pgd import check_pixel_size
from aelf.core.checks import check_attack_inputs
from aelf.core.errors import ConfigError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier

VERSIONS = ("standard", "plus", "quick", "custom")
NORMS = ("Linf", "L2")
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
QUICK_TARGET_CLASSES = 3
LOGGER = "auto-attack"  # the logger pyautoattack reports to


@contextmanager
def quiet_logger(verbose: bool) -> Iterator[None]:
    """Silence pyautoattack's own warnings and progress unless ``verbose`` (its logger's level restored after)."""
    logger = logging.getLogger(LOGGER)
    previous = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


@dataclass(frozen=True)
class AutoAttack:
    """AutoAttack(eps, norm, version, seed) from ``pyautoattack``; eps in pixel units of [0, 1] images.

    ``seed`` fixes the attacks' random starts (the caller's random state is left as it was). ``n_queries``
    overrides Square's query budget (5,000 in the standard version). The model runs in eval mode; the device is
    the one of x. ``n_iter`` overrides the APGD iterations (100 in every version): fewer only for quick looks, the
    authors' budget for reported numbers.
    """

    eps: float = 0.3
    norm: str = "Linf"
    version: str = "standard"
    seed: int = 0
    attacks: tuple[str, ...] = ()
    n_queries: int | None = None
    n_iter: int | None = None
    batch_size: int = 500
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.eps >= 0:
            raise ConfigError(f"AutoAttack eps must be >= 0 (got {self.eps})")
        if self.norm not in NORMS:
            raise ConfigError(f"AutoAttack norm must be one of {', '.join(NORMS)} (got {self.norm!r})")
        if self.norm == "Linf":  # an l2 radius may exceed 1
            check_pixel_size("eps", self.eps)
        if self.version not in VERSIONS:
            raise ConfigError(f"AutoAttack version must be one of {', '.join(VERSIONS)} (got {self.version!r})")
        if self.version == "custom":
            unknown = [name for name in self.attacks if name not in ATTACKS]
            if not self.attacks or unknown:
                raise ConfigError(
                    f"AutoAttack version 'custom' needs attacks from {', '.join(ATTACKS)} (got {list(self.attacks)})"
                )
        elif self.attacks:
            raise ConfigError("AutoAttack attacks are only used with version='custom'")
        if self.n_queries is not None and self.n_queries < 1:
            raise ConfigError(f"AutoAttack n_queries must be at least 1 (got {self.n_queries})")
        if self.n_iter is not None and self.n_iter < 1:
            raise ConfigError(f"AutoAttack n_iter must be at least 1 (got {self.n_iter})")
        if self.batch_size < 1:
            raise ConfigError(f"AutoAttack batch_size must be at least 1 (got {self.batch_size})")

    def attack_names(self) -> list[str]:
        """The pyautoattack attacks this version runs, in order."""
        if self.version == "standard":
            return ["apgd-ce", "apgd-t", "fab-t", "square"]
        if self.version == "plus":
            return ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
        if self.version == "quick":
            return ["apgd-ce", "apgd-t"]
        return list(self.attacks)

    def build(self, model: Classifier, device: torch.device, n_classes: int = 10) -> Any:
        """The configured ``pyautoattack.AutoAttack`` object for ``model`` on ``device`` (``n_classes`` logits)."""
        from pyautoattack import AutoAttack as Authors

        if self.version in ("standard", "plus"):
            runner = Authors(model, device=device, eps=self.eps, norm=self.norm, seed=self.seed, version=self.version)
        else:
            runner = Authors(
                model,
                attacks=self.attack_names(),
                device=device,
                eps=self.eps,
                norm=self.norm,
                seed=self.seed,
                version="custom",
            )
            # pyautoattack applies no settings for 'custom'; start from its standard version's (1 APGD restart,
            # 9 target classes, 1 FAB restart).
            runner.apgd.n_restarts = 1
            runner.apgd_targeted.n_restarts = 1
            runner.apgd_targeted.n_target_classes = 9
            runner.fab.n_restarts = 1
            runner.fab.n_target_classes = 9
            if self.version == "quick":
                runner.apgd_targeted.n_target_classes = QUICK_TARGET_CLASSES
        # Targeted attacks aim at the top non-true classes: never more of them than the model has.
        runner.apgd_targeted.n_target_classes = min(runner.apgd_targeted.n_target_classes, n_classes - 1)
        runner.fab.n_target_classes = min(runner.fab.n_target_classes, n_classes - 1)
        if self.n_queries is not None:
            runner.square.n_queries = self.n_queries
        if self.n_iter is not None:
            self.set_apgd_iterations(runner, model, device)
        runner.verbose = self.verbose
        return runner

    def set_apgd_iterations(self, runner: Any, model: Classifier, device: torch.device) -> None:
        """Rebuild the runner's two APGD attacks with ``n_iter`` iterations and otherwise pyautoattack's arguments.

        APGD derives its step-size checkpoints from n_iter in its constructor, so the attribute alone cannot change.
        """
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

        common = dict(
            n_iter=self.n_iter,
            norm=self.norm,
            eps=self.eps,
            seed=self.seed,
            eot_iter=1,
            rho=0.75,
            verbose=False,
            device=device,
            logger=runner.logger,
        )
        runner.apgd = APGDAttack(model, n_restarts=runner.apgd.n_restarts, **common)
        runner.apgd_targeted = APGDAttack_targeted(
            model,
            n_restarts=runner.apgd_targeted.n_restarts,
            n_target_classes=runner.apgd_targeted.n_target_classes,
            **common,
        )

    def __call__(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1]; y: (N,). Returns x_adv in [0, 1] within eps of x (in ``norm``)."""
        check_attack_inputs(model, x, y)
        x, y = x.detach(), y.detach()
        if len(x) == 0 or self.eps == 0:
            return x.clone()
        # pyautoattack reseeds the global generators with ``seed``: fork them so the caller's stream is untouched.
        cuda_devices = [x.device] if x.device.type == "cuda" else []
        tracer = sys.gettrace()  # pyautoattack's dynamic-defence check ends with sys.settrace(None)
        try:
            with evaluating(model), quiet_logger(self.verbose), torch.random.fork_rng(devices=cuda_devices):
                with torch.no_grad():
                    n_classes = model(x[:1]).shape[1]
                runner = self.build(model, x.device, n_classes)
                x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=self.batch_size)
        finally:
            sys.settrace(tracer)
        return x_adv.detach()
