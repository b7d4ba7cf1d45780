"""Classification metrics with seeded, vectorised bootstrap confidence intervals.

Every many-shot metric is computed from a matrix of bootstrap *counts* (how often
each test image appears in a resample, one row per resample). The point estimate is
the same code with a single row of ones, so a metric and its CI can never disagree
in definition, and two models scored with the same counts are paired exactly
(compare.py relies on this).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "auroc")
# Cap on (resamples x test images) held at once: ~40 MB of int64 counts.
_CHUNK_CELLS = 5_000_000


@dataclass(frozen=True)
class MetricValue:
    """A metric with its 95% CI; ``note`` says why a value is NaN or partial."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    note: str = ""


def check_inputs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``probs`` (n, C) and integer ``labels`` (n,) in 0..C-1."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels):
        raise ValueError(f"expected probs (n, C) and labels (n,), got {probs.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("no test samples: metrics need at least one labelled prediction")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1} (one column of probs per class), "
                         f"got range {labels.min()}..{labels.max()}")
    return probs, labels


def resample_counts(n: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) count matrices, n_bootstrap rows in total, from seeded index draws.

    The chunking depends only on ``n`` and ``n_bootstrap``, so the same seed gives the
    same resamples for every model scored on the same ``n`` test images.
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0 (0: no confidence intervals), got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_bootstrap, _CHUNK_CELLS // max(n, 1)))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        # counts[r, i] = how many times image i was drawn in resample r
        flat = (idx + n * np.arange(b)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n)


def _accuracy(probs: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    correct = (probs.argmax(1) == labels).astype(np.float64)
    return counts @ correct / counts.sum(1)


def _balanced_accuracy(probs: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in each resample (sklearn's convention)."""
    correct = probs.argmax(1) == labels
    recalls = []
    for c in range(probs.shape[1]):
        member = labels == c
        if not member.any():
            continue
        total = counts @ member.astype(np.float64)
        hits = counts @ (member & correct).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(total > 0, hits / total, np.nan))
    return np.nanmean(np.stack(recalls), axis=0)


def _binary_auroc(scores: np.ndarray, positive: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC per count row; ties count one half.

    Scores are grouped into distinct values; for each group the positives beat every
    negative of a lower group and tie with the negatives of their own group.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = counts[:, order].astype(np.float64)
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _auroc(probs: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Binary: positive-class probability; multi-class: macro one-vs-rest."""
    if probs.shape[1] == 2:
        return _binary_auroc(probs[:, 1], labels == 1, counts)
    per_class = [_binary_auroc(probs[:, c], labels == c, counts) for c in range(probs.shape[1])]
    # A resample missing a class has no defined macro AUROC: NaN, dropped from the CI.
    return np.mean(np.stack(per_class), axis=0)


_FUNCS = {"accuracy": _accuracy, "balanced_accuracy": _balanced_accuracy, "auroc": _auroc}


def metric_from_counts(metric: str, probs: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The metric for each row of ``counts`` (b, n): one value per resample."""
    if metric not in _FUNCS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    return _FUNCS[metric](probs, labels, counts)


def absent_classes(probs: np.ndarray, labels: np.ndarray) -> list[int]:
    """Classes (columns of ``probs``) with no test sample."""
    return sorted(set(range(probs.shape[1])) - set(int(v) for v in np.unique(labels)))


def _undefined_note(metric: str, probs: np.ndarray, labels: np.ndarray, class_names: list[str] | None) -> str:
    missing = absent_classes(probs, labels)
    if not missing:
        return ""
    names = [class_names[c] if class_names else str(c) for c in missing]
    if metric == "auroc":
        return f"auroc undefined: class(es) {names} absent from the test set"
    if metric == "balanced_accuracy":
        return f"mean over present classes: class(es) {names} absent from the test set"
    return ""


def concat(chunks: list[np.ndarray]) -> np.ndarray:
    """Bootstrap values of all chunks (empty when ``n_bootstrap`` was 0)."""
    return np.concatenate(chunks) if chunks else np.empty(0)


def percentile_ci(values: np.ndarray) -> tuple[float, float]:
    """95% percentile interval, ignoring NaN resamples (all NaN -> NaN)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def mean_with_ci(values: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, float, float]:
    """Mean of per-image ``values`` and its 95% percentile-bootstrap interval (resampling images)."""
    values = np.asarray(values, dtype=np.float64)
    means = [counts @ values / counts.sum(1) for counts in resample_counts(len(values), n_bootstrap, seed)]
    low, high = percentile_ci(concat(means))
    return float(values.mean()), low, high


def bootstrap_metrics(
    probs: np.ndarray, labels: np.ndarray, *, metrics: tuple[str, ...] = METRICS,
    n_bootstrap: int = 1000, seed: int = 0, class_names: list[str] | None = None,
) -> dict[str, MetricValue]:
    """Point value and seeded 95% percentile bootstrap CI of each metric on the test set.

    All metrics share the same resamples. A metric undefined on the full test set (AUROC
    with a class absent, any metric of non-finite probabilities) is NaN with the reason in
    ``note``; resamples where a metric is undefined are left out of its CI.
    ``n_bootstrap=0`` gives NaN intervals.
    """
    probs, labels = check_inputs(probs, labels)
    if not np.isfinite(probs).all():
        nan, note = float("nan"), "non-finite probabilities (a diverged model?): metric undefined"
        return {m: MetricValue(nan, nan, nan, len(labels), note) for m in metrics}
    ones = np.ones((1, len(labels)), dtype=np.int64)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for counts in resample_counts(len(labels), n_bootstrap, seed):
        for m in metrics:
            samples[m].append(metric_from_counts(m, probs, labels, counts))
    out = {}
    for m in metrics:
        note = _undefined_note(m, probs, labels, class_names)
        value = float(metric_from_counts(m, probs, labels, ones)[0])
        if not math.isfinite(value):
            out[m] = MetricValue(float("nan"), float("nan"), float("nan"), len(labels), note)
            continue
        out[m] = MetricValue(value, *percentile_ci(concat(samples[m])), len(labels), note)
    return out


def episode_ci(accuracies: np.ndarray) -> MetricValue:
    """Few-shot mean accuracy with the published CI: mean -/+ 1.96 * std / sqrt(episodes).

    ``std`` is numpy's default (population, ddof=0), as in the published code.
    """
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.ndim != 1 or acc.size == 0:
        raise ValueError(f"expected a non-empty 1-d array of episode accuracies, got shape {acc.shape}")
    mean = float(acc.mean())
    half = 1.96 * float(acc.std()) / math.sqrt(acc.size)
    return MetricValue(mean, mean - half, mean + half, int(acc.size))


SELECTION_METRICS = ("accuracy", "balanced_accuracy")


def selection_score(predicted: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """Score of hard predictions for model selection (C, finetune search, early stopping).

    ``predicted`` (n,) or (n, K) for K candidates at once; returns a scalar array or (K,).
    ``balanced_accuracy`` is the mean recall over the classes present in ``labels``
    (the published selection metric for diabetic_retinopathy, docs/protocols.md).
    """
    if metric not in SELECTION_METRICS:
        raise ValueError(f"unknown selection metric {metric!r}; expected one of {SELECTION_METRICS}")
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    hits = predicted == (labels if predicted.ndim == 1 else labels[:, None])
    if metric == "accuracy":
        return hits.mean(0)
    return np.mean([hits[labels == c].mean(0) for c in np.unique(labels)], axis=0)
