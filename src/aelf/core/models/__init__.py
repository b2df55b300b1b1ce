"""Models with the split the paper needs: ``forward_features(x) -> f``, ``forward_head(f) -> logits``, ``head``.

Adding a model: a file with the ``nn.Module`` and a frozen :class:`ModelOptions` subclass naming it and building it,
plus one line in :data:`MODELS`.
"""

from torch import nn

from aelf.core.models.cnnb import CNNb, CNNbOptions
from aelf.core.models.normalize import InputNormalize
from aelf.core.models.options import CustomModelOptions, ModelOptions
from aelf.core.models.preact_resnet import PreActOptions, PreActResNet18
from aelf.core.models.split import LinearHeadSplit, as_split_model, feature_parameters, head_parameters
from aelf.core.models.split_bn import SplitBatchNorm, natural_inputs, split_batchnorm, split_state
from aelf.core.models.wong_mnist import WongMNIST, WongMNISTOptions
from aelf.core.models.wrn import WideResNet, WRNOptions

MODELS: dict[str, type[ModelOptions]] = {
    options.name: options for options in (CNNbOptions, WRNOptions, PreActOptions, WongMNISTOptions)
}
CUSTOM = CustomModelOptions.name  # model.name of a run that trained a user's own nn.Module (see aelf.train)


def build_model(options: ModelOptions, in_channels: int, num_classes: int, mean=None, std=None) -> nn.Module:
    """The model ``options`` describe (an entry of :data:`MODELS`), for the given data shape."""
    return options.build(in_channels, num_classes, mean, std)


__all__ = [
    "CUSTOM",
    "CNNb",
    "CNNbOptions",
    "CustomModelOptions",
    "InputNormalize",
    "LinearHeadSplit",
    "MODELS",
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
    "natural_inputs",
    "split_batchnorm",
    "split_state",
]
