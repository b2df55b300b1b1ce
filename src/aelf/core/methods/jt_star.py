"""JT* (Table 3, "JT with our two actions"): JT plus the two additions AELFs makes to it, head left trainable.

The two actions are AELFs' parameter initialisation with standard training and its feature-norm penalty, so JT*
minimises Eq. 10's loss

    lambda_nat * CE(W f, y) + lambda_adv * CE(W f', y) + beta * (||f||_2 + ||f'||_2)

over c *and* W, starting from an ST checkpoint. Comparing it with AELFs isolates the effect of freezing W (Section
4.2). Fields and batch layout (second half adversarial, Appendix C) are those of AELFs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from aelf.core.methods.aelfs import AELFs


@dataclass(frozen=True)
class JTStar(AELFs):
    """AELFs' fields, loss and start from an ST run (``needs_init``); only the set of trained parameters differs:
    the head W too (``freeze_head`` false by default, the one difference from AELFs)."""

    name: ClassVar[str] = "jt_star"
    label: ClassVar[str] = "JT*"
    description: ClassVar[str] = "JT*: JT with AELFs' start from a standard-training run and its feature-norm penalty"
    reference: ClassVar[str] = "Table 3 of the paper"
    freeze_head: bool = False
