"""Split BatchNorm (AdvProp, Xie et al. 2020): BatchNorm layers of their own for adversarial inputs.

A joint method (JT, AELFs) trains on batches half natural, half adversarial, so with one set of BatchNorm layers the
batch statistics and the running statistics mix the two distributions. :func:`split_batchnorm` replaces every
BatchNorm layer of a model by a :class:`SplitBatchNorm` holding two copies of it, ``natural`` and ``adversarial``;
convolutions, linear layers and the head stay shared.

The adversarial set is the default: whatever runs through the model outside :func:`natural_inputs` (the training
attack, evaluation, every attack at test time, the deployed model) uses it. Inside ``with natural_inputs(model):``
every split layer uses the natural set, which is how a joint method runs the natural part of its batch
(:func:`aelf.core.methods.mixed.mixed_forward`). Each set's parameters get gradients, and its running statistics
change, only from the inputs routed through it.

A run's weights hold both sets (``...bn.natural.*`` and ``...bn.adversarial.*``); :func:`split_state` lets a split
model start from the weights of a plain one (``train.init`` from an ST run), both sets copying its BatchNorm layers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aelf.core.errors import AelfError, ConfigError

BN_CHOICES = ("shared", "split")
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
NATURAL, ADVERSARIAL = "natural", "adversarial"


def check_bn(bn: str) -> None:
    """``method.bn``: ``shared`` (one set of BatchNorm layers, as in the paper) or ``split``."""
    if bn not in BN_CHOICES:
        raise ConfigError(f"method.bn must be one of {', '.join(BN_CHOICES)} (got {bn!r})")


class SplitBatchNorm(nn.Module):
    """Two BatchNorm layers of one shape; ``forward`` uses ``natural`` inside :func:`natural_inputs`, else
    ``adversarial``. Both start as copies of the layer it replaces (weights and running statistics)."""

    def __init__(self, batchnorm: nn.Module):
        super().__init__()
        self.natural = copy.deepcopy(batchnorm)
        self.adversarial = copy.deepcopy(batchnorm)
        self.use_natural = False  # set only by natural_inputs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.natural if self.use_natural else self.adversarial)(x)


def split_layers(model: nn.Module) -> list[tuple[str, SplitBatchNorm]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, SplitBatchNorm)]


def split_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``model`` (in place) by a :class:`SplitBatchNorm`; returns ``model``.

    A model that has split layers already is returned unchanged; one without BatchNorm is a ConfigError.
    """
    if split_layers(model):
        return model
    found = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BATCHNORMS):
                setattr(parent, name, SplitBatchNorm(child))
                found += 1
    if not found:
        raise ConfigError(f"method.bn=split: {type(model).__name__} has no BatchNorm layer to split")
    return model


@contextmanager
def natural_inputs(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, every :class:`SplitBatchNorm` of ``model`` uses its natural set; restored on exit."""
    layers = [module for _, module in split_layers(model)]
    if not layers:
        raise AelfError(f"{type(model).__name__} has no split BatchNorm layers (build it with split_batchnorm)")
    previous = [layer.use_natural for layer in layers]
    for layer in layers:
        layer.use_natural = True
    try:
        yield model
    finally:
        for layer, value in zip(layers, previous, strict=True):
            layer.use_natural = value


def split_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights ``tensors`` of a model with plain BatchNorm, laid out for ``model``'s split layers: each plain
    layer's tensors (``NAME.weight``, ``NAME.running_mean``, ...) copied into ``NAME.natural.*`` and
    ``NAME.adversarial.*``. Weights that already hold split layers, or a model without them, pass unchanged."""
    layers = split_layers(model)
    if not layers or any(key.startswith(f"{name}.{NATURAL}.") for name, _ in layers for key in tensors):
        return tensors
    converted = dict(tensors)
    for name, layer in layers:
        for key in layer.natural.state_dict():
            plain = f"{name}.{key}"
            if plain in converted:
                value = converted.pop(plain)
                converted[f"{name}.{NATURAL}.{key}"] = value.clone()
                converted[f"{name}.{ADVERSARIAL}.{key}"] = value.clone()
    return converted
