"""The only place that switches a model between training and evaluation mode.

Methods and attacks never call ``.train()``/``.eval()``: the trainer wraps each step in :func:`training`, and every
attack runs inside :func:`evaluating` (Appendix C: eval mode while generating adversarial data). Both restore each
submodule's own previous mode on exit, so nesting them is safe.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[nn.Module]:
    previous = [(module, module.training) for module in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for module, was_training in previous:
            module.training = was_training


def evaluating(model: nn.Module):
    """Context manager: ``model`` in eval mode inside, every submodule's mode restored afterwards."""
    return _mode(model, False)


def training(model: nn.Module):
    """Context manager: ``model`` in train mode inside, every submodule's mode restored afterwards."""
    return _mode(model, True)
