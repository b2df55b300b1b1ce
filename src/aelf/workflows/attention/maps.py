"""Where a model looks: attention maps on input images (Section 2.2, footnotes 3 and 5, Fig. 2, 4 and 6).

Every map is computed for the true label y, on images x: (N, C, H, W) pixels in [0, 1], with the model in eval
mode (:func:`aelf.core.modes.evaluating`) on the device of x; the model takes x and returns logits (N, K).

- **Loss gradient** G = d CE(model(x), y) / dx per image (:func:`loss_gradient`, (N, C, H, W)).
- **Pixel maps**: multi-channel attributions are reduced to one value per pixel by summing over channels
  (:func:`pixel_map`), for display and for the metrics. For a gradient this is the derivative of the loss along
  brightening the pixel in every channel at once; for Integrated Gradients it keeps completeness (the sum of all
  values is still the logit difference to the black baseline). One-channel images are unchanged.
- **Normalised gradient** (footnote 3): per image G / ||G||_2, then divided by max |G|, so that values lie in
  [-1, 1] and the largest magnitude is exactly 1 (:func:`normalize_gradient`). An all-zero gradient stays zero.
- **Gradient signs** (footnote 5, Fig. 4 and 6): sign(G) in {-1, 0, +1}, shown only where |G| > t for each threshold
  t of ``THRESHOLDS`` (Fig. 4's "* <" rows), 0 elsewhere (:func:`sign_maps`). By default |G| is that of the
  footnote-3 normalised map (``sign_scale="normalized"``): raw cross-entropy gradients of a confident model are orders
  of magnitude below 0.1 and scale with each image's loss, so raw thresholds would compare confidence rather than
  attention. ``sign_scale="raw"`` thresholds the raw per-pixel gradient instead (the literal reading of footnote 5).
- **Grad-CAM** (Selvaraju et al.): captum's ``LayerGradCam`` on the last ``nn.Conv2d`` of the model (or a layer the
  caller names), ReLU applied, upsampled bilinearly to (H, W); >= 0.
- **SmoothGrad** (Smilkov et al.): captum's ``NoiseTunnel`` over ``Saliency`` (|d logit_y / dx| averaged over noisy
  copies x + N(0, sigma^2), sigma ``SMOOTHGRAD_SIGMA`` = 15% of the [0, 1] pixel range); >= 0.
- **Integrated Gradients** (Sundararajan et al.): captum's ``IntegratedGradients`` of logit_y from the black image
  (all zeros) to x; signed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aelf.core.attacks.pgd import input_gradient
from aelf.core.data.source import FILES
from aelf.core.errors import CheckpointError, ConfigError
from aelf.core.modes import evaluating
from aelf.core.run import open_run, read_config, run_labels
from aelf.core.run_folder import WEIGHTS

THRESHOLDS = (0.1, 0.2, 0.3)  # |G| above which a gradient sign is shown (Fig. 4's "* <" rows)
SIGN_SCALES = ("normalized", "raw")
BATCH_SIZE = 128  # images per forward/backward pass
SMOOTHGRAD_SAMPLES = 16  # noisy copies per image
SMOOTHGRAD_SIGMA = 0.15  # noise standard deviation in pixel units: 15% of the [0, 1] range (Smilkov et al. 10-20%)
IG_STEPS = 32  # points of the Gauss-Legendre path integral


def check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    """x must be (N, C, H, W) and y (N,) with N >= 1."""
    if x.dim() != 4:
        raise ConfigError(f"images must be (N, C, H, W) (got shape {tuple(x.shape)})")
    if y.dim() != 1 or len(y) != len(x) or len(x) == 0:
        raise ConfigError(f"labels must be (N,) for N = {len(x)} >= 1 images (got shape {tuple(y.shape)})")


def batched(compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, y, batch_size: int) -> torch.Tensor:
    """``compute`` on consecutive batches of (x, y), concatenated along the first dimension."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1 (got {batch_size})")
    return torch.cat([compute(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def pixel_map(attribution: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W): the sum over channels (see the module docstring)."""
    return attribution.sum(1)


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """G = d CE(model(x_i), y_i) / dx_i for each image: (N, C, H, W), same dtype and device as x."""
    check_images(x, y)

    def one_batch(xb, yb):
        # The loss is summed over the batch, but in eval mode each image's loss depends on that image only, so the
        # gradient of the sum with respect to x_i is the gradient of image i's own loss.
        with evaluating(model), torch.enable_grad():
            return input_gradient(model, xb, yb, "ce")

    return batched(one_batch, x, y, batch_size)


def normalize_gradient(gradient_map: torch.Tensor) -> torch.Tensor:
    """Footnote 3 per image: G / ||G||_2, then / max |G|. (N, H, W) -> (N, H, W) in [-1, 1]; max |.| = 1 or 0."""
    flat = gradient_map.flatten(1)
    tiny = torch.finfo(flat.dtype).tiny
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(tiny)
    scaled = unit / unit.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
    return scaled.reshape(gradient_map.shape)


def normalized_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = BATCH_SIZE):
    """The footnote-3 map of each image: (N, H, W) in [-1, 1] (channels summed before normalising)."""
    return normalize_gradient(pixel_map(loss_gradient(model, x, y, batch_size)))


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(t) for t in thresholds)
    if not values or any(not t >= 0 for t in values):
        raise ConfigError(f"sign thresholds must be one or more numbers >= 0 (got {list(thresholds)})")
    return values


def sign_maps(gradient_map: torch.Tensor, thresholds: Sequence[float] = THRESHOLDS) -> torch.Tensor:
    """sign(G) where |G| > t, else 0, for each threshold t: (N, H, W) -> (N, T, H, W) int8 in {-1, 0, 1}."""
    values = torch.tensor(check_thresholds(thresholds), dtype=gradient_map.dtype, device=gradient_map.device)
    shown = gradient_map.abs()[:, None] > values[None, :, None, None]
    return (gradient_map.sign()[:, None] * shown).to(torch.int8)


def gradient_sign_maps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    thresholds: Sequence[float] = THRESHOLDS,
    sign_scale: str = "normalized",
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Footnote 5: the signs of the loss gradient above each threshold, (N, T, H, W) int8.

    ``sign_scale``: ``normalized`` thresholds |G| of the footnote-3 map (in [0, 1]); ``raw`` of the raw gradient.
    """
    if sign_scale not in SIGN_SCALES:
        raise ConfigError(f"sign_scale must be one of {', '.join(SIGN_SCALES)} (got {sign_scale!r})")
    gradient_map = pixel_map(loss_gradient(model, x, y, batch_size))
    if sign_scale == "normalized":
        gradient_map = normalize_gradient(gradient_map)
    return sign_maps(gradient_map, thresholds)


def last_conv_layer(model: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` in ``model.modules()`` order (for CNNb, WRN and ResNets: the last convolution)."""
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM; name a layer instead")
    return convs[-1]


def resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    """``layer`` itself, the submodule named ``layer`` (e.g. ``features.12``), or the last ``nn.Conv2d``."""
    if layer is None:
        return last_conv_layer(model)
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"{type(model).__name__} has no layer named {layer!r}") from None


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layer: str | nn.Module | None = None,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Grad-CAM for class y at ``layer`` (default: the last conv), ReLU'd, upsampled to (N, H, W); values >= 0."""
    from captum.attr import LayerAttribution, LayerGradCam

    check_images(x, y)
    explainer = LayerGradCam(model, resolve_layer(model, layer))
    size = tuple(x.shape[-2:])

    def one_batch(xb, yb):
        with evaluating(model):
            cam = explainer.attribute(xb, target=yb, relu_attributions=True)  # (n, 1, h, w) at the layer
        return LayerAttribution.interpolate(cam.detach(), size, "bilinear")[:, 0]

    return batched(one_batch, x, y, batch_size)


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n_samples: int = SMOOTHGRAD_SAMPLES,
    sigma: float = SMOOTHGRAD_SIGMA,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad of logit y: mean |gradient| over ``n_samples`` noisy copies, channels summed: (N, H, W), >= 0.

    The noise comes from a generator seeded with ``seed``; the caller's random state is left as it was.
    """
    from captum.attr import NoiseTunnel, Saliency

    check_images(x, y)
    if n_samples < 1 or not sigma >= 0:
        raise ConfigError(f"SmoothGrad needs n_samples >= 1 and sigma >= 0 (got {n_samples}, {sigma})")
    explainer = NoiseTunnel(Saliency(model))
    cuda_devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)

        def one_batch(xb, yb):
            with evaluating(model):
                saliency = explainer.attribute(
                    xb,
                    nt_type="smoothgrad",
                    nt_samples=n_samples,
                    nt_samples_batch_size=n_samples,
                    stdevs=sigma,
                    target=yb,
                    abs=True,
                )
            return pixel_map(saliency.detach())

        return batched(one_batch, x, y, batch_size)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n_steps: int = IG_STEPS,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Integrated Gradients of logit y from the black image to x, channels summed: (N, H, W), signed."""
    from captum.attr import IntegratedGradients

    check_images(x, y)
    if n_steps < 1:
        raise ConfigError(f"Integrated Gradients needs n_steps >= 1 (got {n_steps})")
    explainer = IntegratedGradients(model)

    def one_batch(xb, yb):
        with evaluating(model):
            attribution = explainer.attribute(
                xb, baselines=torch.zeros_like(xb), target=yb, n_steps=n_steps, internal_batch_size=batch_size
            )
        return pixel_map(attribution.detach())

    return batched(one_batch, x, y, batch_size)


@dataclass(frozen=True)
class AttentionMaps:
    """Every map of one model on N images, on the images' device.

    images (N, C, H, W) in [0, 1]; labels (N,); gradient (N, H, W): the footnote-3 normalised loss gradient in
    [-1, 1]; signs (N, T, H, W) int8 in {-1, 0, 1} for ``thresholds`` (on ``sign_scale``); grad_cam (N, H, W) >= 0;
    smoothgrad (N, H, W) >= 0; integrated_gradients (N, H, W) signed.
    """

    images: torch.Tensor
    labels: torch.Tensor
    gradient: torch.Tensor
    signs: torch.Tensor
    thresholds: tuple[float, ...]
    sign_scale: str
    grad_cam: torch.Tensor
    smoothgrad: torch.Tensor
    integrated_gradients: torch.Tensor


def attention_maps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    thresholds: Sequence[float] = THRESHOLDS,
    sign_scale: str = "normalized",
    layer: str | nn.Module | None = None,
    smoothgrad_samples: int = SMOOTHGRAD_SAMPLES,
    ig_steps: int = IG_STEPS,
    batch_size: int = BATCH_SIZE,
) -> AttentionMaps:
    """All maps of :class:`AttentionMaps` for ``model`` on x: (N, C, H, W) in [0, 1], y: (N,)."""
    thresholds = check_thresholds(thresholds)
    if sign_scale not in SIGN_SCALES:
        raise ConfigError(f"sign_scale must be one of {', '.join(SIGN_SCALES)} (got {sign_scale!r})")
    raw = pixel_map(loss_gradient(model, x, y, batch_size))
    normalized = normalize_gradient(raw)
    return AttentionMaps(
        images=x.detach(),
        labels=y.detach(),
        gradient=normalized,
        signs=sign_maps(normalized if sign_scale == "normalized" else raw, thresholds),
        thresholds=thresholds,
        sign_scale=sign_scale,
        grad_cam=grad_cam(model, x, y, layer, batch_size),
        smoothgrad=smoothgrad(model, x, y, smoothgrad_samples, batch_size=batch_size),
        integrated_gradients=integrated_gradients(model, x, y, ig_steps, batch_size),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Run folders


def dataset_key(config) -> str:
    """What makes two runs' test sets the same: the dataset, and for a user's files the file and its split."""
    data = config.data
    if data.name != FILES:
        return data.name
    return f"{data.root} (split seed {data.split_seed}, test fraction {data.test_fraction})"


def check_runs(run_dirs: Sequence[str | Path]) -> None:
    """Each folder a finished run (config, weights present) and all of one dataset, so that all models see the same
    images; checked before any model is loaded."""
    if not run_dirs:
        raise ConfigError("give at least one run folder")
    configs = [read_config(run) for run in run_dirs]
    for run in run_dirs:
        if not (Path(run) / WEIGHTS).is_file():
            raise CheckpointError(f"{run}: training has not finished (no {WEIGHTS}); resume it with --resume")
    datasets = {dataset_key(config) for config in configs}
    if len(datasets) > 1:
        raise ConfigError(f"runs use different datasets ({', '.join(sorted(datasets))}); compare runs of one dataset")


@contextmanager
def open_runs(run_dirs: Sequence[str | Path], device: str | torch.device = "auto", weights: str = "last"):
    """``({label: model}, x, y)``: each finished run opened by :func:`aelf.core.run.open_run` (eval mode, on
    ``device``, its ``last`` or ``best`` weights) and the first run's test set, after :func:`check_runs`."""
    check_runs(run_dirs)
    with ExitStack() as stack:
        runs = [stack.enter_context(open_run(run, device, weights=weights)) for run in run_dirs]
        yield {label: run.model for label, run in zip(run_labels(run_dirs), runs, strict=True)}, runs[0].x, runs[0].y
