"""The study's outputs: the tidy table (rows concatenated, nothing recomputed) and figures."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from medtransfer.common import atomic_path
from medtransfer.results import KEY_COLUMNS, read_rows

# Path/rule names of the protocols -> the names used in the table (as in the paper).
TABLE_PROTOCOL = {"linear": "linear", "fewshot": "few-shot", "finetune": "finetune"}


def write_table(*, rows: Iterable[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Concatenate row files into ``out``, sorted by the key columns (deterministic)."""
    table = read_rows(rows).sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table


def plot_protocol(*, table: str | os.PathLike, out: str | os.PathLike, protocol: str,
                  metric: str = "accuracy") -> None:
    """A model x dataset heatmap of ``metric`` per setting of ``protocol``, values in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.read_csv(table)
    name = TABLE_PROTOCOL.get(protocol, protocol)
    frame = frame[(frame["protocol"] == name) & (frame["metric"] == metric)]
    if frame.empty:
        raise ValueError(f"{table} has no {metric!r} rows for protocol {name!r}; run that protocol first")
    settings = sorted(frame["setting"].unique())
    fig, axes = plt.subplots(1, len(settings), figsize=(1.2 + 2.2 * len(settings) * 1.6, 4.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        grid = frame[frame["setting"] == setting].pivot_table(index="model", columns="dataset", values="value")
        _heatmap(ax, grid * 100.0, f"{setting}")
    demo = bool(frame["weights_demo"].any())
    title = f"{name}: {metric} (%)" + ("  [DEMO: random weights, synthetic data]" if demo else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _heatmap(ax, grid: pd.DataFrame, title: str) -> None:
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values), vmax=np.nanmax(values), aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    best = np.nanargmax(values, axis=0) if values.size else []
    for (i, j), v in np.ndenumerate(values):
        label = "" if np.isnan(v) else f"{v:.1f}"
        weight = "bold" if len(best) and best[j] == i else "normal"
        ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white", fontweight=weight)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
