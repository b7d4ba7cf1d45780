"""The study's figures: a heatmap per protocol, bar charts per transfer protocol, a radar chart per model."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from medtransfer import protocols as registry
from medtransfer.writers import pyplot, save_figure


def plot_protocol(*, table: str | os.PathLike, out: str | os.PathLike, protocol: str,
                  metric: str = "accuracy", pdf: str | os.PathLike | None = None) -> None:
    """One model x (dataset, setting) heatmap of ``metric`` for ``protocol``.

    Classification metrics are shown in percent; others (LPIPS, PSNR, SSIM) as they are.
    The best value per column is bold: the highest, or the lowest where the protocol
    says lower is better.
    """
    plt = pyplot()
    frame = pd.read_csv(table)
    spec = registry.get(protocol)
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
    if pdf is not None:
        save_figure(fig, pdf, "pdf")
    plt.close(fig)


def _natural(label: str) -> list:
    """Sort '5-shot' before '10-shot'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


def _heatmap(ax, grid: pd.DataFrame, better: int = 1) -> None:
    values = grid.to_numpy(dtype=float)
    # brighter is better either way
    image = ax.imshow(values, cmap="viridis" if better > 0 else "viridis_r", vmin=np.nanmin(values),
                      vmax=np.nanmax(values), aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    best = np.nanargmax(np.nan_to_num(better * values, nan=-np.inf), axis=0)
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for (i, j), v in np.ndenumerate(values):
        if np.isnan(v):
            continue
        ax.text(j, i, f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}", ha="center", va="center", fontsize=8,
                color="black" if better * (v - middle) > 0 else "white",
                fontweight="bold" if best[j] == i else "normal")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


# Okabe & Ito's colour-blind-safe palette (black last): one colour per model, in every figure.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _save_both(fig, png: str | os.PathLike, pdf: str | os.PathLike) -> None:
    save_figure(fig, png, "png")
    save_figure(fig, pdf, "pdf")


def _colours(models: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(models))}


def plot_bars(*, cells: str | os.PathLike, png: str | os.PathLike, pdf: str | os.PathLike, protocol: str) -> None:
    """Bar chart of the headline metric per model with its 95% CI, one panel per (dataset, setting).

    ``cells``: the summary's tidy cells (``medtransfer.reporting.summary``); bold-edged bars are the best.
    """
    plt = pyplot()
    frame = pd.read_csv(cells)
    colours = _colours(list(frame["model"].unique()))  # from every model: the same colour in every chart
    frame = frame[(frame["table"] == "headline") & (frame["protocol"] == protocol)]
    if frame.empty:
        raise ValueError(f"{cells} has no headline cells for protocol {protocol!r}; run that protocol first")
    panels = list(frame.groupby(["dataset", "setting"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 + 3.2 * len(panels), 3.6), squeeze=False)
    for ax, ((dataset, setting), part) in zip(axes[0], panels):
        part = part.sort_values("model")
        value = 100 * part["value"].to_numpy(float)
        low = np.nan_to_num(value - 100 * part["ci_low"].to_numpy(float))
        high = np.nan_to_num(100 * part["ci_high"].to_numpy(float) - value)
        ax.bar(range(len(part)), value, yerr=[low, high], capsize=3, color=[colours[m] for m in part["model"]],
               edgecolor=["black" if b else "none" for b in part["best"]], linewidth=1.5)
        ax.set_xticks(range(len(part)), part["model"], rotation=35, ha="right", fontsize=9)
        ax.set_title(f"{dataset} ({setting})\n{part['metric'].iloc[0]} (%)", fontsize=9)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{registry.get(protocol).title}: headline metric with 95% CI (black edge: best)", fontsize=10)
    fig.tight_layout()
    _save_both(fig, png, pdf)
    plt.close(fig)


def plot_radar(*, cells: str | os.PathLike, png: str | os.PathLike, pdf: str | os.PathLike, model: str) -> None:
    """One model's headline metric on every (protocol, dataset, setting) axis, beside the mean of all models."""
    plt = pyplot()
    frame = pd.read_csv(cells)
    frame = frame[frame["table"] == "headline"].copy()
    if model not in set(frame["model"]):
        raise ValueError(f"{cells} has no cells for model {model!r}; models: {sorted(set(frame['model']))}")
    frame["axis"] = frame["protocol"] + "\n" + frame["dataset"] + np.where(
        frame["setting"] == registry.MANYSHOT, "", " " + frame["setting"])
    grid = frame.pivot_table(index="axis", columns="model", values="value") * 100.0
    angles = np.linspace(0, 2 * np.pi, len(grid), endpoint=False)
    closed = np.append(angles, angles[0])
    fig, ax = plt.subplots(figsize=(5.5, 5.5), subplot_kw={"polar": True})
    mean = grid.mean(axis=1).to_numpy()
    ax.plot(closed, np.append(mean, mean[0]), color="#555555", linestyle="--", linewidth=1, label="mean of all models")
    ours = grid[model].to_numpy()
    colour = _colours(list(grid.columns))[model]
    ax.plot(closed, np.append(ours, ours[0]), color=colour, linewidth=2, marker="o", label=model)
    ax.fill(closed, np.append(ours, ours[0]), color=colour, alpha=0.2)
    ax.set_xticks(angles, grid.index, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_title(f"{model}: headline metric (%) per protocol and dataset", fontsize=10)
    ax.legend(loc="lower right", bbox_to_anchor=(1.15, -0.1), fontsize=8)
    fig.tight_layout()
    _save_both(fig, png, pdf)
    plt.close(fig)
