"""The shifted test sets N(L), N(R), N(U), N(D) of Fig. 3: images moved by k pixels, zero fill."""

from __future__ import annotations

import torch

# Offsets (rows, cols) that move the image content in each direction.
DIRECTIONS = {"L": (0, -1), "R": (0, 1), "U": (-1, 0), "D": (1, 0)}


def shift_images(x: torch.Tensor, direction: str, k: int) -> torch.Tensor:
    """Move the content of x: (N, C, H, W) by k pixels towards ``direction`` in L, R, U, D, filling with zeros.

    The pixel at (r, c) lands at (r + dr * k, c + dc * k); pixels pushed over the border are dropped.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    d_row, d_col = DIRECTIONS[direction]
    out = torch.zeros_like(x)
    height, width = x.shape[-2:]
    if k >= (height if d_row else width):
        return out
    rows_src = slice(max(0, -d_row * k), height - max(0, d_row * k))
    rows_dst = slice(max(0, d_row * k), height - max(0, -d_row * k))
    cols_src = slice(max(0, -d_col * k), width - max(0, d_col * k))
    cols_dst = slice(max(0, d_col * k), width - max(0, -d_col * k))
    out[..., rows_dst, cols_dst] = x[..., rows_src, cols_src]
    return out


def shifted_test_sets(x: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """{"N": x, "N(L)": ..., "N(R)": ..., "N(U)": ..., "N(D)": ...}."""
    return {"N": x, **{f"N({d})": shift_images(x, d, k) for d in DIRECTIONS}}
