"""Training methods. Each is a frozen dataclass of its hyper-parameters (a :class:`~aelf.core.protocols.Method`) with

- its registry metadata: ``name`` (the CLI/config name), ``label`` (tables), ``description`` (one line),
  ``reference`` (paper and equation);
- ``trainable_parameters(model)``: what the optimizer may change (everything else stays bit-for-bit fixed);
- ``loss(model, x, y) -> (loss, metrics)``: x (N, C, H, W) in [0, 1], y (N,); metrics are detached tensors;
- optionally ``needs_init = True`` when it must start from another run's weights (``train.init``).

To add a method, write one such file and add its class to ``AnyMethod``; ``METHODS`` (by name) follows.
"""

from typing import get_args

from aelf.core.methods.aelf import AELF
from aelf.core.methods.aelfs import AELFs
from aelf.core.methods.at import AT
from aelf.core.methods.jt import JT
from aelf.core.methods.jt_star import JTStar
from aelf.core.methods.st import ST
from aelf.core.methods.trades import TRADES
from aelf.core.protocols import Method

AnyMethod = ST | AT | JT | TRADES | AELF | AELFs | JTStar
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in get_args(AnyMethod)}

__all__ = ["AELF", "AELFs", "AT", "AnyMethod", "JT", "JTStar", "METHODS", "ST", "TRADES"]
