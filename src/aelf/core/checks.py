"""Cheap checks of what a user hands to the public API: images, labels and a model's logits.

Each failure is an :class:`InputError` (a ``ValueError``, and an :class:`~aelf.core.errors.AelfError`, so the CLI
prints it as one line) that names the argument and what is wrong: images must be floating-point (N, C, H, W)
tensors, finite and in [0, 1] (pixels, as everywhere in aelf); labels integer (N,) tensors of the same length, each
in 0..K-1; logits (N, K). The checks cost one pass of min/max over the tensors and one forward pass of one image
(to learn K, when the model has no linear ``head``), nothing per attack step.

Entry points that check a whole data set once (the trainer, :func:`aelf.core.accuracy.count_correct`, the evaluation
suites) run their per-batch attack calls inside :func:`checked_once`, so an attack called there does not check each
batch again (on a GPU every check waits for the device).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aelf.core.errors import AelfError
from aelf.core.modes import evaluating
from aelf.core.protocols import Classifier


class InputError(AelfError, ValueError):
    """Images, labels or a model output that break aelf's conventions (shape, dtype, range, finiteness)."""


_checked = contextvars.ContextVar("aelf_inputs_checked", default=False)


@contextmanager
def checked_once() -> Iterator[None]:
    """Inside the block, attacks trust their inputs: the caller has checked the whole data set."""
    token = _checked.set(True)
    try:
        yield
    finally:
        _checked.reset(token)


def check_images(x: object, name: str = "x") -> None:
    """x: a floating-point (N, C, H, W) tensor of finite pixels in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of images (N, C, H, W), not {type(x).__name__}")
    if x.ndim != 4:
        raise InputError(f"{name} must be images (N, C, H, W), 4 dimensions; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(
            f"{name} must hold floating-point pixels in [0, 1]; got dtype {x.dtype} (divide uint8 images by 255)"
        )
    if x.numel() == 0:  # no images: nothing to check (an attack may get an empty remainder)
        return
    with torch.no_grad():
        lowest, highest = torch.aminmax(x.detach())
        low, high = float(lowest), float(highest)
    if low != low or high != high or not torch.isfinite(x.detach()).all():
        raise InputError(f"{name} holds NaN or infinite pixels")
    if low < 0.0 or high > 1.0:
        raise InputError(
            f"{name} must hold pixels in [0, 1] (aelf normalises inside the model); got values in "
            f"[{low:.4g}, {high:.4g}]"
        )


def check_not_empty(x: object, name: str = "x") -> None:
    """At least one image: an accuracy or a report of no images means nothing (it used to be 0.0)."""
    if isinstance(x, torch.Tensor) and x.ndim >= 1 and len(x) == 0:
        raise InputError(f"{name} holds no images (shape {tuple(x.shape)}); give at least one")


def check_channels(model: Classifier, x: torch.Tensor, name: str = "x") -> None:
    """Images laid out (N, H, W, C), channels last, for a model whose first convolution takes C channels: one
    InputError saying how to permute them, instead of the convolution's own error."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or x.shape[1] == conv.in_channels or x.shape[3] != conv.in_channels:
        return
    raise InputError(
        f"{name} looks channels-last: shape {tuple(x.shape)} is (N, H, W, C) with the model's {conv.in_channels} "
        "channel(s) last; aelf takes (N, C, H, W) images: pass x.permute(0, 3, 1, 2)"
    )


def check_labels(y: object, n: int, num_classes: int | None = None, name: str = "y") -> None:
    """y: an integer (N,) tensor of n labels, each in 0..num_classes-1 when num_classes is known."""
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of class labels (N,), not {type(y).__name__}")
    if y.ndim != 1:
        raise InputError(f"{name} must be class labels (N,), 1 dimension; got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InputError(f"{name} must hold integer class labels; got dtype {y.dtype}")
    if len(y) != n:
        raise InputError(f"{name} has {len(y)} labels for {n} images")
    if n and int(y.min()) < 0:
        raise InputError(f"{name} holds a negative label ({int(y.min())}); labels are 0..K-1")
    if n and num_classes is not None and int(y.max()) >= num_classes:
        raise InputError(
            f"{name} holds label {int(y.max())}, but the model gives {num_classes} classes (0..{num_classes - 1})"
        )


def check_batch(x: torch.Tensor, y: object, num_classes: int | None = None) -> None:
    check_images(x)
    check_labels(y, len(x), num_classes)


def check_logits(logits: object, n: int, what: str = "the model") -> int:
    """The number of classes K of a model's output on n images, which must be finite (n, K) logits."""
    if not isinstance(logits, torch.Tensor):
        raise InputError(f"{what} must return a tensor of logits (N, K), not {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[0] != n:
        raise InputError(f"{what} must return logits (N, K) for N={n} images; got shape {tuple(logits.shape)}")
    if not logits.is_floating_point() or not torch.isfinite(logits).all():
        raise InputError(f"{what} returned non-finite or non-floating-point logits")
    return int(logits.shape[1])


def num_classes_of(model: Classifier, x: torch.Tensor) -> int:
    """K: the width of the model's linear ``head`` (every aelf model and split user model has one), else from one
    forward pass on x's first image (eval mode, no gradient)."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    with evaluating(model), torch.no_grad():
        return check_logits(model(x[:1]), 1)


def check_user_model(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """A user's model must map the dataset's images to (N, num_classes) finite logits."""
    with evaluating(model), torch.no_grad():
        try:
            out = model(x[:2])
        except (RuntimeError, ValueError) as err:
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            shape = " x ".join(str(int(n)) for n in x.shape[1:])
            raise InputError(f"the model cannot take the dataset's images of {shape} ({reason})") from None
        k = check_logits(out, len(x[:2]))
    if k != num_classes:
        raise InputError(f"the model gives {k} classes; the dataset has {num_classes}")


def check_model_inputs(model: Classifier, x: torch.Tensor, y: object, allow_empty: bool = False) -> None:
    """Images and labels for ``model``: the checks above, labels against the model's number of classes; no images
    at all only with ``allow_empty`` (the remainder a suite's attack gets once every image is fooled)."""
    check_images(x)
    if not allow_empty:
        check_not_empty(x)
    check_channels(model, x)
    check_labels(y, len(x))
    if len(x):
        check_labels(y, len(x), num_classes_of(model, x))


def check_attack_inputs(model: Classifier, x: torch.Tensor, y: object) -> None:
    """What an attack's ``attack(model, x, y)`` checks, unless called inside :func:`checked_once`."""
    if _checked.get():
        return
    if y is None:  # TRADES' KL attack needs no labels
        check_images(x)
    else:
        check_model_inputs(model, x, y, allow_empty=True)
