"""What several protocols share: the frozen backbone and the seeded draw of images.

The cache-vs-index check (``data.cache.load_indexed_cache``) and autocast
(``runtime.autocast``) live below the protocols, because the features stage uses them too.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from medtransfer.weights.backbones import WeightsMeta, load_weights


def frozen_backbone(weights: str | os.PathLike, device: str, *,
                    channels_last: bool = False) -> tuple[nn.Module, WeightsMeta]:
    """The backbone of ``weights`` on ``device``, in eval mode, with no parameter to train.

    Eval mode: BatchNorm uses its running statistics, so an image's feature does not depend
    on the batch (the published saliency code left it in train mode). ``channels_last``:
    the memory format that makes bf16 convolutions fast on a GPU.
    """
    net, meta = load_weights(weights)
    for p in net.parameters():
        p.requires_grad_(False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return net.to(device, memory_format=fmt).eval(), meta


def draw_sorted(pool: int | np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` members of ``pool`` (an array, or ``range(pool)`` for an int) drawn by ``seed``
    without replacement, sorted: the same draw for every model of a dataset."""
    return np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))


def draw_test_positions(split: np.ndarray, n_images: int, seed: int, key: str,
                        source: str = "the dataset") -> np.ndarray:
    """``n_images`` index rows of the test split, drawn by ``seed`` and sorted.

    ``key``: the config section whose ``n_images`` is named when the split is too small.
    The draw depends only on the split and the seed, so every model of a dataset (and the
    saliency and reconstruction protocols alike) sees the same images.
    """
    test = np.flatnonzero(np.asarray(split) == "test")
    if n_images > len(test):
        raise ValueError(f"{key}.n_images={n_images} but {source} has only {len(test)} test images; "
                         f"set {key}.n_images to at most {len(test)}")
    return draw_sorted(test, n_images, seed)
