"""Attacks on models that take pixels in [0, 1]: ``attack(model, x, y) -> x_adv``."""

from aelf.attacks.fgsm import FGSM
from aelf.attacks.pgd import PGD, input_gradient, project
from aelf.attacks.trades_kl import TradesKL

__all__ = ["FGSM", "PGD", "TradesKL", "input_gradient", "project"]
