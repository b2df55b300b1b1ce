"""Attacks on models that take pixels in [0, 1]: ``attack(model, x, y) -> x_adv`` (:class:`aelf.core.protocols.Attack`).

``AnyTrainingAttack`` lists the attacks a method may make its adversarial examples with (the type of the methods'
``attack`` fields; each a :class:`~aelf.core.protocols.TrainingAttack` with its registry metadata);
``TRAINING_ATTACKS`` is the same list by ``method.attack.name`` (no name means :data:`DEFAULT_TRAINING_ATTACK`).
Adding a training attack: its file, plus its class in ``AnyTrainingAttack``. Evaluation attacks stay PGD/AutoAttack.
"""

from typing import get_args

from aelf.core.attacks.fgsm import FGSM
from aelf.core.attacks.fgsm_rs import FGSMRS
from aelf.core.attacks.n_fgsm import NFGSM
from aelf.core.attacks.pgd import PGD, input_gradient, project
from aelf.core.attacks.trades_kl import TradesKL
from aelf.core.protocols import TrainingAttack

AnyTrainingAttack = PGD | FGSMRS | NFGSM
TRAINING_ATTACKS: dict[str, type[TrainingAttack]] = {cls.name: cls for cls in get_args(AnyTrainingAttack)}
DEFAULT_TRAINING_ATTACK = PGD.name  # a PGD training attack is written without a name

__all__ = [
    "DEFAULT_TRAINING_ATTACK",
    "FGSM",
    "FGSMRS",
    "NFGSM",
    "PGD",
    "TRAINING_ATTACKS",
    "AnyTrainingAttack",
    "TradesKL",
    "input_gradient",
    "project",
]
