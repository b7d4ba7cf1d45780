"""Finetuning augmentation on the device: torchvision's RandomResizedCrop + flip, batched.

Two sources of crops:

- ``augment``: crops of the cached ``S x S`` centre images (``data.cache.build_cache``),
  resampled by one bicubic ``grid_sample``. Borders cut off by the centre crop are never
  seen.
- ``random_resized_crop_full``: crops of the whole image (``data.cache.build_full_cache``:
  short side ``~1.14 S``, aspect kept, images padded to one array), each box drawn inside
  its image's real ``(h, w)`` as torchvision does on the uncropped image, and resampled
  exactly like ``torchvision.transforms.v2.functional.resized_crop``: two batched
  matrix products with the interpolation weights of each box (antialiased bicubic, the
  PIL filter, by default).

Boxes follow torchvision's rule (see docs/protocols.md for the published settings:
scale 0.08-1, ratio 3/4-4/3, bicubic, horizontal flip); randomness comes from a numpy
``Generator``, so a seed fixes every box and flip.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.data.cache import read_rows

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
AA_CUBIC = -0.5  # PIL's bicubic (and torch's antialiased one)
PLAIN_CUBIC = -0.75  # torch's interpolate(mode="bicubic", antialias=False)


def crop_params(rng: np.random.Generator, n: int, height: int | np.ndarray, width: int | np.ndarray,
                scale: tuple[float, float] = SCALE, ratio: tuple[float, float] = RATIO) -> np.ndarray:
    """(n, 4) top, left, h, w of RandomResizedCrop boxes, torchvision's rule, vectorised.

    ``height``/``width``: one image size for all, or (n,) sizes, one per image. Ten tries
    per image for a box of random area and log-uniform aspect ratio that fits; images
    without one fall back to the largest centred box within the ratio range.
    """
    height = np.broadcast_to(np.asarray(height, dtype=np.int64), (n,))
    width = np.broadcast_to(np.asarray(width, dtype=np.int64), (n,))
    area = (height * width)[:, None] * rng.uniform(*scale, size=(n, 10))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, 10)))
    w = np.round(np.sqrt(area * aspect)).astype(np.int64)
    h = np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = fits.argmax(1)
    h, w = h[np.arange(n), first], w[np.arange(n), first]
    fh, fw = _fallback_box(height, width, ratio)
    found = fits.any(1)
    h, w = np.where(found, h, fh), np.where(found, w, fw)
    top = np.where(found, rng.integers(0, height - h + 1), (height - h) // 2)
    left = np.where(found, rng.integers(0, width - w + 1), (width - w) // 2)
    return np.stack([top, left, h, w], axis=1)


def _fallback_box(height: np.ndarray, width: np.ndarray, ratio: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's centre box when ten tries found none: the whole image, cut to the ratio range."""
    in_ratio = width / height
    h = np.where(in_ratio < ratio[0], np.round(width / ratio[0]), height).astype(np.int64)
    w = np.where(in_ratio > ratio[1], np.round(height * ratio[1]), width).astype(np.int64)
    return h, w


def augment(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """RandomResizedCrop(S, scale (0.08, 1), bicubic) + horizontal flip of a uint8 batch.

    ``images``: uint8 (n, 3, S, S) on any device; returns float (n, 3, S, S) in [0, 1].
    One bicubic ``grid_sample`` for the whole batch, instead of one resize per image:
    a crop of an S x S image resized to S x S is never a downscale, so no antialiasing
    is lost, and the flip is folded into the sampling grid. Sample points follow
    ``interpolate``'s pixel-centre rule; unlike a crop-then-resize, the bicubic taps at a
    crop's edge may read the pixels just outside it (the image's own, not padding).
    """
    n, _, size, _ = images.shape
    boxes = torch.from_numpy(crop_params(rng, n, size, size)).to(images.device, torch.float32)
    flips = torch.from_numpy(rng.random(n) < 0.5).to(images.device)
    centres = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size
    top, left, h, w = boxes.unbind(1)
    ys = top[:, None] + centres[None] * h[:, None] - 0.5  # source pixel coordinates
    xs = left[:, None] + centres[None] * w[:, None] - 0.5
    xs = torch.where(flips[:, None], xs.flip(1), xs)
    grid = torch.stack([xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)], dim=3)
    grid = (2.0 * grid + 1.0) / size - 1.0  # to grid_sample's [-1, 1] (align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 255.0).div_(255.0)


# ---------------------------------------------------------------- crops of the whole image


def random_resized_crop_full(images: torch.Tensor, hw: torch.Tensor | np.ndarray, out_size: int,
                             rng: np.random.Generator, scale: tuple[float, float] = SCALE,
                             ratio: tuple[float, float] = RATIO, flip: bool = True,
                             antialias: bool = True) -> torch.Tensor:
    """RandomResizedCrop(out_size) + horizontal flip of padded images of different sizes.

    ``images``: uint8 (B, C, H, W), image ``i`` in ``[:h_i, :w_i]`` and padding beyond;
    ``hw``: (B, 2) the real sizes. Boxes are drawn inside each real image (``crop_params``,
    then one flip draw per image when ``flip``). Each box is resized to ``out_size``
    exactly as ``resized_crop(image[:, :h, :w], top, left, bh, bw, out_size, bicubic,
    antialias)`` does: the taps stay inside the box (edge pixels repeat), so padding is
    never read. Returns float (B, C, out_size, out_size) in [0, 1], on ``images``' device.
    """
    n = images.shape[0]
    hw = np.asarray(hw.cpu() if isinstance(hw, torch.Tensor) else hw, dtype=np.int64).reshape(n, 2)
    if (hw <= 0).any() or (hw[:, 0] > images.shape[2]).any() or (hw[:, 1] > images.shape[3]).any():
        raise ValueError(f"image sizes {hw.tolist()[:4]}... must be positive and within the padded "
                         f"{tuple(images.shape[2:])}; rebuild the full cache")
    boxes = torch.from_numpy(crop_params(rng, n, hw[:, 0], hw[:, 1], scale, ratio)).to(images.device)
    top, left, bh, bw = boxes.unbind(1)
    rows = resize_weights(top, bh, images.shape[2], out_size, antialias)  # (B, out, H)
    cols = resize_weights(left, bw, images.shape[3], out_size, antialias)  # (B, out, W)
    if flip:
        flips = torch.from_numpy(rng.random(n) < 0.5).to(images.device)
        cols = torch.where(flips[:, None, None], cols.flip(1), cols)
    out = rows[:, None] @ images.float() @ cols.transpose(1, 2)[:, None]
    return out.clamp_(0.0, 255.0).div_(255.0)


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                   antialias: bool = True) -> torch.Tensor:
    """(n, out_size, in_size) float32 weights resizing ``[start, start + length)`` to ``out_size``.

    Row ``o`` of box ``i`` holds the weights of output pixel ``o`` over the input pixels:
    ``weights @ column`` is ``interpolate(column[start:start + length], out_size,
    mode="bicubic", align_corners=False, antialias=antialias)``, taps clamped to the box.
    The taps of each output pixel are computed, then scattered into the dense matrix.
    """
    start, length = start.to(torch.float64)[:, None, None], length.to(torch.float64)[:, None, None]
    step = length / out_size  # input pixels per output pixel
    out = torch.arange(out_size, device=start.device, dtype=torch.float64)[None, :, None]
    taps, weights = _aa_taps(step, out, length, in_size / out_size) if antialias else _plain_taps(step, out, length)
    dense = torch.zeros((len(start), out_size, in_size), dtype=torch.float64, device=start.device)
    dense.scatter_add_(2, (start + taps).long().expand_as(weights), weights)
    return dense.to(torch.float32)


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel (support |x| < 2)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _aa_taps(step, out, length, widest: float) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's ``_upsample_bicubic2d_aa`` (PIL's filter): the kernel widens by the downscale.

    Taps (relative to the box) and normalised weights, (n, out, K); unused taps weigh 0.
    K is bounded by ``widest``, the largest possible ``step`` (no device sync to find it).
    """
    stretch = step.clamp(min=1.0)
    centre = step * (out + 0.5)
    support = 2.0 * stretch
    low = torch.trunc(centre - support + 0.5).clamp(min=0)
    high = torch.minimum(torch.trunc(centre + support + 0.5), length)
    width = int(math.ceil(4 * max(widest, 1.0))) + 2  # taps span 2 * support + 1 at most
    taps = low + torch.arange(width, device=step.device, dtype=step.dtype)
    weights = torch.where(taps < high, _cubic((taps - centre + 0.5) / stretch, AA_CUBIC), 0.0)
    return torch.minimum(taps, length - 1), weights / weights.sum(-1, keepdim=True)


def _plain_taps(step, out, length) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's ``upsample_bicubic2d``: four taps at a fixed width, indices clamped to the box."""
    real = step * (out + 0.5) - 0.5
    index = torch.minimum(torch.floor(real), length - 1)
    frac = (real - index).clamp(0.0, 1.0)
    offsets = torch.arange(-1, 3, device=step.device, dtype=step.dtype)
    taps = torch.minimum((index + offsets).clamp(min=0), length - 1)
    return taps, _cubic(frac - offsets, PLAIN_CUBIC)


def full_batch_array(images: np.ndarray, hw: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images at ``positions`` of a full cache as uint8 (B, h, w, 3) numpy, and their sizes.

    Portrait images, stored transposed (``cache.build_full_cache``), are stood up again;
    the batch is padded to its own largest (h, w), not the cache's.
    """
    sizes = np.asarray(hw[positions], dtype=np.int64)
    batch = np.zeros((len(sizes), *sizes.max(0), 3), dtype=np.uint8)
    for k, (pos, (h, w)) in enumerate(zip(positions, sizes)):
        lying = read_rows(images, [pos])[0, :min(h, w), :max(h, w)]  # plain reads: no pages left mapped
        batch[k, :h, :w] = lying.transpose(1, 0, 2) if h > w else lying
    return batch, sizes


def full_batch(images: np.ndarray, hw: np.ndarray, positions: np.ndarray,
               device: str | torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`full_batch_array` as a uint8 (B, 3, h, w) tensor on ``device``, and the sizes."""
    batch, sizes = full_batch_array(images, hw, positions)
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2), sizes
