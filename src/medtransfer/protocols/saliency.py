"""Saliency by occlusion and attentive diffusion: how much of an image a model's feature depends on.

A ``window`` x ``window`` patch of zeros (in the model's normalised input space) slides
with ``stride`` over an ``input_size`` x ``input_size`` image; each window's score is
``||f(x) - f(x_occluded)|| / ||f(x)||`` on the pooled feature ``f``; a pixel's saliency
is the mean score of the windows covering it; the map is centre-cropped to
``crop_size``. Attentive diffusion is the share of the cropped map's pixels above the
map's mean (the published study reports it in percent). Published settings: window 10,
stride 1, input 242, crop 224 (54,289 windows per image). See docs/protocols.md
(Saliency) for what differs from the published code (eval-mode BatchNorm, several seeded
images, batched occlusions).

Batching, and why it is exact: the backbone is in eval mode, so every occluded copy's
feature depends on that copy only, and ``batch_size`` copies go through it at once. The
per-pixel mean over covering windows is computed from the (rows x cols) grid of window
scores ``S`` as ``R^T S C / R^T 1 C`` with ``R``, ``C`` the 0/1 coverage of each pixel row
and column by each window row and column (a test checks it against a per-window loop).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.data.cache import load_indexed_cache
from medtransfer.features import load_features, run_meta
from medtransfer.progress import Progress
from medtransfer.protocols.checks import SALIENCY_KEY, check_saliency
from medtransfer.protocols.saliency_maps import attentive_diffusion, centre_crop
from medtransfer.protocols.shared import draw_test_positions, frozen_backbone
from medtransfer.results import write_values
from medtransfer.runtime import resolve_device
from medtransfer.weights.backbones import normalise
from medtransfer.writers import save_npz

log = logging.getLogger(__name__)

PROTOCOL = "saliency"
SETTING = "occlusion"
METRIC = "attentive_diffusion"


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """First row (or column) of every window position along one side."""
    return np.arange(0, size - window + 1, stride)


def _coverage(size: int, window: int, starts: torch.Tensor) -> torch.Tensor:
    """(len(starts), size) bool: whether window ``k`` covers pixel row (or column) ``p``."""
    pixels = torch.arange(size, device=starts.device)
    return (pixels[None] >= starts[:, None]) & (pixels[None] < starts[:, None] + window)


def occlusion_scores(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, window: int,
                     stride: int, batch_size: int = 256, reference: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, cols) float64 grid of ``||f(x) - f(x_occluded)|| / ||f(x)||``, one score per window.

    ``x``: one normalised image (3, H, W) with H == W; ``features`` maps a batch to (B, D).
    ``reference``: ``f(x)`` if already known (the features stage's vector), else computed.
    """
    size = x.shape[-1]
    starts = torch.as_tensor(window_starts(size, window, stride), device=x.device)
    n = len(starts)
    with torch.inference_mode():
        ref = (features(x[None])[0] if reference is None else reference.to(x.device)).double()
        norm = ref.norm()
        if not norm > 0:
            raise ValueError("the clean image's feature is all zeros; occlusion saliency is undefined")
        scores = torch.empty(n * n, dtype=torch.float64, device=x.device)
        for lo in range(0, n * n, batch_size):
            k = torch.arange(lo, min(lo + batch_size, n * n), device=x.device)
            rows, cols = _coverage(size, window, starts[k // n]), _coverage(size, window, starts[k % n])
            keep = ~(rows[:, :, None] & cols[:, None, :])  # (B, H, W): False inside the window
            scores[k] = (features(x[None] * keep[:, None]).double() - ref).norm(dim=1) / norm
    return scores.view(n, n)


def pixel_map(scores: torch.Tensor, size: int, window: int, stride: int) -> torch.Tensor:
    """(size, size) mean score of the windows covering each pixel, from the window grid."""
    starts = torch.as_tensor(window_starts(size, window, stride), device=scores.device)
    cover = _coverage(size, window, starts).to(scores.dtype)  # (n, size), rows and columns alike
    total = cover.T @ scores @ cover
    count = cover.T @ torch.ones_like(scores) @ cover
    return total / count


def occlusion_map(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, window: int,
                  stride: int, batch_size: int = 256, reference: torch.Tensor | None = None) -> torch.Tensor:
    """The (H, W) saliency map of one normalised image (float64), before the crop."""
    scores = occlusion_scores(features, x, window=window, stride=stride, batch_size=batch_size, reference=reference)
    return pixel_map(scores, x.shape[-1], window, stride)


def model_inputs(images_uint8: np.ndarray, input_size: int, wmeta: Any, device: str) -> torch.Tensor:
    """Cached uint8 (N, S, S, 3) images as the model's normalised (N, 3, input, input) input.

    At ``input_size`` == S the cached image itself; otherwise resized (bicubic,
    antialiased, clamped to [0, 1]) as the published code resized the image to 242 px.
    """
    x = torch.from_numpy(np.array(images_uint8)).to(device).permute(0, 3, 1, 2).float().div(255.0)
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bicubic", antialias=True,
                          align_corners=False).clamp(0.0, 1.0)
    return normalise(x, wmeta)


def _references(features: str | os.PathLike | None, positions: np.ndarray, same_input: bool,
                device: str) -> list[torch.Tensor | None]:
    """Clean features reused from the features stage when they are the same computation."""
    if features is None or not same_input:
        return [None] * len(positions)
    fs = load_features(features)
    if fs.meta.get("precision") != "fp32":
        return [None] * len(positions)
    return [torch.from_numpy(fs.features[p]).to(device) for p in positions]


def evaluate_saliency(
    *, weights: str | os.PathLike, cache: str | os.PathLike, index: str | os.PathLike,
    out_rows: str | os.PathLike, out_predictions: str | os.PathLike, out_maps: str | os.PathLike,
    model: str, dataset: str, features: str | os.PathLike | None = None, n_images: int = 8,
    input_size: int = 242, crop_size: int = 224, window: int = 10, stride: int = 1, batch_size: int = 256,
    n_bootstrap: int = 1000, seed: int = 0, device: str = "auto",
) -> np.ndarray:
    """Occlusion maps and attentive diffusion of ``n_images`` seeded test images of one (model, dataset).

    Writes the rows (``attentive_diffusion``: mean over images with a bootstrap CI), the
    per-image values for the paired comparison, and ``out_maps`` (``maps`` (N, crop, crop)
    float32, ``inputs`` (N, crop, crop, 3) uint8 as the model saw them before normalisation,
    ``positions``, ``labels``, ``meta``). ``features``: the features stage's file, whose
    clean-image vectors are reused when ``input_size`` is the cache's size. Returns the
    per-image attentive diffusion.
    """
    check_saliency(input_size=input_size, crop_size=crop_size, window=window, stride=stride,
                   n_images=n_images, batch_size=batch_size)
    frame, images = load_indexed_cache(cache, index)
    positions = draw_test_positions(frame["split"].to_numpy(str), n_images, seed, SALIENCY_KEY,
                                    f"dataset {dataset!r} ({index})")
    device = resolve_device(device)
    net, wmeta = frozen_backbone(weights, device)
    refs = _references(features, positions, input_size == images.shape[1], device)
    start = time.perf_counter()
    maps, inputs = [], []
    progress = Progress(f"saliency {model}/{dataset}", n_images, unit="images")
    for k, pos in enumerate(positions):
        x = model_inputs(images[pos:pos + 1], input_size, wmeta, device)[0]
        full = occlusion_map(net, x, window=window, stride=stride, batch_size=batch_size, reference=refs[k])
        maps.append(centre_crop(full, crop_size).float().cpu().numpy())
        raw = model_inputs(images[pos:pos + 1], input_size, _Identity(), device)[0]
        inputs.append(centre_crop(raw, crop_size).permute(1, 2, 0).mul(255).round().byte().cpu().numpy())
        log.info("image %d/%d (row %d): %d windows", k + 1, n_images, pos,
                 len(window_starts(input_size, window, stride)) ** 2)
        progress.update()
    elapsed = time.perf_counter() - start
    maps_arr = np.stack(maps)
    diffusion = np.array([attentive_diffusion(m) for m in maps_arr])
    meta = run_meta(model=model, dataset=dataset, weights_meta=wmeta, index=frame, precision="fp32",
                    size=images.shape[1], seed=seed)
    n_windows = len(window_starts(input_size, window, stride)) ** 2
    meta.update(protocol=PROTOCOL, input_size=input_size, crop_size=crop_size, window=window, stride=stride,
                n_images=n_images, batch_size=batch_size, device=device.split(":")[0], elapsed_s=round(elapsed, 3),
                windows_per_s=round(n_windows * n_images / max(elapsed, 1e-9), 1),
                reused_clean_features=refs[0] is not None)
    _write(out_rows, out_predictions, out_maps, meta=meta, positions=positions, frame=frame, maps=maps_arr,
           inputs=np.stack(inputs), diffusion=diffusion, n_bootstrap=n_bootstrap, seed=seed)
    return diffusion


class _Identity:
    """A weights meta without normalisation: the [0, 1] image as the model saw it."""

    mean = None
    std = None
    normalisation = "none"


def _write(out_rows, out_predictions, out_maps, *, meta, positions, frame, maps, inputs, diffusion,
           n_bootstrap, seed) -> None:
    details = {"images": len(positions), "window": meta["window"], "stride": meta["stride"],
               "input_px": meta["input_size"], "crop_px": meta["crop_size"], "occluder": "zeros_normalised",
               "batchnorm": "eval", "per_image": diffusion.round(6).tolist()}
    labels = frame["label"].to_numpy(np.int64)[positions]
    write_values(rows=out_rows, predictions=out_predictions, protocol=PROTOCOL, setting=SETTING,
                 values={METRIC: diffusion}, positions=positions, labels=labels, meta=meta, seed=seed,
                 n_bootstrap=n_bootstrap, details=details)
    save_npz(out_maps, maps=maps.astype(np.float32), inputs=inputs.astype(np.uint8), positions=positions,
             labels=labels, meta=np.array(json.dumps(meta, sort_keys=True)))
