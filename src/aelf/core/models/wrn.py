"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis, 2016), the CIFAR variant used by Madry et al. and TRADES.

The paper's CIFAR networks (Appendix C) are WRN-40 with dropout 0.2 on CIFAR-10 and WRN-28 on CIFAR-100
(``depth=40, dropout=0.2`` and ``depth=28``). The paper does not state the widen factor k; we use k = 10
(``widen_factor=10``) because it is the width of the WRNs in the adversarial-training work the paper builds on and
compares with (WRN-34-10 of Madry et al. 2018 and TRADES, the 10-wide WRNs of Yang et al. 2020) and of Zagoruyko &
Komodakis's best CIFAR results, so results stay comparable with theirs.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from aelf.core.errors import ConfigError
from aelf.core.models.cnnb import activation_layer
from aelf.core.models.normalize import InputNormalize
from aelf.core.models.options import ModelOptions

STAGE_CHANNELS = (16, 32, 64)  # times widen_factor; the stem has 16 channels whatever k is
STAGE_STRIDES = (1, 2, 2)


def wrn_blocks_per_stage(depth: int) -> int:
    """n of a WRN of depth 6n + 4 (n basic blocks of two 3x3 convs per stage, three stages, stem, head, shortcuts)."""
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), got {depth}")
    return (depth - 4) // 6


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-act-conv3x3(stride)-BN-act-dropout-conv3x3, plus the shortcut.

    When the shape changes the shortcut is a 1x1 conv of the *pre-activated* input, as in the TRADES/Madry code.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float, activation: str):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = activation_layer(activation)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = activation_layer(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        same_shape = c_in == c_out and stride == 1
        self.shortcut = None if same_shape else nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv2(self.dropout(self.act2(self.bn2(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-k. Takes x: (N, in_channels, 32, 32) pixels in [0, 1].

    ``forward_features(x)`` gives f: (N, 64 * k * width) after the final BN-act and global average pooling,
    ``forward_head(f)`` the logits (N, num_classes) through the linear ``self.head``. ``width`` scales every channel
    count on top of k (1.0 is the standard network; small values build tiny test networks). The LeakyReLU slope is
    0.1 as in CNNb. Weights are initialised as in the TRADES code (He normal, fan-out, for convolutions).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
        activation: str = "relu",
        width: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        n_blocks = wrn_blocks_per_stage(depth)
        if widen_factor < 1:
            raise ConfigError(f"WRN widen_factor must be at least 1, got {widen_factor}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"WRN dropout must be in [0, 1), got {dropout}")
        self.normalize = InputNormalize(mean, std) if mean is not None and std is not None else nn.Identity()
        c_stem = max(1, round(STAGE_CHANNELS[0] * width))
        self.stem = nn.Conv2d(in_channels, c_stem, kernel_size=3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = c_stem
        for channels, stride in zip(STAGE_CHANNELS, STAGE_STRIDES, strict=True):
            c_out = max(1, round(channels * widen_factor * width))
            for index in range(n_blocks):
                blocks.append(WideBasicBlock(c_in, c_out, stride if index == 0 else 1, dropout, activation))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        # The blocks are pre-activation, so the last block's output still needs its BN and activation.
        self.final = nn.Sequential(nn.BatchNorm2d(c_in), activation_layer(activation))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = c_in
        self.head = nn.Linear(c_in, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.final(self.blocks(self.stem(self.normalize(x)))))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass(frozen=True)
class WRNOptions(ModelOptions):
    """``model.name: wrn``: a Wide ResNet: ``depth`` (6n+4), ``widen_factor`` (k) and ``dropout`` (between the two
    convolutions of each block), besides ``width`` and ``activation``. The paper's CIFAR networks are WRN-40 with
    dropout 0.2 on CIFAR-10 and WRN-28 on CIFAR-100, k = 10."""

    name: ClassVar[str] = "wrn"
    label: ClassVar[str] = "WRN"
    description: ClassVar[str] = "Wide ResNet WRN-depth-k, the CIFAR variant of Madry et al. and TRADES"
    reference: ClassVar[str] = "Zagoruyko & Komodakis 2016; Appendix C of the paper"
    min_input_size: ClassVar[int] = 8  # two stride-2 stages, then global average pooling
    depth: int = 28
    widen_factor: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ConfigError(f"model.depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...; got {self.depth})")
        if self.widen_factor < 1:
            raise ConfigError(f"model.widen_factor must be at least 1 (got {self.widen_factor})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1) (got {self.dropout})")

    def build(
        self,
        in_channels: int,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        return WideResNet(
            in_channels=in_channels,
            num_classes=num_classes,
            depth=self.depth,
            widen_factor=self.widen_factor,
            dropout=self.dropout,
            activation=self.activation,
            width=self.width,
            mean=mean,
            std=std,
        )
