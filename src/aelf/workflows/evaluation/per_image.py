"""Per-image outcomes in results files: which test images a model got right, as compact text.

Intervals over test images and paired comparisons between models (:mod:`aelf.workflows.evaluation.stats`) need each
image's outcome, not only the accuracy. A results file stores them as hexadecimal text of the packed bits (one bit per
image, image 0 in the highest bit of the first byte), with the number of images: 1,000 images take 250 characters.
"""

from __future__ import annotations

import numpy as np
import torch

from aelf.core.errors import CheckpointError


def encode_bits(correct: torch.Tensor | np.ndarray) -> dict:
    """``{"n": N, "bits": hex}`` for a boolean vector over N images."""
    values = correct.detach().cpu().numpy() if isinstance(correct, torch.Tensor) else np.asarray(correct)
    values = values.astype(bool).reshape(-1)
    return {"n": int(values.size), "bits": np.packbits(values).tobytes().hex()}


def decode_bits(entry: dict) -> np.ndarray:
    """The boolean vector of :func:`encode_bits`; a damaged entry is a :class:`CheckpointError`."""
    try:
        n = int(entry["n"])
        packed = np.frombuffer(bytes.fromhex(entry["bits"]), dtype=np.uint8)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"per-image outcomes: not an encoded bit vector ({err})") from None
    if n < 0 or len(packed) != (n + 7) // 8:
        raise CheckpointError(f"per-image outcomes: {len(packed)} bytes cannot hold exactly {n} images")
    return np.unpackbits(packed)[:n].astype(bool)
