"""Paired comparison of every model against the best one, per (dataset, protocol).

Image-paired protocols (linear, finetune, knn) and per-image values (reconstruction's
LPIPS, PSNR, SSIM; lower LPIPS is better): paired bootstrap over the shared test images;
every model is scored on the *same* resamples (metrics.resample_counts with one seed),
so the interval is that of the difference, not of two independent scores. Few-shot:
paired over the shared stored episodes, mean difference -/+ 1.96 * std / sqrt(E) (the
published CI formula applied to per-episode differences) with a normal-approximation p.

The best model is picked on the same test set it is then compared on, so "best" is
itself a noisy choice; the p-values of the m - 1 comparisons against it are corrected
for multiple comparisons with Holm's step-down method (``p_holm``), and ``differs``
uses the corrected value. What is paired over comes from the protocol's registration
(``registry.py``); the inputs are the protocol's rows and :class:`Predictions` files,
which name their own model, so nothing is matched by position.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from medtransfer import protocols as registry
from medtransfer.metrics import concat, metric_from_counts, percentile_ci, resample_counts
from medtransfer.results import Predictions, make_row, read_rows, write_rows

PROVENANCE_KEYS = ("weights_sha256", "weights_demo", "weights_random", "split", "precision", "preprocessing")
ALPHA = 0.05


@dataclass(frozen=True)
class Diff:
    """One model's difference to the best: value, 95% CI, two-sided p and sample count."""

    value: float
    ci_low: float
    ci_high: float
    p: float
    n: int


def _row_sources(paths: list[str | os.PathLike], protocol: str, dataset: str) -> dict[str, tuple[str, dict]]:
    """model -> (setting, provenance meta) from the models' rows files of this protocol and dataset."""
    out: dict[str, tuple[str, dict]] = {}
    for path in paths:
        frame = read_rows([path])
        frame = frame[(frame["protocol"] == protocol) & (frame["dataset"] == dataset)]
        if frame.empty:
            raise ValueError(f"{path} has no rows for protocol {protocol!r} and dataset {dataset!r}; "
                             "pass the rows CSVs of this protocol and dataset")
        for model, part in frame.groupby("model"):
            first = part.iloc[0]
            meta = {k: first[k] for k in PROVENANCE_KEYS}
            meta["weights_demo"] = bool(meta["weights_demo"])
            meta["weights_random"] = bool(meta["weights_random"])
            out[str(model)] = (str(first["setting"]), meta)
    return out


def _predictions(paths: list[str | os.PathLike], protocol: str, dataset: str) -> dict[str, Predictions]:
    """model -> its predictions; each file must be of this protocol and dataset, one per model."""
    out: dict[str, Predictions] = {}
    for path in paths:
        pred = Predictions.load(path)
        if (pred.protocol, pred.dataset) != (protocol, dataset):
            raise ValueError(f"{path} holds {pred.protocol}/{pred.dataset} predictions, not {protocol}/{dataset}")
        if pred.model in out:
            raise ValueError(f"two predictions files for model {pred.model!r} in {protocol}/{dataset}; pass one each")
        out[pred.model] = pred
    return out


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN)."""
    finite = sorted((p, k) for k, p in p_values.items() if math.isfinite(p))
    out = {k: float("nan") for k in p_values}
    running, m = 0.0, len(finite)
    for rank, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[k] = running
    return out


def _check_same(preds: dict[str, Predictions], keys: tuple[str, ...], what: str) -> None:
    names = sorted(preds)
    ref = preds[names[0]]
    for name in names[1:]:
        for key in keys:
            if key not in preds[name].arrays or not np.array_equal(preds[name][key], ref[key]):
                raise ValueError(f"models {names[0]!r} and {name!r} were scored on different {what} "
                                 f"({key!r} differs); re-run both on the same {what} before comparing")


def _best(values: dict[str, float], better: int = 1) -> str:
    """Best finite value (highest, or lowest with ``better=-1``); ties go to the first name in sorted order."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if not finite:
        raise ValueError(f"no model has a defined value of the metric ({values}); compare on another metric")
    return max(sorted(finite), key=lambda k: better * finite[k])


def _bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of 'difference = 0', with the +1 correction (never exactly 0)."""
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return float("nan")
    low = (np.count_nonzero(d <= 0) + 1) / (d.size + 1)
    high = (np.count_nonzero(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2.0 * min(low, high)))


def _scorer(preds: dict[str, Predictions], metric: str, pairing: str):
    """``f(model, counts) -> metric per count row``: from probabilities, or a mean of per-image values."""
    if pairing == "values":
        if any(metric not in p.arrays for p in preds.values()):
            raise ValueError(f"predictions lack per-image values of {metric!r}; re-run the protocol")
        return lambda m, counts: counts @ preds[m][metric].astype(np.float64) / counts.sum(1)
    labels = next(iter(preds.values()))["labels"]
    return lambda m, counts: metric_from_counts(metric, preds[m]["probs"], labels, counts)


def paired_bootstrap(preds: dict[str, Predictions], metric: str, n_bootstrap: int, seed: int,
                     pairing: str = "images", better: int = 1) -> tuple[str, dict[str, Diff]]:
    """Best model and each model's paired-bootstrap difference to it on the shared test images.

    Every model is scored on the same resamples of the images, so the interval is that
    of the difference. ``pairing="values"`` compares means of stored per-image values.
    """
    names = sorted(preds)
    n = len(preds[names[0]]["positions"])
    score = _scorer(preds, metric, pairing)
    ones = np.ones((1, n), dtype=np.int64)
    point = {m: float(score(m, ones)[0]) for m in names}
    best = _best(point, better)
    samples = {m: [] for m in names}
    for counts in resample_counts(n, n_bootstrap, seed):
        for m in names:
            samples[m].append(score(m, counts))
    ref = concat(samples[best])
    out = {}
    for m in names:
        diffs = concat(samples[m]) - ref
        out[m] = Diff(point[m] - point[best], *percentile_ci(diffs), _bootstrap_p(diffs), n)
    return best, out


def paired_episodes(preds: dict[str, Predictions]) -> tuple[str, dict[str, Diff]]:
    """Best model and each model's mean per-episode accuracy difference to it."""
    names = sorted(preds)
    acc = {m: preds[m]["episode_acc"].astype(np.float64) for m in names}
    best = _best({m: float(a.mean()) for m, a in acc.items()})
    out = {}
    for m in names:
        d = acc[m] - acc[best]
        mean, se = float(d.mean()), float(d.std()) / math.sqrt(d.size)
        p = (1.0 if mean == 0 else 0.0) if se == 0 else math.erfc(abs(mean) / se / math.sqrt(2.0))
        out[m] = Diff(mean, mean - 1.96 * se, mean + 1.96 * se, p, int(d.size))
    return best, out


def compare_models(
    *, predictions: list[str | os.PathLike], rows: list[str | os.PathLike], out: str | os.PathLike,
    protocol: str, dataset: str, metric: str = "accuracy", n_bootstrap: int = 1000, seed: int = 0,
) -> None:
    """Rows ``<metric>_diff_vs_best`` for every model (the best gets 0) of one (protocol, dataset).

    ``predictions`` and ``rows``: each model's predictions file and rows CSV for this
    protocol and dataset (in any order; the files name their models). The comparison rows
    copy each model's setting and provenance. ``details`` holds ``best``, ``p`` (two-sided),
    ``p_holm`` and ``differs`` (``p_holm < 0.05``). ``n_bootstrap=0`` gives NaN intervals
    and p for image-paired protocols.
    """
    spec = registry.get(protocol)
    if metric not in spec.metrics:
        raise ValueError(f"metric {metric!r} cannot be compared for {protocol}; expected one of {spec.metrics}")
    preds = _predictions(predictions, protocol, dataset)
    sources = _row_sources(rows, protocol, dataset)
    if not preds or set(preds) != set(sources):
        raise ValueError(f"predictions and rows must name the same (non-empty) models, got "
                         f"{sorted(preds)} and {sorted(sources)}")
    settings = sorted({s for s, _ in sources.values()})
    if len(settings) != 1:
        raise ValueError(f"models were run in different settings {settings}; compare one setting at a time")
    if spec.pairing == "episodes":
        _check_same(preds, ("episodes_sha256",), "episodes")
        best, diffs = paired_episodes(preds)
        method = "paired_episodes:mean+-1.96*std/sqrt(E)"
    else:
        _check_same(preds, ("positions",) if spec.pairing == "values" else ("positions", "labels"), "test images")
        best, diffs = paired_bootstrap(preds, metric, n_bootstrap, seed, spec.pairing, spec.better(metric))
        method = f"paired_bootstrap:{n_bootstrap}"
    adjusted = holm({m: d.p for m, d in diffs.items() if m != best})
    out_rows = []
    for m, d in sorted(diffs.items()):
        p_holm = adjusted.get(m, 1.0)
        details = {"best": best, "p": d.p, "p_holm": p_holm, "differs": bool(p_holm < ALPHA),
                   "method": method, "correction": f"holm:{len(adjusted)}"}
        out_rows.append(make_row(model=m, dataset=dataset, protocol=protocol, setting=settings[0],
                                 metric=f"{metric}_diff_vs_best", value=d.value, ci_low=d.ci_low,
                                 ci_high=d.ci_high, n=d.n, seed=seed, meta=sources[m][1], details=details))
    write_rows(out_rows, out)
