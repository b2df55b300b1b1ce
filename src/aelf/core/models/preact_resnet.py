"""PreAct ResNet-18 (He et al., 2016, "Identity mappings"), the adversarial-training baseline of Rice et al. (2020)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from aelf.core.models.cnnb import activation_layer
from aelf.core.models.normalize import InputNormalize
from aelf.core.models.options import ModelOptions

STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = (2, 2, 2, 2)  # ResNet-18: 8 basic blocks of two convs, plus the stem conv and the head


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-act-conv3x3(stride)-BN-act-conv3x3, plus the shortcut.

    When the shape changes the shortcut is a 1x1 conv of the *pre-activated* input, as in the code of Rice et al.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, activation: str):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = activation_layer(activation)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = activation_layer(activation)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        same_shape = c_in == c_out and stride == 1
        self.shortcut = None if same_shape else nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32 x 32 inputs. Takes x: (N, in_channels, 32, 32) pixels in [0, 1].

    ``forward_features(x)`` gives f: (N, 512 * width) after the final BN-act and global average pooling (4 x 4 at
    32 x 32 inputs), ``forward_head(f)`` the logits (N, num_classes) through the linear ``self.head``. ``width``
    scales every channel count (1.0 is the standard network). The LeakyReLU slope is 0.1 as in CNNb. PyTorch's
    default initialisation, as in the code of Rice et al.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        width: float = 1.0,
        activation: str = "relu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        self.normalize = InputNormalize(mean, std) if mean is not None and std is not None else nn.Identity()
        c_stem = max(1, round(STAGE_CHANNELS[0] * width))
        self.stem = nn.Conv2d(in_channels, c_stem, kernel_size=3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = c_stem
        for channels, stride, n_blocks in zip(STAGE_CHANNELS, STAGE_STRIDES, BLOCKS_PER_STAGE, strict=True):
            c_out = max(1, round(channels * width))
            for index in range(n_blocks):
                blocks.append(PreActBlock(c_in, c_out, stride if index == 0 else 1, activation))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        # The blocks are pre-activation, so the last block's output still needs its BN and activation.
        self.final = nn.Sequential(nn.BatchNorm2d(c_in), activation_layer(activation))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = c_in
        self.head = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.final(self.blocks(self.stem(self.normalize(x)))))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass(frozen=True)
class PreActOptions(ModelOptions):
    """``model.name: preact_resnet18``: PreAct ResNet-18 (``width``, ``activation``)."""

    name: ClassVar[str] = "preact_resnet18"
    label: ClassVar[str] = "PreAct ResNet-18"
    description: ClassVar[str] = "pre-activation ResNet-18, the adversarial-training baseline of Rice et al. 2020"
    reference: ClassVar[str] = 'He et al. 2016, "Identity mappings"'
    min_input_size: ClassVar[int] = 8  # three stride-2 stages, then global average pooling

    def build(
        self,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        return PreActResNet18(
            in_channels=in_channels,
            num_classes=num_classes,
            width=self.width,
            activation=self.activation,
            mean=mean,
            std=std,
        )
