"""Saliency maps files, their measure and their figures: torch-free, so the figure job
(``saliency_figures``) imports no torch. The maps are computed by ``protocols.saliency``."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from medtransfer.writers import pyplot, save_figure


def centre_crop(saliency: Any, crop_size: int):
    """The central ``crop_size`` square of a (..., H, W) map or image stack."""
    top = (saliency.shape[-2] - crop_size) // 2
    left = (saliency.shape[-1] - crop_size) // 2
    return saliency[..., top:top + crop_size, left:left + crop_size]


def attentive_diffusion(saliency: Any) -> float:
    """Share (0-1) of the map's pixels whose saliency is above the map's mean."""
    values = np.asarray(saliency, dtype=np.float64)
    return float(np.mean(values > values.mean()))


def load_maps(path: str | os.PathLike) -> dict[str, Any]:
    """The arrays of an ``evaluate_saliency`` maps file, with ``meta`` parsed."""
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    if "maps" not in out:
        raise ValueError(f"{path} is not a saliency maps file (no 'maps'); produce it with evaluate_saliency")
    out["meta"] = json.loads(str(out["meta"]))
    return out


def plot_saliency(*, maps: str | os.PathLike, out_heatmap: str | os.PathLike, out_overlay: str | os.PathLike,
                  n_show: int = 4) -> None:
    """One (model, dataset): the first ``n_show`` maps as heatmaps, and over their images."""
    data = load_maps(maps)
    meta, n = data["meta"], min(n_show, len(data["maps"]))
    demo = " (DEMO: random weights)" if meta.get("weights_demo") else ""
    plt = pyplot()
    for out, overlay in ((out_heatmap, False), (out_overlay, True)):
        fig, axes = plt.subplots(1, n, figsize=(2.0 * n, 2.4), squeeze=False)
        for k in range(n):
            ax, m = axes[0, k], data["maps"][k]
            if overlay:
                ax.imshow(data["inputs"][k])
                ax.imshow(m, cmap="jet", alpha=0.45)
            else:
                ax.imshow(m, cmap="viridis")
            ax.set_title(f"row {int(data['positions'][k])}: AD {attentive_diffusion(m):.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{meta['model']} / {meta['dataset']} occlusion saliency{demo}", fontsize=8)
        fig.tight_layout()
        save_figure(fig, out, "png", dpi=110)
        plt.close(fig)


def plot_saliency_figures(*, maps: list[str | os.PathLike], heatmaps: list[str | os.PathLike],
                          overlays: list[str | os.PathLike]) -> None:
    """``plot_saliency`` for each (maps, heatmap, overlay) triple (the models of one dataset)."""
    if not len(maps) == len(heatmaps) == len(overlays):
        raise ValueError(f"need one heatmap and overlay path per maps file, got {len(maps)}, {len(heatmaps)}, "
                         f"{len(overlays)}")
    for m, h, o in zip(maps, heatmaps, overlays):
        plot_saliency(maps=m, out_heatmap=h, out_overlay=o)
