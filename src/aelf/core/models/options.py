"""What every model's options share: ``width`` and ``activation``, checked once.

Each model file declares a frozen dataclass of its own options (a subclass of :class:`ModelOptions`) with the model's
registry ``name`` and a ``build`` method; ``model.name`` in a run's configuration picks it, and the rest of the
``model`` section fills its fields, as ``method.name`` picks a method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from aelf.core.errors import ConfigError

ACTIVATIONS = ("leaky_relu", "relu")


@dataclass(frozen=True)
class ModelOptions:
    """``width`` scales every layer's channel count (1.0 is the standard network); ``activation`` is ``leaky_relu``
    (slope 0.1) or ``relu``.

    Registry metadata (class-level): ``name`` (``model.name``), ``label``, ``description`` (one line), ``reference``;
    ``input_size``: the one square image size the network takes (None: any size of at least ``min_input_size``).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    input_size: ClassVar[int | None] = None
    min_input_size: ClassVar[int] = 1
    width: float = 1.0
    activation: str = "leaky_relu"

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ConfigError(f"model.width must be positive (got {self.width})")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be leaky_relu or relu (got {self.activation!r})")

    def build(
        self,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class CustomModelOptions(ModelOptions):
    """``model.name: custom``: a run of a user's own ``nn.Module`` (``aelf.train(config, out, model=...)``), loaded
    back by handing the same architecture to ``aelf.load_model(run, model=...)``."""

    name: ClassVar[str] = "custom"
    label: ClassVar[str] = "custom"
    description: ClassVar[str] = "a user's own nn.Module"
    reference: ClassVar[str] = "aelf.train(config, out, model=...)"

    def build(
        self,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        raise ConfigError("this run trained a user's own model: pass an instance of it (model=...) to load it")
