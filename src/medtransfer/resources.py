"""Cluster resources (runtime, memory) for the heavy rules, sized from their inputs and settings.

A scheduler kills a job that outlives its ``runtime`` and queues a long request behind short
ones, so one fixed request per rule is wrong both ways: a CheXpert finetune needs hours, a demo
one a minute. Each estimate here is work / rate with conservative rates (slower than the
measured anchors in docs/performance.md), doubled for headroom, plus a fixed start-up cost,
and it doubles again with each retry (``attempt``), so a job killed for time gets more.

Torch-free: the workflow calls these while it builds the DAG.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

#: Conservative throughputs (items per second on one GPU, decoding per CPU core). docs/performance.md
RATES = {
    "decode": 50.0,  # image files decoded and resized per second per core (JPEG/PNG/DICOM)
    "extract": 400.0,  # ResNet-50 fp32 forward, 224 px, from the decoded cache
    "train": 150.0,  # ResNet-50 fp32 forward + backward, 224 px
    "reconstruct": 8.0,  # deep-image-prior steps per second for one 224 px image
    "score": 20.0,  # images scored per second (LPIPS x3, PSNR, SSIM)
}
START_MINUTES = 5  # interpreter, imports, loading weights
HEADROOM = 2.0
REFERENCE_PIXELS = 224 * 224


@dataclass(frozen=True)
class Request:
    runtime: int  # minutes
    mem_mb: int


# (path, size, mtime_ns) -> rows. The workflow sizes every job of the heavy rules from its
# dataset's index: uncached, one dry run of the published study reads its 11 indexes 638
# times (CheXpert's 223,414 rows each time), a third of its time (docs/performance.md,
# "Scale"). A rewritten index has a new size or mtime, so it is counted again.
_COUNTS: dict[tuple[str, int, int], int] = {}


def count_images(index: str | os.PathLike) -> int:
    """Images in a dataset index (its CSV rows); 0 before the index exists."""
    try:
        stat = os.stat(index)
        key = (os.path.abspath(index), stat.st_size, stat.st_mtime_ns)
        if key not in _COUNTS:
            with open(index, "rb") as f:
                _COUNTS[key] = max(0, sum(1 for _ in f) - 1)
        return _COUNTS[key]
    except FileNotFoundError:
        return 0


def _minutes(seconds: float, attempt: int) -> int:
    return math.ceil(START_MINUTES + HEADROOM * seconds / 60) * 2 ** (max(attempt, 1) - 1)


def _scale(image_size: int) -> float:
    """Work per image relative to 224 px (convolutions scale with the pixel count)."""
    return max(image_size * image_size / REFERENCE_PIXELS, 0.05)


# ---------------------------------------------------------------- work at a rate (seconds)
# Shared with medtransfer.cost, which prices the same work at measured GPU rates.


def cache_seconds(n_images: int, *, threads: int = 1, rates: dict = RATES) -> float:
    return n_images / (rates["decode"] * max(threads, 1))


def extract_seconds(n_images: int, *, image_size: int, rates: dict = RATES) -> float:
    return n_images * _scale(image_size) / rates["extract"]


def finetune_seconds(n_images: int, *, image_size: int, settings: dict, rates: dict = RATES) -> float:
    """Training steps plus an evaluation pass over the data at every ``eval_every`` steps, once
    per (lr, weight decay) pair when the search is on."""
    steps, batch = settings["steps"], settings["batch_size"]
    evaluations = steps // max(settings["eval_every"], 1) + 1
    runs = 1
    if settings.get("search"):  # a null grid is the published one: 4 lrs x 5 weight decays (finetune.py)
        runs = len(settings.get("lr_grid") or range(4)) * len(settings.get("wd_grid") or range(5))
    return runs * _scale(image_size) * (steps * batch / rates["train"] + evaluations * n_images / rates["extract"])


def reconstruct_seconds(*, image_size: int, settings: dict, rates: dict = RATES) -> float:
    return settings["n_images"] * settings["steps"] * _scale(image_size) / rates["reconstruct"]


def score_seconds(*, settings: dict, rates: dict = RATES) -> float:
    return settings["n_images"] / rates["score"]


def saliency_seconds(*, settings: dict, rates: dict = RATES) -> float:
    """One forward pass per occluded copy: every window position of every image."""
    side = (settings["input_size"] - settings["window"]) // settings["stride"] + 1
    return settings["n_images"] * side * side * _scale(settings["input_size"]) / rates["extract"]


def invariance_seconds(*, image_size: int, settings: dict, rates: dict = RATES) -> float:
    """One forward pass per image for its clean crop and for each grid value of each transform."""
    values = sum(len(grid) for grid in settings["transforms"].values())
    return settings["n_images"] * (values + 1) * _scale(image_size) / rates["extract"]


# ---------------------------------------------------------------- cluster requests


def cache(n_images: int, *, threads: int, attempt: int = 1) -> Request:
    return Request(_minutes(cache_seconds(n_images, threads=threads), attempt), 4000)


def extract(n_images: int, *, image_size: int, attempt: int = 1) -> Request:
    return Request(_minutes(extract_seconds(n_images, image_size=image_size), attempt), 8000)


def finetune(n_images: int, *, image_size: int, settings: dict, attempt: int = 1) -> Request:
    seconds = finetune_seconds(n_images, image_size=image_size, settings=settings)
    return Request(_minutes(seconds, attempt), 16000)


def reconstruct(*, image_size: int, settings: dict, attempt: int = 1) -> Request:
    seconds = reconstruct_seconds(image_size=image_size, settings=settings)
    return Request(_minutes(seconds, attempt), 8000 + 500 * settings["n_images"])


def score(*, settings: dict, attempt: int = 1) -> Request:
    return Request(_minutes(score_seconds(settings=settings), attempt), 4000)


def saliency(*, settings: dict, attempt: int = 1) -> Request:
    return Request(_minutes(saliency_seconds(settings=settings), attempt), 8000)


def invariance(*, image_size: int, settings: dict, attempt: int = 1) -> Request:
    return Request(_minutes(invariance_seconds(image_size=image_size, settings=settings), attempt), 8000)
