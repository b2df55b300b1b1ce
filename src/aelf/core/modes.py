"""The only place that switches a model between training and evaluation mode.

Methods and attacks never call ``.train()``/``.eval()``: the trainer wraps each step in :func:`training`, and every
attack runs inside :func:`evaluating` (Appendix C: eval mode while generating adversarial data), or inside
:func:`crafting` when a method crafts its training attack in another mode (``method.attack_mode``). All of them
restore each submodule's own previous mode on exit, so nesting them is safe.
"""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from torch import nn

from aelf.core.errors import ConfigError
from aelf.core.protocols import Classifier

# How a method's training attack sees the model (``method.attack_mode``): ``eval``, BatchNorm with its running
# statistics (Appendix C, the default), or ``train``, BatchNorm with the statistics of the batch being attacked.
ATTACK_MODES = ("eval", "train")


@contextmanager
def _mode(model: Classifier, train: bool) -> Iterator[Classifier]:
    previous = [(module, module.training) for module in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for module, was_training in previous:
            module.training = was_training


def evaluating(model: Classifier) -> AbstractContextManager[Classifier]:
    """Context manager: ``model`` in eval mode inside, every submodule's mode restored afterwards."""
    return _mode(model, False)


def training(model: Classifier) -> AbstractContextManager[Classifier]:
    """Context manager: ``model`` in train mode inside, every submodule's mode restored afterwards."""
    return _mode(model, True)


def check_attack_mode(mode: str) -> None:
    if mode not in ATTACK_MODES:
        raise ConfigError(f"method.attack_mode must be one of {', '.join(ATTACK_MODES)} (got {mode!r})")


@contextmanager
def crafting(model: Classifier, mode: str) -> Iterator[Classifier]:
    """Context manager for crafting a training attack: ``model`` in ``mode`` (:data:`ATTACK_MODES`) inside, with its
    running statistics frozen.

    ``train``: train mode (BatchNorm normalises with the batch's own statistics; dropout is active too), but no
    BatchNorm updates its running mean, variance or batch count: ``track_running_stats`` is off inside, so the forward
    passes neither read nor write those buffers. Every module's mode and flag are restored on exit.
    """
    if mode == "eval":
        with evaluating(model):
            yield model
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    with training(model):
        for norm in norms:
            norm.track_running_stats = False
        try:
            yield model
        finally:
            for norm in norms:
                norm.track_running_stats = True
