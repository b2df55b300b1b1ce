"""The attention figure: for each model (a row) and each image (a block of columns) every map of
:mod:`aelf.workflows.attention.maps`, as PNG files drawn on matplotlib's Agg canvas (no display needed).

Colours (Fig. 2): the footnote-3 normalised gradient on a black background shows positive values in red and negative
ones in green, the colour depth giving the magnitude; on a white background the marks are reversed (green = positive,
red = negative), the colour again fading to the background as the magnitude goes to 0. Gradient signs (Fig. 4 and 6)
use the black-background colours at full intensity, black where |G| is at most the threshold. Grad-CAM is a jet
heat map over the grey input, SmoothGrad a "hot" map (black = 0), Integrated Gradients red/green on black like the
gradient; each of these is scaled by its image's own maximum (magnitude).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aelf.core.errors import ConfigError
from aelf.core.fileio import atomic_write
from aelf.workflows.attention.maps import (
    IG_STEPS,
    SMOOTHGRAD_SAMPLES,
    THRESHOLDS,
    AttentionMaps,
    attention_maps,
    check_images,
    open_runs,
)

FIGURE = "attention.png"
PANELS = {  # file suffix -> the columns of each image block
    "gradient": ("input", "black", "white"),
    "signs": ("input", "signs"),
    "gradcam": ("input", "grad_cam"),
    "smoothgrad": ("input", "smoothgrad"),
    "ig": ("input", "integrated_gradients"),
}
ALL_COLUMNS = ("input", "black", "white", "signs", "grad_cam", "smoothgrad", "integrated_gradients")
TITLES = {
    "input": "input",
    "black": "G on black",
    "white": "G on white",
    "grad_cam": "Grad-CAM",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated Grad.",
}
CELL_INCHES = 1.15


def on_black(values: np.ndarray) -> np.ndarray:
    """(H, W) in [-1, 1] -> (H, W, 3) RGB: red = positive, green = negative, black = 0 (Fig. 2)."""
    positive, negative = np.clip(values, 0, 1), np.clip(-values, 0, 1)
    return np.stack([positive, negative, np.zeros_like(values)], axis=-1)


def on_white(values: np.ndarray) -> np.ndarray:
    """(H, W) in [-1, 1] -> (H, W, 3) RGB: green = positive, red = negative, white = 0 (Fig. 2's reverse marks)."""
    positive, negative = np.clip(values, 0, 1), np.clip(-values, 0, 1)
    return np.stack([1 - positive, 1 - negative, 1 - positive - negative], axis=-1)


def scaled(values: np.ndarray) -> np.ndarray:
    """``values`` divided by their largest magnitude (unchanged when all zero)."""
    peak = np.abs(values).max()
    return values / peak if peak > 0 else values


def grey(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3): RGB images as they are, one-channel images as grey."""
    return np.repeat(image, 3, axis=0).transpose(1, 2, 0) if image.shape[0] == 1 else image[:3].transpose(1, 2, 0)


def colormap(name: str, values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) through a matplotlib colormap."""
    import matplotlib

    return matplotlib.colormaps[name](values)[..., :3]


def cell(maps: dict, index: int, column: str, threshold_index: int = 0) -> np.ndarray:
    """The RGB picture (H, W, 3) in [0, 1] of one column for image ``index``; ``maps``: numpy arrays of a
    :class:`AttentionMaps`."""
    image = grey(maps["images"][index])
    if column == "input":
        return image
    if column == "black":
        return on_black(maps["gradient"][index])
    if column == "white":
        return on_white(maps["gradient"][index])
    if column == "signs":
        return on_black(maps["signs"][index, threshold_index].astype(np.float64))
    if column == "grad_cam":
        return 0.5 * image.mean(-1, keepdims=True) + 0.5 * colormap("jet", scaled(maps["grad_cam"][index]))
    if column == "smoothgrad":
        return colormap("hot", scaled(maps["smoothgrad"][index]))
    if column == "integrated_gradients":
        return on_black(scaled(maps["integrated_gradients"][index]))
    raise ConfigError(f"unknown attention column {column!r}")


def expand(columns: Sequence[str], thresholds: Sequence[float], sign_scale: str) -> list[tuple[str, int, str]]:
    """Columns of one image block as (column, threshold index, title); ``signs`` becomes one column per threshold."""
    expanded = []
    for column in columns:
        if column == "signs":
            prefix = "|G|" if sign_scale == "normalized" else "raw |G|"
            expanded += [("signs", i, f"sign, {prefix} > {t:g}") for i, t in enumerate(thresholds)]
        else:
            expanded.append((column, 0, TITLES[column]))
    return expanded


def draw(
    rows: dict[str, dict],
    columns: Sequence[str],
    image_names: Sequence[str],
    thresholds,
    sign_scale: str,
    path: Path,
    title: str,
) -> None:
    """One PNG: a row per model, a block of ``columns`` per image, written atomically to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    block = expand(columns, thresholds, sign_scale)
    n_rows, n_cols = len(rows), len(block) * len(image_names)
    figure = Figure(figsize=(n_cols * CELL_INCHES + 0.8, n_rows * CELL_INCHES + 1.3), layout="constrained")
    FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no display, no global backend change
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for row, (label, maps) in enumerate(rows.items()):
        for image_index, name in enumerate(image_names):
            for offset, (column, threshold_index, column_title) in enumerate(block):
                ax = axes[row, image_index * len(block) + offset]
                ax.imshow(np.clip(cell(maps, image_index, column, threshold_index), 0, 1), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{name if offset == 0 else ''}\n{column_title}", fontsize=7)
                if image_index == 0 and offset == 0:
                    ax.set_ylabel(label, fontsize=9)
    figure.suptitle(textwrap.fill(title, max(40, int(n_cols * CELL_INCHES * 13))), fontsize=9)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def as_numpy(maps: AttentionMaps) -> dict:
    return {
        "images": maps.images.detach().float().cpu().numpy(),
        "gradient": maps.gradient.detach().float().cpu().numpy(),
        "signs": maps.signs.cpu().numpy(),
        "grad_cam": maps.grad_cam.float().cpu().numpy(),
        "smoothgrad": maps.smoothgrad.float().cpu().numpy(),
        "integrated_gradients": maps.integrated_gradients.float().cpu().numpy(),
    }


def attention_figure(
    models: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    path: str | Path,
    thresholds: Sequence[float] = THRESHOLDS,
    sign_scale: str = "normalized",
    image_names: Sequence[str] | None = None,
    panels: bool = True,
    layer: str | nn.Module | None = None,
    smoothgrad_samples: int = SMOOTHGRAD_SAMPLES,
    ig_steps: int = IG_STEPS,
) -> list[Path]:
    """Write the attention figure of ``models`` ({row label: model}) on images x: (N, C, H, W) in [0, 1], y: (N,).

    ``path``: the PNG with every column; with ``panels``, also one PNG per kind of map next to it, named
    ``<stem>-gradient.png`` (Fig. 2), ``-signs.png`` (Fig. 4), ``-gradcam.png``, ``-smoothgrad.png``, ``-ig.png``.
    ``image_names``: column headings (default ``image i, y=label``). Returns the paths written.
    """
    check_images(x, y)
    if not models:
        raise ConfigError("give at least one model")
    path = Path(path)
    labels = [int(v) for v in y.cpu()]
    names = list(image_names) if image_names is not None else [f"image {i}, y={c}" for i, c in enumerate(labels)]
    if len(names) != len(x):
        raise ConfigError(f"{len(names)} image names for {len(x)} images")
    rows = {}
    for label, model in models.items():
        maps = attention_maps(model, x, y, thresholds, sign_scale, layer, smoothgrad_samples, ig_steps)
        rows[label] = as_numpy(maps)
        thresholds = maps.thresholds
    gradient_legend = "normalised dCE/dx (footnote 3): on black red = +, green = -; on white green = +, red = -"
    signs_legend = (
        f"sign of dCE/dx where the {'normalised' if sign_scale == 'normalized' else 'raw'} |G| > "
        "threshold: red = +, green = -"
    )
    legends = {
        "gradient": gradient_legend,
        "signs": signs_legend,
        "gradcam": "Grad-CAM of the true class at the last conv layer (jet, over the input)",
        "smoothgrad": "SmoothGrad: mean |d logit_y / dx| over noisy copies (hot)",
        "ig": "Integrated Gradients of logit_y from the black image: red = +, green = -",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(rows, ALL_COLUMNS, names, thresholds, sign_scale, path, f"{gradient_legend}; {signs_legend}")
    written = [path]
    if panels:
        for suffix, columns in PANELS.items():
            panel = path.with_name(f"{path.stem}-{suffix}.png")
            draw(rows, columns, names, thresholds, sign_scale, panel, legends[suffix])
            written.append(panel)
    return written


# ----------------------------------------------------------------------------------------------------------------------
# Run folders


def select_images(
    y: torch.Tensor,
    images: Sequence[int] | None = None,
    classes: Sequence[int] | None = None,
    per_class: int = 1,
) -> list[int]:
    """Test-set indices: ``images`` as given, or the first ``per_class`` images of each class in ``classes``."""
    if (images is None) == (classes is None):
        raise ConfigError("choose the images with either --images or --classes")
    n = len(y)
    if images is not None:
        if not images:
            raise ConfigError("--images needs at least one index")
        bad = [i for i in images if not 0 <= i < n]
        if bad:
            raise ConfigError(f"image index {bad[0]} is out of range: the test set has {n} images (0 to {n - 1})")
        return list(images)
    if per_class < 1:
        raise ConfigError(f"--per-class must be at least 1 (got {per_class})")
    if not classes:
        raise ConfigError("--classes needs at least one class")
    chosen = []
    for label in classes:
        found = (y == label).nonzero().flatten()[:per_class].tolist()
        if not found:
            raise ConfigError(f"class {label} has no images in the test set")
        chosen += found
    return chosen


def figure_for_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    images: Sequence[int] | None = None,
    classes: Sequence[int] | None = None,
    per_class: int = 1,
    device: str = "auto",
    thresholds: Sequence[float] = THRESHOLDS,
    sign_scale: str = "normalized",
    weights: str = "last",
) -> list[Path]:
    """``out_dir/attention.png`` and its panels for finished runs (rows labelled by folder name) on test images of
    the first run chosen by :func:`select_images`. Every input is checked before anything is written."""

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    with open_runs(run_dirs, device, weights) as (models, x, y):
        chosen = select_images(y, images, classes, per_class)
        names = [f"#{i}, y={int(y[i])}" for i in chosen]
        index = torch.tensor(chosen, device=x.device)
        return attention_figure(models, x[index], y[index], out_dir / FIGURE, thresholds, sign_scale, image_names=names)
