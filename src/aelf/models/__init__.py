"""Models with the split the paper needs: ``forward_features(x) -> f``, ``forward_head(f) -> logits``, ``head``."""

from torch import nn

from aelf.errors import ConfigError
from aelf.models.cnnb import CNNb
from aelf.models.normalize import InputNormalize
from aelf.models.split import LinearHeadSplit, as_split_model, feature_parameters, head_parameters

MODELS = {"cnnb": CNNb}
CUSTOM = "custom"  # model.name of a run that trained a user's own nn.Module (see aelf.train)


def build_model(config, in_channels: int, num_classes: int, mean=None, std=None) -> nn.Module:
    """The model named by ``config`` (a :class:`aelf.config.ModelConfig`) for the given data shape."""
    if config.name == CUSTOM:
        raise ConfigError("this run trained a user's own model: pass an instance of it (model=...) to load it")
    if config.name not in MODELS:
        raise ConfigError(f"unknown model {config.name!r} (choose from: {', '.join(MODELS)})")
    return MODELS[config.name](
        in_channels=in_channels,
        num_classes=num_classes,
        width=config.width,
        activation=config.activation,
        mean=mean,
        std=std,
    )


__all__ = [
    "CUSTOM",
    "CNNb",
    "InputNormalize",
    "LinearHeadSplit",
    "MODELS",
    "as_split_model",
    "build_model",
    "feature_parameters",
    "head_parameters",
]
