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
from typing import TYPE_CHECKING

from medtransfer import paths

if TYPE_CHECKING:  # the type only: study imports the config and the adapters, not needed here
    from medtransfer.study import Study

from medtransfer.data.adapters import ADAPTERS

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


# ---------------------------------------------------------------- measured curves (bench/scale.py)


@dataclass(frozen=True)
class Curve:
    """How one rule's job grows with its dataset, from ``bench/scale.py`` (docs/performance.md, Scale).

    ``floor_mb``: what the job holds before its first image (interpreter, libraries, the model
    and, on a GPU node, the CUDA context; the bench's tiny backbone on a CPU needs less).
    ``mb``: the job's own growth at ``REFERENCE_IMAGES`` images (peak - base, 2,048-d
    features), taken as linear in the images. ``seconds``: its wall time there on the 2-core
    CPU, growing as images ** ``exponent`` (the slope of the two largest sizes, rounded up;
    kNN's n_test x n_train similarities: about 2); 0 where a GPU rate prices the time instead.
    """

    floor_mb: int
    mb: float
    seconds: float = 0.0
    exponent: float = 1.0


REFERENCE_IMAGES = 223_414  # CheXpert, the published study's largest dataset
BENCH_LINEAR_ITERATIONS = 20  # bench/scale.py's L-BFGS iterations: a probe's time is per iteration

#: Documented images per dataset kind, from each adapter's ``typical_images`` (kinds without
#: one left out): the size of a job whose index is not built yet, and the cost estimate's for
#: studies whose data is not on this machine.
TYPICAL_IMAGES = {kind: a.typical_images for kind, a in ADAPTERS.items() if a.typical_images}
MEMORY_HEADROOM = 1.5
MIN_MB = 1000

CURVES: dict[str, Curve] = {  # own MB and seconds: bench/scale.py at 223,414 images, rounded up
    "index_dataset": Curve(1000, 250, 7),  # CheXpert tree 247 MB, 4.2 s; a users' CSV 183 MB, 6.6 s
    "cache_images": Curve(1000, 250, 53),
    "cache_full_images": Curve(1000, 300, 71),
    "extract_features": Curve(8000, 2500),  # 617 MB at the bench's 512-d, the features x 4 at 2,048
    "linear_probe": Curve(1500, 3000, 45),  # 20 L-BFGS iterations (BENCH_LINEAR_ITERATIONS)
    "knn": Curve(1500, 2300, 610, 2.3),  # every test image against every training image
    "sample_episodes": Curve(1000, 150, 2),
    "fewshot": Curve(1500, 500, 4),
    "finetune": Curve(16000, 600),
    "compare_models": Curve(1500, 200, 6),
    "invariance": Curve(8000, 250),  # the whitening; the forward passes are in the floor
    "multiview_invariance": Curve(1500, 350, 66),
}


def _mb(mb: float, attempt: int) -> int:
    return max(MIN_MB, math.ceil(mb / 100) * 100) * 2 ** (max(attempt, 1) - 1)


def memory_mb(rule: str, n_images: int, *, attempt: int = 1) -> int:
    """``mem_mb`` for a job of ``rule`` on ``n_images`` images: its curve with headroom, doubled per retry."""
    curve = CURVES[rule]
    return _mb(MEMORY_HEADROOM * (curve.floor_mb + curve.mb * n_images / REFERENCE_IMAGES), attempt)


def measured_seconds(rule: str, n_images: int, *, work: float = 1.0) -> float:
    """The rule's wall seconds on ``n_images`` images from its curve (``work``: a multiple of
    the bench's work per image, e.g. the linear probe's max_iter over the bench's 20)."""
    curve = CURVES[rule]
    return work * curve.seconds * (max(n_images, 1) / REFERENCE_IMAGES) ** curve.exponent


def measured(rule: str, n_images: int, *, attempt: int = 1, work: float = 1.0) -> Request:
    """The request of a CPU-bound rule, time and memory both from its curve."""
    return Request(_minutes(measured_seconds(rule, n_images, work=work), attempt),
                   memory_mb(rule, n_images, attempt=attempt))


def _scale(image_size: int) -> float:
    """Work per image relative to 224 px (convolutions scale with the pixel count)."""
    return max(image_size * image_size / REFERENCE_PIXELS, 0.05)


# ---------------------------------------------------------------- work at a rate (seconds)
# Shared with medtransfer.reporting.cost, which prices the same work at measured GPU rates.


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


def invariance_seconds(n_images: int = 0, *, image_size: int, settings: dict, rates: dict = RATES) -> float:
    """One forward pass per image for its clean crop and for each grid value of each transform,
    plus one per clean crop the whitening is estimated on: ``covariance_images``, or every
    training image of a dataset of ``n_images`` (taken as 80 % of them)."""
    values = sum(len(grid) for grid in settings["transforms"].values())
    whitening = settings.get("covariance_images") or round(0.8 * n_images)
    return (settings["n_images"] * (values + 1) + min(whitening, round(0.8 * n_images))) * _scale(
        image_size) / rates["extract"]


# ---------------------------------------------------------------- cluster requests


def cache(n_images: int, *, threads: int, attempt: int = 1, rule: str = "cache_images") -> Request:
    """Decoding real files is slower than the bench's tiny ones: the larger of the two times."""
    seconds = max(cache_seconds(n_images, threads=threads), measured_seconds(rule, n_images))
    return Request(_minutes(seconds, attempt), memory_mb(rule, n_images, attempt=attempt))


def extract(n_images: int, *, image_size: int, attempt: int = 1) -> Request:
    return Request(_minutes(extract_seconds(n_images, image_size=image_size), attempt),
                   memory_mb("extract_features", n_images, attempt=attempt))


def finetune(n_images: int, *, image_size: int, settings: dict, attempt: int = 1) -> Request:
    seconds = finetune_seconds(n_images, image_size=image_size, settings=settings)
    return Request(_minutes(seconds, attempt), memory_mb("finetune", n_images, attempt=attempt))


def reconstruct(*, image_size: int, settings: dict, attempt: int = 1) -> Request:
    seconds = reconstruct_seconds(image_size=image_size, settings=settings)
    return Request(_minutes(seconds, attempt), 8000 + 500 * settings["n_images"])


def score(*, settings: dict, attempt: int = 1) -> Request:
    return Request(_minutes(score_seconds(settings=settings), attempt), 4000)


def saliency(*, settings: dict, attempt: int = 1) -> Request:
    return Request(_minutes(saliency_seconds(settings=settings), attempt), 8000)


def invariance(n_images: int, *, image_size: int, settings: dict, attempt: int = 1) -> Request:
    """Forward passes at a GPU rate, plus the whitening's pass over every feature (CPU curve)."""
    seconds = invariance_seconds(n_images, image_size=image_size, settings=settings)
    seconds += measured_seconds("multiview_invariance", n_images)
    return Request(_minutes(seconds, attempt), memory_mb("invariance", n_images, attempt=attempt))


def dataset_images(study: Study, dataset: str) -> int:
    """Images in ``dataset``'s index; before it is built, the documented size of its kind."""
    n_images = count_images(paths.INDEX.format(dataset=dataset))
    return n_images or TYPICAL_IMAGES.get(study.datasets[dataset]["kind"], 0)


def estimate(rule: str, study: Study, dataset: str | None = None, *, threads: int = 1, attempt: int = 1) -> Request:
    """The request of one job of ``rule`` (on ``dataset`` for the image-sized rules), from the
    study's settings; the workflow re-evaluates it once the job's inputs (the index) exist."""
    size = study.config["image_size"]
    if rule == "saliency":
        return saliency(settings=study.settings("saliency"), attempt=attempt)
    if rule == "reconstruct":
        return reconstruct(image_size=size, settings=study.settings("reconstruction"), attempt=attempt)
    if rule == "score_reconstruction":
        return score(settings=study.settings("reconstruction"), attempt=attempt)
    if dataset is None:
        raise ValueError(f"rule {rule!r} is sized by its dataset's images: pass dataset=")
    n_images = dataset_images(study, dataset)
    if rule == "invariance":
        return invariance(n_images, image_size=size, settings=study.settings("invariance"), attempt=attempt)
    if rule in ("cache_images", "cache_full_images"):
        return cache(n_images, threads=threads, attempt=attempt, rule=rule)
    if rule == "extract_features":
        return extract(n_images, image_size=size, attempt=attempt)
    if rule == "finetune":
        return finetune(n_images, image_size=size, settings=study.settings("finetune"), attempt=attempt)
    if rule == "linear_probe":
        work = study.settings_or_defaults("linear")["max_iter"] / BENCH_LINEAR_ITERATIONS
        return measured(rule, n_images, attempt=attempt, work=work)
    return measured(rule, n_images, attempt=attempt)
