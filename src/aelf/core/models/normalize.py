"""Input normalisation as a module inside the model, so every model takes pixels in [0, 1]."""

from collections.abc import Sequence

import torch
from torch import nn


class InputNormalize(nn.Module):
    """(x - mean) / std per channel. x: (N, C, H, W) in [0, 1]. The statistics are buffers, not parameters."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
