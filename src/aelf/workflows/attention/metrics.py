"""Attention breadth: how many pixels the loss gradient of a model spreads over (Section 2.2: S > A).

Per image, M = |G| is the absolute value of the per-pixel loss gradient (:func:`aelf.workflows.attention.maps.pixel_map`
of d CE(model(x), y) / dx: channels summed first), a map over the H x W pixels. Every metric below is invariant to
the scale of M, so the raw and the footnote-3 normalised gradient give the same values.

- ``mass_50``, ``mass_90``: the fraction of pixels carrying p = 50% and 90% of the mass: sort M in descending
  order, take the smallest k with (sum of the k largest) >= p * sum(M); the metric is k / (H W), in (0, 1].
  A uniform map gives p (up to the rounding of p H W up to whole pixels), a single-pixel map 1 / (H W).
- ``entropy``: the Shannon entropy in nats of q = M / sum(M) as a distribution over pixels, -sum q log q (0 log 0 =
  0); between 0 (one pixel) and log(H W) (uniform).
- ``entropy_normalized``: entropy / log(H W), in [0, 1], 1 = uniform.
- ``foreground_share``: sum of M over foreground pixels / sum(M), where a pixel is foreground when its intensity
  (the mean over channels, in [0, 1]) is above ``FOREGROUND_THRESHOLD`` = 0.5: for MNIST-family digits, the
  stroke. 0 for an image without foreground pixels.

Images whose gradient is exactly zero (a saturated softmax) have no distribution: they are left out of the means
and counted as ``n_zero_maps``. Means and standard deviations (population, ddof 0) are over the remaining images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from aelf.core import distributed
from aelf.core.errors import ConfigError
from aelf.core.fileio import write_json, write_text
from aelf.core.run import run_labels
from aelf.core.run_folder import BEST
from aelf.workflows.attention.maps import BATCH_SIZE, check_images, loss_gradient, open_runs, pixel_map

FOREGROUND_THRESHOLD = 0.5  # pixel intensity (mean over channels, [0, 1]) above which a pixel is foreground
MASS_LEVELS = (0.5, 0.9)
METRICS = ("mass_50", "mass_90", "entropy", "entropy_normalized", "foreground_share")
MARKDOWN_FILE, JSON_FILE = "attention-metrics.md", "attention-metrics.json"


def metrics_files(weights: str = "last") -> tuple[str, str]:
    """The Markdown and JSON files of the metrics of a run's ``last`` weights, or of its ``best`` weights
    (``attention-metrics-best.*``, kept beside the others as the best weights' evaluation is)."""
    if weights != "best":
        return MARKDOWN_FILE, JSON_FILE
    markdown, json_file = Path(MARKDOWN_FILE), Path(JSON_FILE)
    return f"{markdown.stem}-best{markdown.suffix}", f"{json_file.stem}-best{json_file.suffix}"


COLUMNS = {
    "mass_50": "pixel fraction for 50% of mass",
    "mass_90": "pixel fraction for 90% of mass",
    "entropy": "entropy (nats)",
    "entropy_normalized": "entropy / log(HW)",
    "foreground_share": "mass share on foreground",
}  # no "|" in any label: they are Markdown table cells
DEFINITIONS = {
    "map": "M = |sum over channels of dCE(model(x), y)/dx|, one value per pixel",
    "mass_50": "smallest fraction k/(HW) of pixels whose k largest M hold >= 50% of sum(M)",
    "mass_90": "smallest fraction k/(HW) of pixels whose k largest M hold >= 90% of sum(M)",
    "entropy": "-sum q log q in nats, q = M / sum(M) over the HW pixels",
    "entropy_normalized": "entropy / log(HW): 1 = uniform, 0 = one pixel",
    "foreground_share": "sum of M over pixels with mean intensity > foreground_threshold, / sum(M)",
    "std": "population standard deviation over images (ddof 0)",
    "zero_maps": "images whose gradient is exactly 0 are left out of means and std",
}
_ROUNDING = 1e-9  # cumulative mass within this of p counts as reaching p (float sums of equal values)


def _flat(magnitude: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, H W) float64 (sums over a thousand pixels without float32 drift)."""
    if magnitude.dim() != 3:
        raise ConfigError(f"maps must be (N, H, W) (got shape {tuple(magnitude.shape)})")
    if magnitude.shape[1] * magnitude.shape[2] < 2:
        raise ConfigError("maps need at least 2 pixels")
    if (magnitude < 0).any():
        raise ConfigError("maps must be magnitudes (>= 0): pass |G|")
    return magnitude.flatten(1).double()


def mass_fraction(magnitude: torch.Tensor, level: float) -> torch.Tensor:
    """(N, H, W) magnitudes -> (N,): the smallest fraction of pixels holding ``level`` of each map's mass."""
    if not 0 < level <= 1:
        raise ConfigError(f"mass level must be in (0, 1] (got {level})")
    flat = _flat(magnitude)
    descending = flat.sort(dim=1, descending=True).values
    cumulative = descending.cumsum(1) / descending.sum(1, keepdim=True)
    pixels_needed = (cumulative < level - _ROUNDING).sum(1) + 1
    return pixels_needed.clamp_max(flat.shape[1]).double() / flat.shape[1]


def entropy(magnitude: torch.Tensor) -> torch.Tensor:
    """(N, H, W) magnitudes -> (N,): entropy in nats of M / sum(M) over the pixels."""
    flat = _flat(magnitude)
    q = flat / flat.sum(1, keepdim=True)
    return -torch.xlogy(q, q).sum(1)


def normalized_entropy(magnitude: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N,): entropy / log(H W), in [0, 1]; 1 = uniform."""
    return entropy(magnitude) / math.log(magnitude.shape[1] * magnitude.shape[2])


def foreground_mask(images: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, H, W) bool: mean intensity over channels > threshold."""
    return images.mean(1) > threshold


def foreground_share(
    magnitude: torch.Tensor, images: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD
) -> torch.Tensor:
    """(N, H, W) magnitudes, (N, C, H, W) images -> (N,): share of each map's mass on foreground pixels."""
    flat = _flat(magnitude)
    mask = foreground_mask(images, threshold).flatten(1)
    if mask.shape != flat.shape:
        raise ConfigError(f"images {tuple(images.shape)} do not fit maps {tuple(magnitude.shape)}")
    return (flat * mask).sum(1) / flat.sum(1)


def breadth(magnitude: torch.Tensor, images: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD) -> dict:
    """Every metric per image: ``{name: (N,) float64}`` for the names of ``METRICS`` (meaningless for an
    all-zero map: see :func:`summarize`)."""
    return {
        "mass_50": mass_fraction(magnitude, MASS_LEVELS[0]),
        "mass_90": mass_fraction(magnitude, MASS_LEVELS[1]),
        "entropy": entropy(magnitude),
        "entropy_normalized": normalized_entropy(magnitude),
        "foreground_share": foreground_share(magnitude, images, threshold),
    }


def summarize(per_image: dict, zero: torch.Tensor) -> dict:
    """``{name: {"mean", "std"}, "n_images", "n_zero_maps"}`` over the images whose map is not all zero.

    Mean and std are None when every map is zero.
    """
    keep = ~zero
    summary: dict = {"n_images": int(len(zero)), "n_zero_maps": int(zero.sum())}
    for name in METRICS:
        values = per_image[name][keep]
        if len(values) == 0:
            summary[name] = {"mean": None, "std": None}
        else:
            summary[name] = {"mean": values.mean().item(), "std": values.std(correction=0).item()}
    return summary


def attention_per_image(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threshold: float = FOREGROUND_THRESHOLD,
    batch_size: int = BATCH_SIZE,
    context: distributed.Context = distributed.SINGLE,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({name: (N,) float64}, zero)``: every metric of ``model``'s loss gradient per image of x: (N, C, H, W) in
    [0, 1], in the order of x, and which maps are all zero (CPU tensors).

    Under torchrun (``context``) each rank computes every ``world_size``-th image and the ranks' values are gathered
    back into the order of x, so every image counts exactly once.
    """
    check_images(x, y)
    mine = distributed.eval_indices(len(y), context)
    xs, ys = (x[mine.to(x.device)], y[mine.to(y.device)]) if context.distributed else (x, y)
    magnitude = pixel_map(loss_gradient(model, xs, ys, batch_size)).abs()
    zero = (magnitude.flatten(1).amax(1) == 0).cpu()
    per_image = {name: values.cpu() for name, values in breadth(magnitude, xs, threshold).items()}
    if not context.distributed:
        return per_image, zero
    gathered = distributed.gather_objects((mine, per_image, zero), context)
    order = torch.cat([part[0] for part in gathered])
    restore = torch.empty_like(order)
    restore[order] = torch.arange(len(order))
    per_image = {name: torch.cat([part[1][name] for part in gathered])[restore] for name in per_image}
    return per_image, torch.cat([part[2] for part in gathered])[restore]


def model_attention_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threshold: float = FOREGROUND_THRESHOLD,
    batch_size: int = BATCH_SIZE,
    context: distributed.Context = distributed.SINGLE,
) -> dict:
    """:func:`summarize` of :func:`attention_per_image` (every image counted once, also under torchrun)."""
    per_image, zero = attention_per_image(model, x, y, threshold, batch_size, context)
    return summarize(per_image, zero)


def _cell(entry: dict) -> str:
    if entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def metrics_markdown(document: dict) -> str:
    """The table of :func:`attention_metrics_report`: one row per model, mean ± std over the images."""
    which = f" (best weights: {BEST})" if document.get("weights") == "best" else ""
    lines = [
        f"Attention breadth of |dCE/dx|{which} on {document['n_examples']} test images (mean ± std over images; "
        f"foreground: mean intensity > {document['foreground_threshold']:g})",
        "",
        "| model | " + " | ".join(COLUMNS.values()) + " | zero maps |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for label, row in document["models"].items():
        cells = [_cell(row[name]) for name in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['n_zero_maps']} |")
    lines += ["", "Smaller fractions and entropy: attention on fewer pixels (the paper's A < S for AT vs ST)."]
    return "\n".join(lines) + "\n"


def attention_metrics_report(
    models: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    threshold: float = FOREGROUND_THRESHOLD,
    batch_size: int = BATCH_SIZE,
    context: distributed.Context = distributed.SINGLE,
) -> tuple[str, dict]:
    """``(markdown, document)`` of the breadth metrics of each model ({label: model}) on the same x, y.

    x: (N, C, H, W) in [0, 1] on the models' device; y: (N,). The document is JSON-able:
    ``{"n_examples", "foreground_threshold", "mass_levels", "definitions", "models": {label: summary}}``.
    """
    if not models:
        raise ConfigError("give at least one model")
    document = {
        "n_examples": len(x),
        "foreground_threshold": threshold,
        "mass_levels": list(MASS_LEVELS),
        "definitions": DEFINITIONS,
        "models": {
            label: model_attention_metrics(model, x, y, threshold, batch_size, context)
            for label, model in models.items()
        },
    }
    return metrics_markdown(document), document


def metrics_for_runs(
    run_dirs: Sequence[str | Path], n_examples: int | None = None, device: str = "auto", weights: str = "last"
) -> dict:
    """The document of :func:`attention_metrics_report` for finished runs (labels: folder names) on the first
    ``n_examples`` test images of the first run (all of them by default), with ``"runs": {label: path}``."""

    if n_examples is not None and n_examples < 1:
        raise ConfigError(f"--n-examples must be at least 1 (got {n_examples})")
    context, target = distributed.setup(device)
    with open_runs(run_dirs, target, weights) as (models, x, y):
        _, document = attention_metrics_report(models, x[:n_examples], y[:n_examples], context=context)
    document["runs"] = {label: str(run) for label, run in zip(run_labels(run_dirs), run_dirs, strict=True)}
    document["weights"] = weights
    return document


def write_attention_metrics(document: dict, out_dir: str | Path | None = None) -> list[Path]:
    """attention-metrics.md/.json (``-best`` for the best weights, :func:`metrics_files`) into ``out_dir`` (all
    models) and into each run folder of ``document["runs"]`` (that run's row only), each file written atomically.
    Returns the paths written."""

    written = []
    markdown_file, json_file = metrics_files(document.get("weights", "last"))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / markdown_file, metrics_markdown(document))
        write_json(out_dir / json_file, document)
        written += [out_dir / markdown_file, out_dir / json_file]
    for label, run in document.get("runs", {}).items():
        own = {**document, "models": {label: document["models"][label]}, "runs": {label: run}}
        write_text(Path(run) / markdown_file, metrics_markdown(own))
        write_json(Path(run) / json_file, own)
        written += [Path(run) / markdown_file, Path(run) / json_file]
    return written
