"""Training-time augmentation (Appendix C): random 32 x 32 crops of the zero-padded image and horizontal flips on CIFAR;
none on the MNIST family.

Batched on whatever device the images are on, and reproducible: every random number comes from the ``generator``
argument, so a trainer that seeds a generator from (seed, epoch, step) gets the same augmentation after a resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aelf.core.errors import ConfigError

CROP_PADDING = 2  # Appendix C: crops of the image padded with 2 zero pixels on every side


def random_crop_flip(
    x: torch.Tensor, padding: int = CROP_PADDING, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each image cropped at a random offset from its zero-padded copy, then flipped left-right with probability 1/2.

    x: (N, C, H, W) pixels in [0, 1] on any device; returns a new tensor of the same shape, dtype and device, still
    in [0, 1]. Offsets are uniform in 0..2*padding on each axis (offset ``padding`` on both axes is the image itself).
    Random numbers are drawn on the generator's device (CPU when ``generator`` is None, from torch's default
    generator), in this order: row offsets (N,), column offsets (N,), flip flags (N,); the result for a given
    generator state is therefore the same whatever device x is on.
    """
    if x.dim() != 4:
        raise ConfigError(f"random_crop_flip expects images (N, C, H, W), got shape {tuple(x.shape)}")
    if padding < 0:
        raise ConfigError(f"crop padding must be >= 0 (got {padding})")
    n, _, height, width = x.shape
    draw_device = generator.device if generator is not None else torch.device("cpu")
    row_offsets = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=draw_device).to(x.device)
    col_offsets = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=draw_device).to(x.device)
    flips = torch.randint(0, 2, (n,), generator=generator, device=draw_device).to(x.device, torch.bool)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = row_offsets[:, None] + torch.arange(height, device=x.device)  # (N, H) rows of the padded image
    cols = col_offsets[:, None] + torch.arange(width, device=x.device)  # (N, W)
    # A flip reads the same crop's columns right to left.
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    # One gather for the whole batch: (N,1,1,1), (1,C,1,1), (N,1,H,1), (N,1,1,W) broadcast to (N, C, H, W).
    batch_index = torch.arange(n, device=x.device)[:, None, None, None]
    channel_index = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
