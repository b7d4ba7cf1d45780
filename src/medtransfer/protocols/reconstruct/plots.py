"""Figures of the reconstruction protocol: image grids and LPIPS distributions."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from medtransfer.protocols.reconstruct.files import METRICS, load_reconstructions
from medtransfer.writers import pyplot, save_figure


def _save(fig, out_png: str | os.PathLike, out_pdf: str | os.PathLike) -> None:
    for out, fmt in ((out_png, "png"), (out_pdf, "pdf")):
        save_figure(fig, out, fmt)


def plot_grid(npz_by_model: Mapping[str, str | os.PathLike], out_png: str | os.PathLike,
              out_pdf: str | os.PathLike, title: str = "") -> None:
    """One dataset: a row per inverted image, originals first, then one column per model."""
    if not npz_by_model:
        raise ValueError("plot_grid needs at least one model's reconstruction file")
    runs = {m: load_reconstructions(p) for m, p in npz_by_model.items()}
    first_model, first = next(iter(runs.items()))
    for model, run in runs.items():
        if not np.array_equal(run["positions"], first["positions"]):
            raise ValueError(f"{model} inverted other images than {first_model} (positions "
                             f"{run['positions'].tolist()} vs {first['positions'].tolist()}); "
                             "use the same seed and n_images for every model of a dataset")
    plt = pyplot()
    n, cols = len(first["positions"]), 1 + len(runs)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n + 0.4), squeeze=False)
    columns = [("original", first["originals"])] + [(m, r["reconstructions"]) for m, r in runs.items()]
    for c, (label, images) in enumerate(columns):
        for r in range(n):
            ax = axes[r, c]
            ax.imshow(np.clip(images[r], 0, 255 if images.dtype == np.uint8 else 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=8)
    demo = any(r["meta"].get("weights_demo") for r in runs.values())
    fig.suptitle((title or first["meta"].get("dataset", "")) + (" (DEMO: random weights)" if demo else ""),
                 fontsize=9)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)
    plt.close(fig)


def plot_lpips(predictions_by_model: Mapping[str, str | os.PathLike], out_png: str | os.PathLike,
               out_pdf: str | os.PathLike, metric: str = "lpips_mean", title: str = "") -> None:
    """Per-image ``metric`` of each model (one dataset): box plot with the images as dots."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    if not predictions_by_model:
        raise ValueError("plot_lpips needs at least one model's predictions file")
    values = {}
    for model, path in predictions_by_model.items():
        with np.load(path, allow_pickle=False) as data:
            if metric not in data.files:
                raise ValueError(f"{path} has no per-image {metric!r}; produce it with "
                                 "medtransfer.protocols.reconstruct.score")
            values[model] = np.asarray(data[metric], dtype=np.float64)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(values), 3.2))
    names = list(values)
    ax.boxplot([values[m] for m in names], showfliers=False)
    rng = np.random.default_rng(0)  # fixed jitter: same figure every run
    for i, m in enumerate(names, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values[m])), values[m], s=8, alpha=0.6, zorder=3)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric + (" (lower: closer)" if metric.startswith("lpips") else ""), fontsize=8)
    ax.set_title(title or metric, fontsize=9)
    fig.tight_layout()
    _save(fig, out_png, out_pdf)
    plt.close(fig)
