"""Invariance: how similar a model's feature of an image stays under a transform, or across views.

For ``n_images`` seeded training images (the whole-image cache that finetuning crops
from holds only those) each synthetic transform is applied to the *whole* image, before
the model's centre crop, at every value of its grid; the metric compares the feature of
the transformed crop with that of the clean crop in the feature space whitened with a
feature mean and covariance:

- ``cosine``: cosine similarity of the whitened features (1: invariant);
- ``mahalanobis``: Mahalanobis distance between the two features (0: invariant).

The whitening of the transforms is estimated on the view they are compared in: the clean
centre crops of the whole-image cache's training images (short side ``full_scale`` x
``image_size``, then the ``image_size`` crop: Resize(256) + CenterCrop(224), as the
published code), computed in the job, a batch at a time, and held out: the evaluated
images are split in two halves by seed and each half is whitened without its own images
(``held_out_halves``). Each image's value is the mean
over the transform's grid (the identity counts where the grid holds it); the row is the
mean over images with a bootstrap CI. Multi-view pairs (``multiview``: CheXpert frontal
and lateral images of one study, EyePACS left and right eye of one patient, with equal
labels) compare two real images, so their features, and their whitening (on the training
images; the pairs are test images), come from the features stage unchanged. A grey
dataset gets no colour-only transform (``hue``: see ``protocols.COLOUR_TRANSFORMS``); rows
of a histogram-equalised model (``normalisation: histeq``) under a monotone grey-value map
(``protocols.MONOTONE_TRANSFORMS``) are marked ``invariant_by_preprocessing`` in their
details: the equalisation undoes the transform.

The covariance is Ledoit-Wolf shrunk (``covariance: ledoit_wolf``; 2,048 feature
dimensions from a few hundred images are otherwise singular) or, as published, the sample
covariance plus ``ridge`` times the identity (``covariance: ridge``). Both come from p x p
sums over chunks of rows (``MomentSums``), so memory does not grow with the number of
images; ``covariance_images`` estimates them on a seeded subsample instead of every image. Whitening uses the
Cholesky factor ``L`` (``z = L^-1 (f - mean)``): cosine and distance are the same for any
``W`` with ``W^T W = covariance^-1``, and a triangular solve is cheaper than ``covariance^-1/2``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from scipy.linalg import solve_triangular

from medtransfer.data.adapters import MULTIVIEW_KINDS
from medtransfer.data.augment import full_batch
from medtransfer.data.cache import load_full_cache, preprocessing_name, read_rows
from medtransfer.data.index import read_index
from medtransfer.features import load_features, run_meta
from medtransfer.protocols import MONOTONE_TRANSFORMS, MULTIVIEW
from medtransfer.protocols.checks import check_transforms
from medtransfer.protocols.shared import draw_sorted, frozen_backbone
from medtransfer.results import write_values
from medtransfer.runtime import resolve_device
from medtransfer.weights.backbones import normalise

log = logging.getLogger(__name__)

CONFIG_KEY = "protocols.invariance"
PROTOCOL = "invariance"
COVARIANCES = ("ledoit_wolf", "ridge")
GEOMETRIC = ("rotation", "hflip", "vflip", "translation", "scale")


# ---------------------------------------------------------------- transforms

def _photometric(x: torch.Tensor, name: str, value: float) -> torch.Tensor:
    """A colour or blur transform of whole images (B, 3, h, w) in [0, 1]."""
    if name == "hue":
        return TF.adjust_hue(x, value)
    if name == "brightness":
        return TF.adjust_brightness(x, value)
    if name == "contrast":
        return TF.adjust_contrast(x, value)  # around the whole image's mean grey, before the crop
    if name == "blur" and value > 0:  # sigma 0: the identity
        radius = max(1, math.ceil(3 * value))
        return TF.gaussian_blur(x, [2 * radius + 1] * 2, [float(value)] * 2)
    return x


def crop_grid(hw: tuple[int, int], size: int, name: str = "", value: float = 0.0,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """(1, size, size, 2) sampling grid of the centre crop of an (h, w) image after a geometric transform.

    Output pixels are placed around the crop's centre and mapped back into the image:
    ``rotation`` by ``value`` degrees, ``translation`` by ``value`` x ``size`` pixels right and
    down (measured on the model's input, after the resize, unlike the published code),
    ``scale`` zooms by ``value`` (> 1: in), flips with ``value`` 1 mirror about the crop's
    centre (0: the identity). With no
    transform the grid hits the pixels of the centre crop exactly (offsets as in the cache).
    """
    h, w = hw
    c = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    v, u = torch.meshgrid(c, c, indexing="ij")
    if name == "hflip" and value:  # 1 mirrored, 0 the identity
        u = -u
    elif name == "vflip" and value:
        v = -v
    elif name == "translation":
        u, v = u - value * size, v - value * size
    elif name == "scale":
        u, v = u / value, v / value
    elif name == "rotation":
        a = math.radians(value)
        u, v = math.cos(a) * u - math.sin(a) * v, math.sin(a) * u + math.cos(a) * v
    x = u + (w - size) // 2 + (size - 1) / 2
    y = v + (h - size) // 2 + (size - 1) / 2
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
    return grid[None].float()


def transformed_crops(full: torch.Tensor, size: int, name: str, values: Sequence[float]) -> torch.Tensor:
    """(len(values), 3, size, size) crops of one whole image (3, h, w) in [0, 1], one per grid value.

    Beyond the image's real border (a large rotation or shift) the image is mirrored, so
    no black corners enter the crop.
    """
    hw = (full.shape[-2], full.shape[-1])
    out = []
    for value in values:
        img = _photometric(full[None], name, value)
        geo = name if name in GEOMETRIC else ""
        out.append(F.grid_sample(img, crop_grid(hw, size, geo, value, full.device), mode="bilinear",
                                 padding_mode="reflection", align_corners=True))
    return torch.cat(out).clamp(0.0, 1.0)


def clean_crop(full: torch.Tensor, size: int) -> torch.Tensor:
    """(1, 3, size, size): the centre crop of one whole image, exactly its pixels."""
    h, w = full.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return full[None, :, top:top + size, left:left + size]


# ---------------------------------------------------------------- whitening

# Rows of features centred and multiplied at once: bounds the float64 copy (4,096 x 2,048 x 8 B = 64 MB).
_ROWS = 4096


class MomentSums:
    """Sums over rows of features (p,), added a chunk at a time, for their mean, scatter matrix
    ``Xc^T Xc`` (p, p) and ``sum_i ||xc_i||^4`` (``Xc``: the rows centred on their mean).

    One pass: the rows are shifted by the first chunk's mean ``K`` (so float64 stays accurate
    when the mean is large against the spread) and the centred quantities follow exactly from
    the sums of ``y = x - K``: with ``d = mean(y)``, ``Xc^T Xc = Y^T Y - n d d^T`` and
    ``||xc||^2 = ||y||^2 - 2 y.d + ||d||^2``. Memory is p x p whatever the number of rows, so
    features computed in batches (the invariance crops) need never be kept.
    """

    def __init__(self, shift: np.ndarray | None = None) -> None:
        self.n, self.shift = 0, None
        if shift is not None:
            self._start(np.asarray(shift, dtype=np.float64))

    def _start(self, shift: np.ndarray) -> None:
        p = len(shift)
        self.shift = shift
        self.sum, self.cross, self.norm_y = np.zeros(p), np.zeros((p, p)), np.zeros(p)
        self.norms, self.norms2 = 0.0, 0.0

    def add(self, chunk: np.ndarray) -> "MomentSums":
        y = np.asarray(chunk, dtype=np.float64)
        if not len(y):
            return self
        if self.shift is None:
            self._start(y.mean(0))
        y = y - self.shift
        a = (y * y).sum(1)  # ||y_i||^2
        self.n += len(y)
        self.sum += y.sum(0)
        self.cross += y.T @ y
        self.norm_y += a @ y
        self.norms += float(a.sum())
        self.norms2 += float(a @ a)
        return self

    def __add__(self, other: "MomentSums") -> "MomentSums":
        """The sums of both sets of rows; both must share one shift (``MomentSums(shift)``)."""
        if other.n == 0 or self.n == 0:
            return self if other.n == 0 else other
        if self.shift is not other.shift and not np.array_equal(self.shift, other.shift):
            raise ValueError("MomentSums of different shifts cannot be added; give both the same shift")
        out = MomentSums(self.shift)
        out.n = self.n + other.n
        for name in ("sum", "cross", "norm_y", "norms", "norms2"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def result(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, scatter, fourth) of every row added."""
        if not self.n:
            raise ValueError("no feature rows were added: the whitening needs at least 2 images")
        n, d = self.n, self.sum / self.n
        c = float(d @ d)
        scatter = self.cross - n * np.outer(d, d)
        # sum_i (a_i - 2 b_i + c)^2 with b_i = y_i.d (sum b_i = n c)
        fourth = (self.norms2 - 4 * float(d @ self.norm_y) + 2 * c * self.norms + 4 * float(d @ self.cross @ d)
                  - 4 * n * c * c + n * c * c)
        return self.shift + d, scatter, fourth


def feature_moments(x: np.ndarray, rows: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean (p,), scatter matrix ``Xc^T Xc`` (p, p) and ``sum_i ||xc_i||^4`` of the rows of ``x`` (n, p).

    ``rows`` rows at a time through ``MomentSums``, each upcast to float64 on its own, so a
    float32 feature file is never copied whole, and a memory map of one is read by plain
    reads (``data.cache.read_rows``): memory is p x p plus one chunk, whatever n.
    """
    rows = rows or _ROWS
    sums = MomentSums()
    for lo in range(0, len(x), rows):
        sums.add(read_rows(x, slice(lo, lo + rows)))
    return sums.result()


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of the rows of ``x`` (n, p), float64, and the shrinkage."""
    _, scatter, fourth = feature_moments(x)
    return ledoit_wolf_from_moments(scatter, fourth, len(x))


def ledoit_wolf_from_moments(scatter: np.ndarray, fourth: float, n: int) -> tuple[np.ndarray, float]:
    """The same estimator as scikit-learn's ``covariance.ledoit_wolf`` (centred data, divisor n):
    ``(1 - s) * S + s * mu * I`` with ``S = scatter / n`` and ``mu = trace(S) / p``.

    Only p x p quantities: scikit-learn's ``||X^T X||_F^2 / n^2`` is ``||S||_F^2``, and its
    ``sum((X^2)^T X^2)`` is ``fourth``, the sum of each centred row's squared norm squared
    (``feature_moments``). No n x n matrix: 223,414 CheXpert images cost what 2,000 do.
    """
    p = scatter.shape[0]
    cov = scatter / n
    trace = float(np.trace(cov))
    mu = trace / p
    delta_sum = float((cov * cov).sum())
    delta = (delta_sum - 2 * mu * trace + p * mu ** 2) / p
    beta = min((fourth / n - delta_sum) / (p * n), delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    out = (1 - shrinkage) * cov
    out.flat[::p + 1] += shrinkage * mu
    return out, float(shrinkage)


class Whitener:
    """Whitening with a dataset's feature mean and covariance (scikit-learn style: ``fit`` returns self).

    ``n_images``: estimate both on that many rows drawn by ``seed`` (without replacement,
    in row order) instead of all of them, as the published code did; ``None``: every row.
    """

    def __init__(self, covariance: str = "ledoit_wolf", ridge: float = 1e-6, n_images: int | None = None,
                 seed: int = 0) -> None:
        self.covariance = covariance
        self.ridge = ridge
        self.n_images = n_images
        self.seed = seed

    def fit(self, features: np.ndarray) -> "Whitener":
        """Estimate on the rows of ``features`` (n, p): all, or ``n_images`` drawn by seed."""
        return self.fit_chunks([self._rows(features)])

    def fit_chunks(self, chunks: Iterable[np.ndarray]) -> "Whitener":
        """Estimate on every row of ``chunks`` (each (b, p)), one chunk in memory at a time."""
        self._check()
        sums = MomentSums()
        for chunk in chunks:
            for lo in range(0, len(chunk), _ROWS):
                sums.add(read_rows(chunk, slice(lo, lo + _ROWS)))
        return self.fit_sums(sums)

    def fit_sums(self, sums: MomentSums) -> "Whitener":
        """Estimate from the moment sums of the rows (``MomentSums``)."""
        self._check()
        n = sums.n
        if n < 2:
            raise ValueError(f"the whitening has {n} image(s) to estimate a covariance from; it needs at least 2: "
                             f"raise {CONFIG_KEY}.covariance_images (or null for every training image)")
        self.mean_, scatter, fourth = sums.result()
        if self.covariance == "ledoit_wolf":
            cov, self.shrinkage_ = ledoit_wolf_from_moments(scatter, fourth, n)
        else:
            cov, self.shrinkage_ = scatter / max(n - 1, 1), 0.0  # np.cov's unbiased divisor
            cov.flat[::cov.shape[0] + 1] += self.ridge
        self.n_fitted_ = n
        try:
            self.cholesky_ = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as err:
            raise ValueError(f"the whitening covariance of {n} images is singular ({self.covariance}, shrinkage "
                             f"{self.shrinkage_:.3g}): raise {CONFIG_KEY}.covariance_images (or null for every "
                             f"training image), or give covariance: ridge with a ridge above 0") from err
        return self

    def _check(self) -> None:
        if self.covariance not in COVARIANCES:
            raise ValueError(f"{CONFIG_KEY}.covariance: unknown {self.covariance!r}; allowed: {list(COVARIANCES)}")

    def _rows(self, features: np.ndarray) -> np.ndarray:
        """The rows the statistics come from: all, or ``n_images`` drawn by seed."""
        if self.n_images is None or self.n_images >= len(features):
            return features
        return read_rows(features, self.draw(np.arange(len(features))))

    def draw(self, pool: np.ndarray) -> np.ndarray:
        """The members of ``pool`` (sorted positions) the statistics come from: all, or ``n_images`` by seed."""
        if self.n_images is None or self.n_images >= len(pool):
            return pool
        if self.n_images < 2:
            raise ValueError(f"{CONFIG_KEY}.covariance_images={self.n_images}: a covariance needs at least 2 "
                             "images; give at least 2, or null for every image")
        return draw_sorted(pool, self.n_images, self.seed)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Whitened features (n, p): ``L^-1 (f - mean)``."""
        centred = np.asarray(features, dtype=np.float64) - self.mean_
        return solve_triangular(self.cholesky_, centred.T, lower=True).T

    def compare(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row-wise whitened cosine similarity and Mahalanobis distance of ``a`` and ``b`` (n, p)."""
        za, zb = self.transform(a), self.transform(b)
        cosine = (za * zb).sum(1) / (np.linalg.norm(za, axis=1) * np.linalg.norm(zb, axis=1))
        return cosine, np.linalg.norm(za - zb, axis=1)


# ---------------------------------------------------------------- the measurements

def transform_features(net: Callable[[torch.Tensor], torch.Tensor], normalise: Callable[[torch.Tensor], torch.Tensor],
                       full: torch.Tensor, size: int, transforms: Mapping[str, Sequence[float]],
                       batch_size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features of one whole image's clean crop (D,) and of every transformed crop ({name: (P, D)})."""
    crops = [clean_crop(full, size)] + [transformed_crops(full, size, t, grid) for t, grid in transforms.items()]
    batch = torch.cat(crops)
    with torch.inference_mode():
        feats = torch.cat([net(normalise(batch[lo:lo + batch_size])).double()
                           for lo in range(0, len(batch), batch_size)]).cpu().numpy()
    out, at = {}, 1
    for t, grid in transforms.items():
        out[t] = feats[at:at + len(grid)]
        at += len(grid)
    return feats[0], out


def draw_train_positions(split: np.ndarray, hw: np.ndarray, n_images: int, seed: int, source: str) -> np.ndarray:
    """``n_images`` rows drawn by seed from the training images of the whole-image cache, sorted."""
    train = train_positions(split, hw)
    if n_images > len(train):
        raise ValueError(f"{CONFIG_KEY}.n_images={n_images} but {source} has only {len(train)} training images "
                         f"in its whole-image cache; set {CONFIG_KEY}.n_images to at most {len(train)}")
    return draw_sorted(train, n_images, seed)


def train_positions(split: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """Index rows of the training images the whole-image cache holds."""
    return np.flatnonzero((np.asarray(split) == "train") & (np.asarray(hw).min(1) > 0))


def clean_crop_features(net: Callable[[torch.Tensor], torch.Tensor], normalise: Callable[[torch.Tensor], torch.Tensor],
                        images: np.ndarray, hw: np.ndarray, positions: np.ndarray, size: int, batch_size: int,
                        device: str) -> Iterator[np.ndarray]:
    """Features (b, D) of the clean centre crops (``clean_crop``) of the cached whole images at
    ``positions``, ``batch_size`` images at a time: the view the transformed crops are compared in."""
    for lo in range(0, len(positions), batch_size):
        batch, sizes = full_batch(images, hw, positions[lo:lo + batch_size], device)
        crops = torch.cat([clean_crop(batch[k, :, :h, :w], size) for k, (h, w) in enumerate(sizes)])
        with torch.inference_mode():
            yield net(normalise(crops.float().div(255.0))).double().cpu().numpy()


def held_out_halves(n: int, seed: int) -> np.ndarray:
    """(n,) 0 or 1: which half of the ``n`` evaluated images each is in, drawn by ``seed``.

    Each image is whitened with statistics that leave its half out: an image inside the
    covariance sample lies in the span of the sample's large eigenvalues, its transformed copy
    does not, and with more feature dimensions than images (2,048 against a few hundred) that
    alone drives the whitened cosine towards 0. Halves, rather than leaving every evaluated
    image out, keep at least half of a small training split (Montgomery: 110 images, 100
    evaluated) in each fit.
    """
    half = np.zeros(n, dtype=np.int64)
    half[np.random.default_rng(seed).permutation(n)[:n // 2]] = 1
    return half


def grouped_moments(chunks: Iterable[np.ndarray], group: np.ndarray, groups: int) -> list[MomentSums]:
    """``MomentSums`` of the rows of each group (``group``: one per row, in chunk order), one shift
    shared by all (the first chunk's mean), so any of them can be added together."""
    sums, at = None, 0
    for chunk in chunks:
        if sums is None:
            shift = np.asarray(chunk, dtype=np.float64).mean(0)
            sums = [MomentSums(shift) for _ in range(groups)]
        labels = group[at:at + len(chunk)]
        for k in range(groups):
            sums[k].add(chunk[labels == k])
        at += len(chunk)
    if sums is None:
        raise ValueError("no training images to estimate the whitening from")
    return sums


def compare_held_out(whiteners: Mapping[int, Whitener], half: np.ndarray, clean: np.ndarray,
                     moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whitened cosine and distance (N, P) of each clean feature (N, D) against its P transformed
    ones (N, P, D), each image in the whitening of its half (``held_out_halves``)."""
    n, grid = moved.shape[:2]
    cos, dist = np.empty((n, grid)), np.empty((n, grid))
    for k, whitener in whiteners.items():
        rows = np.flatnonzero(half == k)
        c, d = whitener.compare(np.repeat(clean[rows], grid, axis=0), moved[rows].reshape(-1, moved.shape[-1]))
        cos[rows], dist[rows] = c.reshape(-1, grid), d.reshape(-1, grid)
    return cos, dist


def crop_view(short: int, size: int) -> str:
    """The preprocessing of the compared crops: the whole image's short side ``short``, centre crop ``size``."""
    return f"resize_short{short}_bicubic+center_crop{size}"


def evaluate_invariance(
    *, weights: str | os.PathLike, full_cache: str | os.PathLike, index: str | os.PathLike,
    out_rows: Mapping[str, str | os.PathLike], out_predictions: Mapping[str, str | os.PathLike], model: str,
    dataset: str, size: int, transforms: Mapping[str, Sequence[float]], n_images: int = 8,
    covariance: str = "ledoit_wolf", ridge: float = 1e-6, covariance_images: int | None = None, batch_size: int = 64,
    n_bootstrap: int = 1000, seed: int = 0, device: str = "auto",
) -> dict[str, np.ndarray]:
    """Synthetic-transform invariance of one (model, dataset): rows and per-image values per transform.

    ``out_rows`` / ``out_predictions``: transform name -> file, for every transform of
    ``transforms`` (name -> grid of values). ``size``: the model's input (the study's
    image_size). The whitening comes from the clean crops of the cache's training images
    (``covariance_images`` of them drawn by ``seed``, or all). Returns transform -> per-image
    whitened cosine.
    """
    check_transforms(transforms)
    missing = sorted(set(transforms) - set(out_rows) | set(transforms) - set(out_predictions))
    if missing:
        raise ValueError(f"no output file given for transform(s) {missing}")
    frame = read_index(index)
    images, hw = load_full_cache(full_cache, frame=frame)
    split = frame["split"].to_numpy(str)
    positions = draw_train_positions(split, hw, n_images, seed, f"dataset {dataset!r}")
    device = resolve_device(device)
    net, wmeta = frozen_backbone(weights, device)
    model_input = functools.partial(normalise, meta=wmeta)
    half = held_out_halves(len(positions), seed)
    pool = Whitener(covariance, ridge, covariance_images, seed).draw(train_positions(split, hw))
    group = np.full(len(pool), 2)  # 0, 1: in that half of the evaluated images; 2: not evaluated
    for k in (0, 1):
        group[np.isin(pool, positions[half == k])] = k
    sums = grouped_moments(clean_crop_features(net, model_input, images, hw, pool, size, batch_size, device),
                           group, 3)
    whiteners = {k: Whitener(covariance, ridge, covariance_images, seed).fit_sums(sums[2] + sums[1 - k])
                 for k in np.unique(half)}
    clean, moved = [], {t: [] for t in transforms}
    for pos in positions:
        full = full_batch(images, hw, np.array([pos]), device)[0][0].float().div(255.0)
        f0, ft = transform_features(net, model_input, full, size, transforms, batch_size)
        clean.append(f0)
        for t in transforms:
            moved[t].append(ft[t])
    clean = np.stack(clean)
    view = crop_view(int(hw[positions].min()), size)
    meta = run_meta(model=model, dataset=dataset, weights_meta=wmeta, index=frame, precision="fp32", size=size,
                    seed=seed)
    meta["preprocessing"] = meta["preprocessing"].replace(preprocessing_name(size), view)
    fitted = sorted({w.n_fitted_ for w in whiteners.values()})
    meta = _meta(meta, covariance=covariance, ridge=ridge,
                 shrinkage=float(np.mean([w.shrinkage_ for w in whiteners.values()])), n_images=n_images,
                 covariance_images=len(pool))
    labels = frame["label"].to_numpy(np.int64)[positions]
    whitening = (f"clean centre crops ({view}) of {len(pool)} training images of the whole-image cache, held out: "
                 f"each image whitened without its half of the {len(positions)} evaluated images "
                 f"({' and '.join(map(str, fitted))} images fitted)")
    result = {}
    for t, grid in transforms.items():
        cos, dist = compare_held_out(whiteners, half, clean, np.stack(moved[t]))  # (N, P) each
        extra = {"transform": t, "grid": list(grid), "cosine_by_value": cos.mean(0).round(6).tolist(),
                 "images_from": "whole-image cache (train split)", "applied": "before the centre crop",
                 "whitening_view": whitening, **preprocessing_note(wmeta, t)}
        write_measure(out_rows[t], out_predictions[t], meta=meta, setting=t, positions=positions, labels=labels,
                      cosine=cos.mean(1), mahalanobis=dist.mean(1), n_bootstrap=n_bootstrap, seed=seed, extra=extra)
        result[t] = cos.mean(1)
    return result


def preprocessing_note(wmeta: Any, transform: str) -> dict[str, str]:
    """``invariant_by_preprocessing`` where the model's own preprocessing undoes ``transform``.

    A histogram-equalised model (``normalisation: histeq``) equalises each transformed crop,
    which undoes a monotone map of its grey values (brightness, contrast): its cosine is
    about 1 by construction, whatever its features. Measured as the model is used, but marked.
    """
    if getattr(wmeta, "normalisation", "") == "histeq" and transform in MONOTONE_TRANSFORMS:
        return {"invariant_by_preprocessing": "per-image histogram equalisation undoes this monotone grey-value map"}
    return {}


def _meta(feature_meta: Mapping[str, Any], **settings: Any) -> dict[str, Any]:
    meta = dict(feature_meta)
    meta.update(protocol=PROTOCOL, precision="fp32", **settings)
    return meta


def write_measure(out_rows, out_predictions, *, meta, setting, positions, labels, cosine, mahalanobis,
                  n_bootstrap, seed, extra) -> None:
    """The two rows (mean over images with bootstrap CIs) and the per-image values of one setting."""
    details = {"covariance": meta["covariance"], "ridge": meta["ridge"], "shrinkage": round(meta["shrinkage"], 6),
               "covariance_images": meta["covariance_images"], "images": len(positions), **extra}
    write_values(rows=out_rows, predictions=out_predictions, protocol=PROTOCOL, setting=setting,
                 values={"cosine": cosine, "mahalanobis": mahalanobis}, positions=positions, labels=labels,
                 meta=meta, seed=seed, n_bootstrap=n_bootstrap, details=details)


# ---------------------------------------------------------------- multi-view pairs

def multiview_pairs(frame, source: str = "the dataset") -> np.ndarray:
    """(n, 2) index rows of test-split pairs: two views of one ``view_group`` with equal labels.

    The index carries ``view_group`` (CheXpert: patient/study; EyePACS: patient) and
    ``view`` (frontal/lateral; left/right); the first image of each view in a group is used.
    """
    if "view_group" not in frame.columns or "view" not in frame.columns or frame["view_group"].isna().all():
        raise ValueError(f"{source} carries no views (index columns view_group, view); multi-view pairs exist for "
                         f"the kinds {' and '.join(MULTIVIEW_KINDS)}: remove `multiview` from this dataset")
    test = frame[(frame["split"] == "test") & frame["view_group"].notna()].reset_index().sort_values("index")
    pairs = []
    for _, group in test.groupby("view_group", sort=True):
        firsts = group.groupby("view", sort=True).first()
        if len(firsts) == 2 and firsts["label"].nunique() == 1:
            pairs.append(firsts["index"].to_numpy())
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def evaluate_multiview(
    *, features: str | os.PathLike, index: str | os.PathLike, out_rows: str | os.PathLike,
    out_predictions: str | os.PathLike, dataset: str, n_images: int = 8, covariance: str = "ledoit_wolf",
    ridge: float = 1e-6, covariance_images: int | None = None, n_bootstrap: int = 1000, seed: int = 0,
) -> np.ndarray:
    """Multi-view invariance of one (model, dataset) from the features stage: ``n_images`` seeded pairs."""
    frame, fs = read_index(index), load_features(features)
    pairs = multiview_pairs(frame, f"dataset {dataset!r} ({index})")
    if n_images > len(pairs):
        raise ValueError(f"{CONFIG_KEY}.n_images={n_images} but dataset {dataset!r} has only {len(pairs)} "
                         f"multi-view test pairs; set {CONFIG_KEY}.n_images to at most {len(pairs)}")
    available = len(pairs)
    pairs = pairs[draw_sorted(available, n_images, seed)]
    whitener = Whitener(covariance, ridge, covariance_images, seed)
    fitted = whitener.draw(np.flatnonzero(frame["split"].to_numpy(str) == "train"))  # the test pairs held out
    whitener.fit_chunks(read_rows(fs.features, fitted[lo:lo + _ROWS]) for lo in range(0, len(fitted), _ROWS))
    cos, dist = whitener.compare(fs.features[pairs[:, 0]], fs.features[pairs[:, 1]])
    meta = _meta(fs.meta, covariance=covariance, ridge=ridge, shrinkage=whitener.shrinkage_, n_images=n_images,
                 covariance_images=whitener.n_fitted_)
    meta["precision"] = fs.meta.get("precision", "fp32")
    views = sorted(set(frame["view"].dropna()))
    write_measure(out_rows, out_predictions, meta=meta, setting=MULTIVIEW, positions=pairs[:, 0],
                  labels=frame["label"].to_numpy(np.int64)[pairs[:, 0]], cosine=cos, mahalanobis=dist,
                  n_bootstrap=n_bootstrap, seed=seed,
                  extra={"transform": MULTIVIEW, "views": views, "pairs_available": available,
                         "second_rows": pairs[:, 1].tolist(),
                         "whitening_view": f"features stage ({fs.meta.get('preprocessing', '')}) of "
                                           f"{whitener.n_fitted_} training images (the test pairs held out), "
                                           "the view both images are compared in"})
    return cos
