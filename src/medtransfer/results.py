"""What every stage writes: the tidy result row and the typed predictions record.

Every row carries its provenance so a number can be traced to the weights, data
split, seed, precision and code that produced it. Aggregation only concatenates rows.
A row's ``details`` column is a JSON object of the protocol's structured extras
(chosen C, val score, search results, ...); :func:`details` parses it.

:class:`Predictions` is what a protocol predicted for one (model, dataset, setting),
the input of the paired comparisons (``compare.py``): per-image class probabilities
(``pairing="images"``) or per-episode accuracies (``pairing="episodes"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.metrics import MetricValue, bootstrap_metrics, mean_with_ci
from medtransfer.runtime import git_revision, package_version
from medtransfer.writers import save_npz, write_csv

KEY_COLUMNS = ["model", "dataset", "protocol", "setting", "metric"]
VALUE_COLUMNS = ["value", "ci_low", "ci_high", "n", "seed"]
PROVENANCE_COLUMNS = [
    "weights_sha256", "weights_demo", "weights_random", "split", "precision", "preprocessing",
    "package_version", "git_revision",
]
RESULT_COLUMNS = KEY_COLUMNS + VALUE_COLUMNS + ["details"] + PROVENANCE_COLUMNS


def provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance columns from a features/weights meta mapping, plus code version."""
    return {
        "weights_sha256": meta.get("weights_sha256", ""),
        "weights_demo": bool(meta.get("weights_demo", False)),
        "weights_random": bool(meta.get("weights_random", False)),
        "split": meta.get("split", ""),
        "precision": meta.get("precision", ""),
        "preprocessing": meta.get("preprocessing", ""),
        "package_version": package_version(),
        "git_revision": git_revision(),
    }


def make_row(
    *, model: str, dataset: str, protocol: str, setting: str, metric: str, value: float,
    ci_low: float | None = None, ci_high: float | None = None, n: int, seed: int,
    meta: Mapping[str, Any], details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One result row; ``details`` holds protocol extras, stored as a JSON object."""
    row = {
        "model": model, "dataset": dataset, "protocol": protocol, "setting": setting,
        "metric": metric, "value": float(value),
        "ci_low": float("nan") if ci_low is None else float(ci_low),
        "ci_high": float("nan") if ci_high is None else float(ci_high),
        "n": int(n), "seed": int(seed), "details": dump_details(details or {}),
    }
    row.update(provenance(meta))
    return row


def write_rows(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> pd.DataFrame:
    """Write rows as CSV (atomically) in the canonical column order."""
    frame = pd.DataFrame(list(rows))
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"result rows lack columns {missing}; build rows with make_row()")
    frame = frame[RESULT_COLUMNS]
    write_csv(path, frame)
    return frame


def read_rows(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=True) for p in paths]
    if not frames:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[RESULT_COLUMNS]


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON-ready Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"details value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def dump_details(details: Mapping[str, Any]) -> str:
    return json.dumps(dict(details), sort_keys=True, default=_plain, allow_nan=True)


def details(row_or_text: Mapping[str, Any] | str) -> dict[str, Any]:
    """The ``details`` JSON of a row (or of the column's text) as a dict."""
    text = row_or_text if isinstance(row_or_text, str) else row_or_text["details"]
    return json.loads(text) if isinstance(text, str) and text else {}


# ---------------------------------------------------------------- predictions

# Arrays each pairing needs: images -> the same test images; episodes -> the same episodes;
# values -> per-image values of each metric (arrays named after the metrics) on the same images.
_REQUIRED = {
    "images": ("probs", "labels", "positions", "classes"),
    "episodes": ("episode_acc", "episodes_sha256"),
    "values": ("positions",),
}
_HEADER = ("model", "dataset", "protocol", "setting", "pairing")


@dataclass
class Predictions:
    """One (model, dataset, protocol, setting)'s predictions, for paired comparisons.

    ``arrays`` holds the pairing's required arrays (``images``: ``probs`` (n, C),
    ``labels`` (n,), ``positions`` (n,) index rows of the test images, ``classes``;
    ``episodes``: ``episode_acc`` (E,), ``episodes_sha256``; ``values``: ``positions`` and one
    (n,) array per metric) plus any protocol extras.
    """

    model: str
    dataset: str
    protocol: str
    setting: str
    pairing: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pairing not in _REQUIRED:
            raise ValueError(f"pairing {self.pairing!r} is not one of {sorted(_REQUIRED)}")
        self.arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        missing = [k for k in _REQUIRED[self.pairing] if k not in self.arrays]
        if missing:
            raise ValueError(f"{self.pairing} predictions of {self.model}/{self.dataset}/{self.protocol} "
                             f"lack {missing}")

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def save(self, path: str | os.PathLike) -> None:
        """As .npz (no pickles), atomically; the header fields are stored as strings."""
        header = {f"_{k}": np.array(getattr(self, k)) for k in _HEADER}
        save_npz(path, **header, **self.arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Predictions":
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        missing = [k for k in _HEADER if f"_{k}" not in arrays]
        if missing:
            raise ValueError(f"{path} is not a medtransfer predictions file (no {missing}); "
                             "re-run the protocol that writes it")
        header = {k: str(arrays.pop(f"_{k}")) for k in _HEADER}
        return cls(**header, arrays=arrays)


def metric_rows(
    values: dict[str, MetricValue], *, meta: dict, protocol: str, setting: str, seed: int,
    details: dict | None = None,
) -> list[dict]:
    """Result rows (``make_row``) for each metric; a metric's note joins its details."""
    rows = []
    for metric, v in values.items():
        extra = {"note": v.note} if v.note else {}
        rows.append(make_row(
            model=str(meta.get("model", "")), dataset=str(meta.get("dataset", "")), protocol=protocol,
            setting=setting, metric=metric, value=v.value, ci_low=v.ci_low, ci_high=v.ci_high,
            n=v.n, seed=seed, meta=meta, details={**(details or {}), **extra},
        ))
    return rows


def write_classification(
    *, rows: str | os.PathLike, predictions: str | os.PathLike, protocol: str, setting: str,
    probs: np.ndarray, labels: np.ndarray, positions: np.ndarray, classes: list[str],
    meta: Mapping[str, Any], seed: int, n_bootstrap: int, details: Mapping[str, Any],
    extras: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The rows (every metric with its bootstrap CI) and predictions of an image-paired protocol."""
    values = bootstrap_metrics(probs, labels, n_bootstrap=n_bootstrap, seed=seed, class_names=list(classes))
    out = metric_rows(values, meta=dict(meta), protocol=protocol, setting=setting, seed=seed,
                      details={**details, "n_bootstrap": n_bootstrap})
    arrays = {"probs": np.asarray(probs, np.float32), "labels": np.asarray(labels, np.int64),
              "positions": np.asarray(positions, np.int64), "classes": np.array(list(classes), dtype=str),
              **(extras or {})}
    Predictions(model=str(meta.get("model", "")), dataset=str(meta.get("dataset", "")), protocol=protocol,
                setting=setting, pairing="images", arrays=arrays).save(predictions)
    return write_rows(out, rows)


def write_values(
    *, rows: str | os.PathLike, predictions: str | os.PathLike, protocol: str, setting: str,
    values: Mapping[str, np.ndarray], positions: np.ndarray, labels: np.ndarray, meta: Mapping[str, Any],
    seed: int, n_bootstrap: int, details: Mapping[str, Any], extras: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The rows and predictions of a values-paired protocol (saliency, invariance, reconstruction).

    ``values``: metric -> (n,) per-image values, in row order; each row is their mean with a
    seeded bootstrap CI over the ``positions`` (index rows of the n images). The predictions
    hold ``positions``, ``labels``, ``extras`` (e.g. ``paths``), then each metric's values.
    """
    details = {**details, "n_bootstrap": n_bootstrap}
    out = []
    for metric, per_image in values.items():
        value, low, high = mean_with_ci(per_image, n_bootstrap, seed)
        out.append(make_row(model=meta["model"], dataset=meta["dataset"], protocol=protocol, setting=setting,
                            metric=metric, value=value, ci_low=low, ci_high=high, n=len(positions), seed=seed,
                            meta=meta, details=details))
    arrays = {"positions": np.asarray(positions, np.int64), "labels": np.asarray(labels, np.int64),
              **(extras or {}), **values}
    Predictions(model=meta["model"], dataset=meta["dataset"], protocol=protocol, setting=setting,
                pairing="values", arrays=arrays).save(predictions)
    return write_rows(out, rows)
