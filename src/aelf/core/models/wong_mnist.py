"""Wong et al. 2020's MNIST network ("Fast is better than free", locuslab/fast_adversarial, ``MNIST/mnist_net.py``),
the network of the single-step anchor (``aelf reproduce fast-at-anchor``).

    Conv(1, 16, 4, stride 2, pad 1) - ReLU - Conv(16, 32, 4, stride 2, pad 1) - ReLU - Flatten
    - Linear(32 * 7 * 7, 100) - ReLU - Linear(100, 10)

for 28 x 28 digits (``data.image_size: 28``: aelf's MNIST datasets are 32 x 32 otherwise, Appendix C). No BatchNorm
and no input normalisation: the authors feed the pixels in [0, 1] as they are (``transforms.ToTensor()``), so the
dataset's mean and std are not used. PyTorch's default initialisation, as theirs.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from aelf.core.models.cnnb import activation_layer
from aelf.core.models.options import ModelOptions

IMAGE_SIZE = 28  # the network's input size: two stride-2 convolutions take 28 x 28 to the 7 x 7 of its linear layer
CHANNELS = (16, 32)
HIDDEN = 100


class WongMNIST(nn.Module):
    """Takes x: (N, in_channels, 28, 28) pixels in [0, 1]. ``forward_features(x)`` gives f: (N, 100 * width), the
    output of the hidden layer after its activation; ``forward_head(f)`` the logits (N, num_classes) through the last
    linear layer (``self.head``). ``width`` scales the channel counts and the hidden width (1.0 is the authors')."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0, activation: str = "relu"):
        super().__init__()
        c1, c2 = (max(1, round(c * width)) for c in CHANNELS)
        hidden = max(1, round(HIDDEN * width))
        side = IMAGE_SIZE // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=4, stride=2, padding=1),
            activation_layer(activation),
            nn.Conv2d(c1, c2, kernel_size=4, stride=2, padding=1),
            activation_layer(activation),
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            activation_layer(activation),
        )
        self.num_features = hidden
        self.head = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass(frozen=True)
class WongMNISTOptions(ModelOptions):
    """``model.name: wong_mnist``: Wong et al. 2020's MNIST network (``width``; ``activation`` ReLU as theirs), for
    28 x 28 images (``--set data.image_size=28``)."""

    name: ClassVar[str] = "wong_mnist"
    label: ClassVar[str] = "Wong MNIST"
    description: ClassVar[str] = "the MNIST network of fast adversarial training: two convolutions, two linear layers"
    reference: ClassVar[str] = "Wong, Rice & Kolter 2020, locuslab/fast_adversarial MNIST/mnist_net.py"
    input_size: ClassVar[int | None] = IMAGE_SIZE  # the one input size it takes
    activation: str = "relu"

    def build(
        self,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        return WongMNIST(in_channels, num_classes, self.width, self.activation)
