"""Models with the split the paper needs (:class:`~aelf.core.protocols.SplitModel`): ``forward_features(x) -> f``,
``forward_head(f) -> logits``, ``head``.

Adding a model: a file with the ``nn.Module`` and a frozen :class:`ModelOptions` subclass naming it (with its registry
metadata) and building it, plus its class in :data:`ModelChoice`; :data:`MODELS` (by name) follows.
"""

from collections.abc import Sequence
from typing import get_args

from torch import nn

from aelf.core.models.cnnb import CNNb, CNNbOptions
from aelf.core.models.normalize import InputNormalize
from aelf.core.models.options import CustomModelOptions, ModelOptions
from aelf.core.models.preact_resnet import PreActOptions, PreActResNet18
from aelf.core.models.split import (
    LinearHeadSplit,
    as_split_model,
    feature_parameters,
    head_parameters,
    split_interface,
)
from aelf.core.models.split_bn import SplitBatchNorm, natural_inputs, split_batchnorm, split_state
from aelf.core.models.wong_mnist import WongMNIST, WongMNISTOptions
from aelf.core.models.wrn import WideResNet, WRNOptions

ModelChoice = CNNbOptions | WRNOptions | PreActOptions | WongMNISTOptions  # the networks model.name can name
MODELS: dict[str, type[ModelOptions]] = {options.name: options for options in get_args(ModelChoice)}
AnyModelOptions = ModelChoice | CustomModelOptions  # what a run's config holds (custom: a user's own nn.Module)
CUSTOM = CustomModelOptions.name  # model.name of a run that trained a user's own nn.Module (see aelf.train)


def build_model(
    options: ModelOptions,
    in_channels: int,
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """The model ``options`` describe (an entry of :data:`MODELS`), for the given data shape."""
    return options.build(in_channels, num_classes, mean, std)


def input_sizes() -> str:
    """What image sizes the registered models take, in words (for error messages and help)."""
    fixed = [
        f"{name} takes {o.input_size} x {o.input_size} images (resize yours with --set data.image_size={o.input_size})"
        if not index
        else f"{name} {o.input_size} x {o.input_size} (--set data.image_size={o.input_size})"
        for index, (name, o) in enumerate((n, o) for n, o in MODELS.items() if o.input_size is not None)
    ]
    free: dict[int, list[str]] = {}
    for name, o in MODELS.items():
        if o.input_size is None:
            free.setdefault(o.min_input_size, []).append(name)
    for size, names in free.items():
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        fixed.append(f"{listed} any size of at least {size} x {size}")
    return ", ".join(fixed)


__all__ = [
    "CUSTOM",
    "AnyModelOptions",
    "CNNb",
    "CNNbOptions",
    "CustomModelOptions",
    "InputNormalize",
    "LinearHeadSplit",
    "MODELS",
    "ModelChoice",
    "ModelOptions",
    "PreActOptions",
    "PreActResNet18",
    "SplitBatchNorm",
    "WRNOptions",
    "WideResNet",
    "WongMNIST",
    "WongMNISTOptions",
    "as_split_model",
    "build_model",
    "feature_parameters",
    "head_parameters",
    "input_sizes",
    "natural_inputs",
    "split_batchnorm",
    "split_state",
    "split_interface",
]
