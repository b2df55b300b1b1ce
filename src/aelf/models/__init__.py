"""Models with the split the paper needs: ``forward_features(x) -> f``, ``forward_head(f) -> logits``, ``head``."""

from torch import nn

from aelf.errors import ConfigError
from aelf.models.cnnb import CNNb
from aelf.models.normalize import InputNormalize
from aelf.models.preact_resnet import PreActResNet18
from aelf.models.split import LinearHeadSplit, as_split_model, feature_parameters, head_parameters
from aelf.models.wrn import WideResNet

MODELS = {"cnnb": CNNb, "wrn": WideResNet, "preact_resnet18": PreActResNet18}
CUSTOM = "custom"  # model.name of a run that trained a user's own nn.Module (see aelf.train)


def build_model(config, in_channels: int, num_classes: int, mean=None, std=None) -> nn.Module:
    """The model named by ``config`` (a :class:`aelf.config.ModelConfig`) for the given data shape."""
    if config.name == CUSTOM:
        raise ConfigError("this run trained a user's own model: pass an instance of it (model=...) to load it")
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r} (choose from: {', '.join(MODELS)})")
    architecture = {"width": config.width, "activation": config.activation}
    if config.name == "wrn":
        architecture.update(depth=config.depth, widen_factor=config.widen_factor, dropout=config.dropout)
    return MODELS[config.name](in_channels=in_channels, num_classes=num_classes, mean=mean, std=std, **architecture)


__all__ = [
    "CUSTOM",
    "CNNb",
    "InputNormalize",
    "LinearHeadSplit",
    "MODELS",
    "PreActResNet18",
    "WideResNet",
    "as_split_model",
    "build_model",
    "feature_parameters",
    "head_parameters",
]
