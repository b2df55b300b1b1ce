"""CNNb, the paper's basic CNN (Table 1)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from aelf.core.models.normalize import InputNormalize
from aelf.core.models.options import ModelOptions

CHANNELS = (64, 64, 128, 256, 512)
POOL_AFTER = {1: 2, 2: 2, 3: 2, 4: 4}  # layer index (0-based) -> average-pool size (Table 1: layers 2-4 2x2, 5th 4x4)


def activation_layer(name: str) -> nn.Module:
    return nn.LeakyReLU(0.1) if name == "leaky_relu" else nn.ReLU()


class CNNb(nn.Module):
    """Five 3x3 conv layers (64-64-128-256-512) with BatchNorm and LeakyReLU, average pooling, one linear head.

    Takes x: (N, in_channels, 32, 32) pixels in [0, 1]. ``forward_features(x)`` gives f = M_c(x): (N, 512 * width),
    ``forward_head(f)`` the logits (N, num_classes) through the linear label mapping W (``self.head``).
    ``width`` scales every channel count (1.0 is the paper's network). The LeakyReLU slope is 0.1 (not stated in
    the paper).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: float = 1.0,
        activation: str = "leaky_relu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        if mean is not None and std is not None:
            layers.append(InputNormalize(mean, std))
        c_in = in_channels
        for index, channels in enumerate(CHANNELS):
            c_out = max(1, round(channels * width))
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                activation_layer(activation),
            ]
            if index in POOL_AFTER:
                layers.append(nn.AvgPool2d(POOL_AFTER[index]))
            c_in = c_out
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.head = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass(frozen=True)
class CNNbOptions(ModelOptions):
    """``model.name: cnnb``: the paper's CNNb (``width``, ``activation``)."""

    name: ClassVar[str] = "cnnb"
    label: ClassVar[str] = "CNNb"
    description: ClassVar[str] = (
        "the paper's basic CNN: five 3x3 convolutions, BatchNorm, average pooling, a linear head"
    )
    reference: ClassVar[str] = "Table 1 of the paper"
    input_size: ClassVar[int | None] = 32  # the pooling (2, 2, 2, 4) reduces 32 x 32 to 1 x 1

    def build(
        self,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        return CNNb(in_channels, num_classes, self.width, self.activation, mean, std)
