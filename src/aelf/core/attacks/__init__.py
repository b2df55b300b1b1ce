"""Attacks on models that take pixels in [0, 1]: ``attack(model, x, y) -> x_adv``.

``TRAINING_ATTACKS`` are those a method may make its adversarial examples with (``method.attack.name``; no name
means ``pgd``); ``TrainingAttack`` is their type in the methods' fields. Evaluation attacks stay PGD/AutoAttack.
"""

from aelf.core.attacks.fgsm import FGSM
from aelf.core.attacks.fgsm_rs import FGSMRS
from aelf.core.attacks.n_fgsm import NFGSM
from aelf.core.attacks.pgd import PGD, input_gradient, project
from aelf.core.attacks.trades_kl import TradesKL

TRAINING_ATTACKS = {"pgd": PGD, FGSMRS.name: FGSMRS, NFGSM.name: NFGSM}
TrainingAttack = PGD | FGSMRS | NFGSM

__all__ = [
    "FGSM",
    "FGSMRS",
    "NFGSM",
    "PGD",
    "TRAINING_ATTACKS",
    "TradesKL",
    "TrainingAttack",
    "input_gradient",
    "project",
]
