"""The tidy result row: one value per (model, dataset, protocol, setting, metric).

Every row carries its provenance so a number can be traced to the weights, data
split, seed, precision and code that produced it. Aggregation only concatenates rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from medtransfer.common import atomic_path, git_revision, package_version

KEY_COLUMNS = ["model", "dataset", "protocol", "setting", "metric"]
VALUE_COLUMNS = ["value", "ci_low", "ci_high", "n", "seed"]
PROVENANCE_COLUMNS = [
    "weights_sha256", "weights_demo", "split", "precision", "preprocessing",
    "package_version", "git_revision",
]
RESULT_COLUMNS = KEY_COLUMNS + VALUE_COLUMNS + ["details"] + PROVENANCE_COLUMNS


def provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance columns from a features/weights meta mapping, plus code version."""
    return {
        "weights_sha256": meta.get("weights_sha256", ""),
        "weights_demo": bool(meta.get("weights_demo", False)),
        "split": meta.get("split", ""),
        "precision": meta.get("precision", ""),
        "preprocessing": meta.get("preprocessing", ""),
        "package_version": package_version(),
        "git_revision": git_revision(),
    }


def make_row(
    *, model: str, dataset: str, protocol: str, setting: str, metric: str, value: float,
    ci_low: float | None = None, ci_high: float | None = None, n: int, seed: int,
    meta: Mapping[str, Any], details: str = "",
) -> dict[str, Any]:
    """One result row; ``details`` holds protocol extras (e.g. ``C=0.01;converged=True``)."""
    row = {
        "model": model, "dataset": dataset, "protocol": protocol, "setting": setting,
        "metric": metric, "value": float(value),
        "ci_low": float("nan") if ci_low is None else float(ci_low),
        "ci_high": float("nan") if ci_high is None else float(ci_high),
        "n": int(n), "seed": int(seed), "details": details,
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
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def read_rows(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=True) for p in paths]
    if not frames:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[RESULT_COLUMNS]
