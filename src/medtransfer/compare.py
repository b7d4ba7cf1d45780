"""Paired comparison of every model against the best one, per (dataset, protocol).

Many-shot protocols (linear, finetune): paired bootstrap over the shared test images;
every model is scored on the *same* resamples (metrics.resample_counts with one seed),
so the interval is that of the difference, not of two independent scores. Few-shot:
paired over the shared stored episodes, mean difference -/+ 1.96 * std / sqrt(E) (the
published CI formula applied to per-episode differences) with a normal-approximation p.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from medtransfer.metrics import METRICS, concat, metric_from_counts, percentile_ci, resample_counts

PROTOCOLS = ("linear", "finetune", "few-shot")
# The workflow's path/wildcard names -> the protocol names in the rows.
PROTOCOL_ALIASES = {"fewshot": "few-shot"}
PROVENANCE_KEYS = ("weights_sha256", "weights_demo", "split", "precision", "preprocessing")


@dataclass(frozen=True)
class Diff:
    """One model's difference to the best: value, 95% CI, two-sided p and sample count."""

    value: float
    ci_low: float
    ci_high: float
    p: float
    n: int


def _row_source(name: str, path: str | os.PathLike, protocol: str, dataset: str) -> tuple[str, dict[str, Any]]:
    """(setting, provenance meta) of a model's rows for this protocol and dataset."""
    from medtransfer.results import read_rows

    frame = read_rows([path])
    frame = frame[(frame["protocol"] == protocol) & (frame["dataset"] == dataset)]
    if frame.empty:
        raise ValueError(f"{path} has no rows for protocol {protocol!r} and dataset {dataset!r}; "
                         f"pass the rows CSV of model {name!r} for that protocol and dataset")
    if set(frame["model"]) != {name}:
        raise ValueError(f"{path} holds rows of model(s) {sorted(set(frame['model']))}, not {name!r}; "
                         "check the mapping of model names to rows files")
    first = frame.iloc[0]
    meta = {k: first[k] for k in PROVENANCE_KEYS}
    meta["weights_demo"] = bool(meta["weights_demo"])
    return str(first["setting"]), meta


def _load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _check_same(preds: dict[str, dict[str, np.ndarray]], keys: tuple[str, ...], what: str) -> None:
    names = sorted(preds)
    ref = preds[names[0]]
    for name in names[1:]:
        for key in keys:
            if key not in preds[name] or not np.array_equal(preds[name][key], ref[key]):
                raise ValueError(f"models {names[0]!r} and {name!r} were scored on different {what} "
                                 f"({key!r} differs); re-run both on the same {what} before comparing")


def _best(values: dict[str, float]) -> str:
    """Highest finite value; ties go to the first name in sorted order."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if not finite:
        raise ValueError(f"no model has a defined value of the metric ({values}); compare on another metric")
    return max(sorted(finite), key=lambda k: finite[k])


def _bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of 'difference = 0', with the +1 correction (never exactly 0)."""
    d = diffs[np.isfinite(diffs)]
    if d.size == 0:
        return float("nan")
    low = (np.count_nonzero(d <= 0) + 1) / (d.size + 1)
    high = (np.count_nonzero(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2.0 * min(low, high)))


def paired_bootstrap(preds: dict[str, dict[str, np.ndarray]], metric: str, n_bootstrap: int,
                     seed: int) -> tuple[str, dict[str, Diff]]:
    """Best model and each model's paired-bootstrap difference to it on the shared test images."""
    names = sorted(preds)
    labels = preds[names[0]]["labels"]
    ones = np.ones((1, len(labels)), dtype=np.int64)
    point = {m: float(metric_from_counts(metric, preds[m]["probs"], labels, ones)[0]) for m in names}
    best = _best(point)
    samples = {m: [] for m in names}
    for counts in resample_counts(len(labels), n_bootstrap, seed):
        for m in names:
            samples[m].append(metric_from_counts(metric, preds[m]["probs"], labels, counts))
    ref = concat(samples[best])
    out = {}
    for m in names:
        diffs = concat(samples[m]) - ref
        out[m] = Diff(point[m] - point[best], *percentile_ci(diffs), _bootstrap_p(diffs), len(labels))
    return best, out


def paired_episodes(preds: dict[str, dict[str, np.ndarray]]) -> tuple[str, dict[str, Diff]]:
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


def _check_args(predictions: dict, rows_meta: dict, protocol: str, metric: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    allowed = ("accuracy",) if protocol == "few-shot" else METRICS
    if metric not in allowed:
        raise ValueError(f"metric {metric!r} cannot be compared for {protocol}; expected one of {allowed}")
    if not predictions or set(predictions) != set(rows_meta):
        raise ValueError(f"predictions and rows_meta must name the same (non-empty) models, got "
                         f"{sorted(predictions)} and {sorted(rows_meta)}")


def compare_models(
    *, predictions: dict[str, str | os.PathLike], rows_meta: dict[str, str | os.PathLike],
    out: str | os.PathLike, protocol: str, dataset: str, metric: str = "accuracy",
    n_bootstrap: int = 1000, seed: int = 0,
) -> None:
    """Rows ``<metric>_diff_vs_best`` for every model (the best gets 0) of one (protocol, dataset).

    ``predictions``: model -> predictions .npz of this protocol and dataset; ``rows_meta``:
    model -> its rows CSV, whose setting and provenance the comparison rows copy.
    ``differs`` is ``p < 0.05`` (two-sided). ``protocol`` may be given by its path name
    (``fewshot``); rows use the protocol names of the result rows (``few-shot``).
    ``n_bootstrap=0`` gives NaN intervals and p for linear/finetune.
    """
    from medtransfer.results import make_row, write_rows

    protocol = PROTOCOL_ALIASES.get(protocol, protocol)
    _check_args(predictions, rows_meta, protocol, metric)
    sources = {m: _row_source(m, rows_meta[m], protocol, dataset) for m in sorted(predictions)}
    settings = sorted({s for s, _ in sources.values()})
    if len(settings) != 1:
        raise ValueError(f"models were run in different settings {settings}; compare one setting at a time")
    preds = {m: _load(p) for m, p in predictions.items()}
    if protocol == "few-shot":
        _check_same(preds, ("episodes_sha256",), "episodes")
        best, diffs = paired_episodes(preds)
        method = "paired_episodes:mean+-1.96*std/sqrt(E)"
    else:
        _check_same(preds, ("positions", "labels"), "test images")
        best, diffs = paired_bootstrap(preds, metric, n_bootstrap, seed)
        method = f"paired_bootstrap:{n_bootstrap}"
    rows = [make_row(model=m, dataset=dataset, protocol=protocol, setting=settings[0],
                     metric=f"{metric}_diff_vs_best", value=d.value, ci_low=d.ci_low, ci_high=d.ci_high, n=d.n,
                     seed=seed, meta=sources[m][1],
                     details=f"best={best};p={d.p:.4g};differs={bool(d.p < 0.05)};method={method}")
            for m, d in sorted(diffs.items())]
    write_rows(rows, out)
