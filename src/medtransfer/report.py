"""The study's outputs: the tidy table (rows concatenated, nothing recomputed) and figures."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from medtransfer import stages
from medtransfer.results import KEY_COLUMNS, read_rows
from medtransfer.writers import save_figure, write_csv

def write_table(*, rows: Iterable[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Concatenate row files into ``out``, sorted by the key columns (deterministic)."""
    table = read_rows(rows).sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    write_csv(out, table)
    return table


def plot_protocol(*, table: str | os.PathLike, out: str | os.PathLike, protocol: str,
                  metric: str = "accuracy") -> None:
    """One model x (dataset, setting) heatmap of ``metric`` for ``protocol``.

    Classification metrics are shown in percent; others (LPIPS, PSNR, SSIM) as they are.
    The best value per column is bold: the highest, or the lowest where the protocol
    says lower is better.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.read_csv(table)
    spec = stages.get(protocol)
    name = spec.title
    percent = metric in ("accuracy", "balanced_accuracy", "auroc")
    frame = frame[(frame["protocol"] == protocol) & (frame["metric"] == metric)].copy()
    if frame.empty:
        raise ValueError(f"{table} has no {metric!r} rows for protocol {protocol!r}; run that protocol first")
    several = frame.groupby("dataset")["setting"].nunique().max() > 1
    frame["column"] = frame["dataset"] + ("\n" + frame["setting"] if several else "")
    grid = frame.pivot_table(index="model", columns="column", values="value") * (100.0 if percent else 1.0)
    grid = grid[sorted(grid.columns, key=_natural)]
    fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 1.3 * grid.shape[1]), 1.8 + 0.45 * grid.shape[0]))
    _heatmap(ax, grid, spec.better(metric))
    demo = bool(frame["weights_demo"].any())
    unit = " (%)" if percent else (" (lower is better)" if spec.better(metric) < 0 else "")
    ax.set_title(f"{name}\n{metric}{unit}, best per column in bold"
                 + ("\nDEMO: random weights, synthetic data" if demo else ""), fontsize=9)
    fig.tight_layout()
    save_figure(fig, out, "png")
    plt.close(fig)


def _natural(label: str) -> list:
    """Sort '5-shot' before '10-shot'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


def _heatmap(ax, grid: pd.DataFrame, better: int = 1) -> None:
    values = grid.to_numpy(dtype=float)
    # brighter is better either way
    image = ax.imshow(values, cmap="viridis" if better > 0 else "viridis_r", vmin=np.nanmin(values), vmax=np.nanmax(values), aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    best = np.nanargmax(np.nan_to_num(better * values, nan=-np.inf), axis=0)
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for (i, j), v in np.ndenumerate(values):
        if np.isnan(v):
            continue
        ax.text(j, i, f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}", ha="center", va="center", fontsize=8,
                color="black" if better * (v - middle) > 0 else "white", fontweight="bold" if best[j] == i else "normal")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
