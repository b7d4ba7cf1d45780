"""Checks of a protocol's settings that the schema cannot express, torch-free.

The study runs them when the DAG is built (each protocol's record names its check), so a
bad setting fails before any job; the protocol runs them again before its own work.
Each check takes the protocol's config section as keywords; keys it does not check
(``n_bootstrap``, ``lpips``, ...) are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medtransfer.runtime import PRECISIONS

SALIENCY_KEY = "protocols.saliency"
RECONSTRUCTION_KEY = "protocols.reconstruction"
DOWNSAMPLING = ("stride", "avg")  # the reconstruction generator's choices (its SkipConfig)
OUTPUTS = ("sigmoid", "clip")
INVARIANCE_KEY = "protocols.invariance"
#: The invariance protocol's synthetic transforms, in their settings' order (the registry
#: re-exports them; they live here so that the check below needs no import of it).
TRANSFORMS = ("rotation", "hflip", "vflip", "hue", "brightness", "contrast", "translation", "scale", "blur")

# Allowed grid values of the invariance transforms whose domain is bounded: (test, what is allowed).
# Every other transform takes any number. The identity of each: rotation 0, hflip / vflip 0,
# hue 0, brightness 1, contrast 1, translation 0, scale 1, blur 0.
_TRANSFORM_VALUES = {
    "hflip": (lambda v: v in (0, 1), "0 (the identity) or 1 (mirrored)"),
    "vflip": (lambda v: v in (0, 1), "0 (the identity) or 1 (mirrored)"),
    "hue": (lambda v: -0.5 <= v <= 0.5, "a hue shift in turns from -0.5 to 0.5 (0: the identity)"),
    "brightness": (lambda v: v >= 0, "a factor of at least 0 (1: the identity)"),
    "contrast": (lambda v: v >= 0, "a factor of at least 0 (1: the identity)"),
    "scale": (lambda v: v > 0, "a zoom factor above 0 (1: the identity)"),
    "blur": (lambda v: v >= 0, "a Gaussian sigma of at least 0 pixels (0: the identity)"),
}


def _positive_integers(key: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{key}.{name} must be a positive integer, got {value!r}")


def no_check(**settings: Any) -> None:
    """For protocols whose settings the schema checks completely."""


def check_transforms(transforms: Mapping[str, Sequence[float]]) -> None:
    """Unknown transform names, empty grids and values outside a transform's domain fail, naming them."""
    unknown = sorted(set(transforms) - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"{INVARIANCE_KEY}.transforms: unknown transform(s) {unknown}; allowed: {list(TRANSFORMS)}")
    empty = [t for t, grid in transforms.items() if not list(grid)]
    if empty:
        raise ValueError(f"{INVARIANCE_KEY}.transforms: {empty} have no grid values; give at least one each")
    for name, (allowed, what) in _TRANSFORM_VALUES.items():
        bad = [v for v in transforms.get(name, ()) if not allowed(v)]
        if bad:
            raise ValueError(f"{INVARIANCE_KEY}.transforms.{name}: {bad} not allowed; each value must be {what}")


def check_invariance(*, transforms: Mapping[str, Sequence[float]], **_unchecked: Any) -> None:
    """Raise, naming the transform and its allowed values, before any work is done."""
    check_transforms(transforms)


def check_saliency(*, input_size: int, crop_size: int, window: int, stride: int, n_images: int,
                   batch_size: int, **_unchecked: Any) -> None:
    """Raise, naming the config key and what would be allowed, before any work is done."""
    _positive_integers(SALIENCY_KEY, input_size=input_size, crop_size=crop_size, window=window, stride=stride,
                       n_images=n_images, batch_size=batch_size)
    if window > input_size or crop_size > input_size:
        raise ValueError(f"{SALIENCY_KEY}: window ({window}) and crop_size ({crop_size}) must be at most "
                         f"input_size ({input_size})")
    if stride > window or (input_size - window) % stride:
        raise ValueError(f"{SALIENCY_KEY}: every pixel must be covered by a window: stride ({stride}) must be at "
                         f"most window ({window}) and divide input_size - window ({input_size - window}); "
                         f"allowed strides here: {[s for s in range(1, window + 1) if (input_size - window) % s == 0]}")


def check_reconstruction(*, steps: int, lr: float, n_images: int, precision: str, batch_size: int | None = None,
                         downsample: str = "stride", output: str = "sigmoid", **_unchecked: Any) -> None:
    """Raise, naming the config key, before any work is done."""
    _positive_integers(RECONSTRUCTION_KEY, steps=steps, n_images=n_images)
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size <= 0):
        raise ValueError(f"{RECONSTRUCTION_KEY}.batch_size must be a positive integer, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"{RECONSTRUCTION_KEY}.lr must be > 0, got {lr!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    for key, value, allowed in (("downsample", downsample, DOWNSAMPLING), ("output", output, OUTPUTS)):
        if value not in allowed:
            raise ValueError(f"{RECONSTRUCTION_KEY}.{key} {value!r} is unknown; expected one of {list(allowed)}")
