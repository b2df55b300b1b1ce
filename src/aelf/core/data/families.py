"""Dataset families: what datasets of one kind share, the paper's attack budget and the training augmentation.

The paper trains and tests the MNIST family with PGD(0.3, 16, 0.02) (Section 4.1) and no augmentation, and the CIFAR
family at eps 0.031 (Table 4's PGD(0.031, 10, 0.0062)) with random crops and flips (Appendix C). A run's training
and evaluation attacks default to its dataset's family (:func:`aelf.core.config.make_config`), so that
``--dataset cifar10`` trains and tests at CIFAR's budget without a further setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from aelf.core.attacks import PGD
from aelf.core.data.augment import random_crop_flip


@dataclass(frozen=True)
class Family:
    name: str
    attack: PGD  # the family's paper attack: the default training and evaluation attack
    augment: Callable[..., torch.Tensor] | None  # training augmentation, called as augment(x, generator=g)


MNIST = Family("mnist", PGD(eps=0.3, n_steps=16, step_size=0.02), None)
CIFAR = Family("cifar", PGD(eps=0.031, n_steps=10, step_size=0.0062), random_crop_flip)
FAMILIES = {family.name: family for family in (MNIST, CIFAR)}
