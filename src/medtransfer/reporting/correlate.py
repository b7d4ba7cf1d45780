"""Correlate: what goes with transfer? Correlations across models between transfer and explanatory measures.

For every transfer protocol (``registry.transfer_protocols()``: linear, fewshot, finetune,
knn) and setting, the transfer score of each model on a dataset (the dataset's headline
metric where the protocol reports it, else its first metric, as in the paired
comparisons) is set against each explanatory measure of the same model:

- ``imagenet_top1``: the model's published ImageNet top-1 (weights registry or config);
- ``lpips_mean``: the reconstruction stage's mean LPIPS distance;
- ``attentive_diffusion``: the saliency stage's attentive diffusion;
- ``invariance_<transform>``: the invariance stage's whitened cosine per transform (and
  ``invariance_multiview``).

Rows (protocol ``correlation``, model ``all``, setting ``<protocol>_<setting>``, metric
``<spearman|pearson>_<measure>``): per dataset, Spearman's and Pearson's r over the
models with a percentile-bootstrap CI resampling models; over datasets (dataset ``all``),
the mean of the per-dataset r with a CI resampling datasets and models. Everything is
read from the result rows (the numbers of reports/table.csv); nothing is recomputed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from scipy.stats import rankdata

from medtransfer import protocols as registry
from medtransfer.results import RESULT_COLUMNS, make_row, read_rows, write_rows
from medtransfer.writers import pyplot, save_figure, write_csv

PROTOCOL = "correlation"
METHODS = ("spearman", "pearson")
ALL = "all"
TOP1 = "imagenet_top1"
MIN_MODELS = 3


def _main_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["metric"].astype(str).str.endswith("_diff_vs_best") & (table["protocol"] != PROTOCOL)]


def transfer_scores(table: pd.DataFrame, headline: Mapping[str, str]) -> pd.DataFrame:
    """(transfer, dataset, model, y, metric): each transfer protocol's score per model and dataset."""
    main, parts = _main_rows(table), []
    for name in registry.transfer_protocols():
        spec = registry.get(name)
        for dataset, metric in headline.items():
            metric = spec.compared_metric(metric)
            rows = main[(main["protocol"] == name) & (main["dataset"] == dataset) & (main["metric"] == metric)]
            parts.append(pd.DataFrame({"transfer": name + "_" + rows["setting"].astype(str), "dataset": dataset,
                                       "model": rows["model"], "y": rows["value"], "metric": metric}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["transfer", "dataset", "model", "y"])


def measures(table: pd.DataFrame, top1: Mapping[str, float | None]) -> pd.DataFrame:
    """(measure, dataset, model, x): every explanatory measure per model and dataset."""
    main = _main_rows(table)
    datasets = sorted(set(main["dataset"]))
    known = {m: v for m, v in top1.items() if v is not None}
    parts = [pd.DataFrame({"measure": TOP1, "dataset": d, "model": list(known), "x": list(known.values())})
             for d in datasets]
    for name, spec in registry.PROTOCOLS.items():
        if not spec.measure:
            continue
        metric, template = spec.measure
        rows = main[(main["protocol"] == name) & (main["metric"] == metric)]
        parts.append(pd.DataFrame({"measure": [template.format(setting=s) for s in rows["setting"].astype(str)],
                                   "dataset": rows["dataset"], "model": rows["model"], "x": rows["value"]}))
    return pd.concat(parts, ignore_index=True)


def points(table: pd.DataFrame, top1: Mapping[str, float | None], headline: Mapping[str, str]) -> pd.DataFrame:
    """One row per (transfer, measure, dataset, model) with the measure ``x`` and transfer score ``y``."""
    y, x = transfer_scores(table, headline), measures(table, top1)
    out = x.merge(y, on=["dataset", "model"], how="inner")
    out = out[np.isfinite(out["x"].astype(float)) & np.isfinite(out["y"].astype(float))]
    return out.sort_values(["transfer", "measure", "dataset", "model"], kind="stable").reset_index(drop=True)


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    """(r, two-sided p) of scipy's Spearman or Pearson; NaN when fewer than 3 points or a constant side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < MIN_MODELS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y) if method == "spearman" else stats.pearsonr(x, y)
    return float(result[0]), float(result[1])


def _rowwise_r(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """r of every row pair of (B, n) ``x`` and ``y`` (Spearman: Pearson of average ranks); NaN if constant."""
    if method == "spearman":
        x, y = rankdata(x, axis=1), rankdata(y, axis=1)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    denom = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


def _bootstrap(groups: list[tuple[np.ndarray, np.ndarray]], method: str, n_bootstrap: int,
               seed: int) -> tuple[float, float]:
    """Percentile 95% CI of the mean r over ``groups`` (datasets), resampling datasets and models.

    Each dataset's models are resampled ``n_bootstrap`` times; with several datasets, draw
    ``b`` averages the ``b``-th resample of a seeded resample of the datasets. Draws where r
    is undefined (a constant side) are left out.
    """
    if n_bootstrap == 0 or any(len(x) < MIN_MODELS for x, _ in groups):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    per = []
    for x, y in groups:
        idx = rng.integers(0, len(x), (n_bootstrap, len(x)))
        per.append(_rowwise_r(x[idx], y[idx], method))
    per = np.stack(per)  # (G, B)
    if len(groups) > 1:
        picks = rng.integers(0, len(groups), (n_bootstrap, len(groups)))
        draws = per[picks, np.arange(n_bootstrap)[:, None]].mean(1)
    else:
        draws = per[0]
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return float("nan"), float("nan")
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def _provenance(table: pd.DataFrame, models: Iterable[str]) -> dict[str, object]:
    """One provenance for a row over several models: a hash of their weights hashes, joined fields."""
    main = _main_rows(table)
    main = main[main["model"].isin(list(models))]
    hashes = sorted(f"{m}:{h}" for m, h in main.groupby("model")["weights_sha256"].first().items())
    joined = {k: "|".join(sorted(set(main[k].astype(str)))) for k in ("split", "precision", "preprocessing")}
    return {"weights_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
            "weights_demo": bool(main["weights_demo"].astype(bool).any()),
            "weights_random": bool(main["weights_random"].astype(bool).any()), **joined}


def correlation_rows(table: pd.DataFrame, top1: Mapping[str, float | None], headline: Mapping[str, str],
                     n_bootstrap: int = 1000, seed: int = 0) -> list[dict]:
    """Every correlation row of a table (see the module docstring)."""
    pts, out = points(table, top1, headline), []
    for (transfer, measure), part in pts.groupby(["transfer", "measure"], sort=True):
        groups = {d: g for d, g in part.groupby("dataset", sort=True)}
        metrics = sorted(set(part["metric"].astype(str)))  # each dataset's headline metric may differ
        for method in METHODS:
            per = {}
            for dataset, g in groups.items():
                x, y = g["x"].to_numpy(np.float64), g["y"].to_numpy(np.float64)
                r, p = correlation(x, y, method)
                low, high = _bootstrap([(x, y)], method, n_bootstrap, seed)
                per[dataset] = r
                details = {"transfer_metric": str(g["metric"].iloc[0]), "measure": measure, "p": p,
                           "models": list(g["model"]), "n_bootstrap": n_bootstrap, "method": method}
                out.append(make_row(model=ALL, dataset=dataset, protocol=PROTOCOL, setting=transfer,
                                    metric=f"{method}_{measure}", value=r, ci_low=low, ci_high=high, n=len(x),
                                    seed=seed, meta=_provenance(table, g["model"]), details=details))
            pairs = [(g["x"].to_numpy(np.float64), g["y"].to_numpy(np.float64)) for g in groups.values()]
            low, high = _bootstrap(pairs, method, n_bootstrap, seed)
            details = {"transfer_metric": "|".join(metrics), "measure": measure, "datasets": list(groups),
                       "method": method, "pooling": "mean of the per-dataset r", "n_bootstrap": n_bootstrap}
            out.append(make_row(model=ALL, dataset=ALL, protocol=PROTOCOL, setting=transfer,
                                metric=f"{method}_{measure}", value=float(np.mean(list(per.values()))),
                                ci_low=low, ci_high=high, n=len(part), seed=seed,
                                meta=_provenance(table, part["model"]), details=details))
    return out


def correlate(*, rows: Iterable[str | os.PathLike], out: str | os.PathLike, top1: Mapping[str, float | None],
              headline: Mapping[str, str], n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Read the models' row files, write the correlation rows to ``out``.

    ``top1``: model -> published ImageNet top-1 (None: unknown, left out);
    ``headline``: dataset -> its headline metric.
    """
    table = read_rows(rows)
    found = correlation_rows(table, top1, headline, n_bootstrap, seed)
    if not found:
        write_csv(out, pd.DataFrame(columns=RESULT_COLUMNS))
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return write_rows(found, out)


def plot_correlations(*, table: str | os.PathLike, out: str | os.PathLike, measure: str,
                      top1: Mapping[str, float | None], headline: Mapping[str, str]) -> None:
    """Scatter of transfer against one measure: a panel per (dataset, transfer), a point per model, the fitted line."""
    plt = pyplot()
    frame = pd.read_csv(table)
    pts = points(frame, top1, headline)
    pts = pts[pts["measure"] == measure]
    cells = sorted(set(zip(pts["dataset"], pts["transfer"])))
    datasets, transfers = sorted({d for d, _ in cells}), sorted({t for _, t in cells})
    fig, axes = plt.subplots(max(1, len(datasets)), max(1, len(transfers)), squeeze=False,
                             figsize=(2.6 * max(1, len(transfers)), 2.3 * max(1, len(datasets)) + 0.4))
    for i, d in enumerate(datasets):
        for j, t in enumerate(transfers):
            _panel(axes[i, j], pts[(pts["dataset"] == d) & (pts["transfer"] == t)], f"{d} / {t}", measure)
    if not cells:
        axes[0, 0].text(0.5, 0.5, f"no points for {measure}", ha="center", va="center")
    demo = bool(frame["weights_demo"].astype(bool).any())
    fig.suptitle(f"transfer vs {measure}" + (" (DEMO: random weights; values mean nothing)" if demo else ""),
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, out, "png", dpi=110)
    plt.close(fig)


def _panel(ax, part: pd.DataFrame, title: str, measure: str) -> None:
    x, y = part["x"].to_numpy(np.float64), part["y"].to_numpy(np.float64)
    ax.scatter(x, y, s=14, zorder=3)
    for xi, yi, name in zip(x, y, part["model"]):
        ax.annotate(str(name), (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        grid = np.linspace(x.min(), x.max(), 2)
        ax.plot(grid, slope * grid + intercept, lw=1, color="C1")
    r = correlation(x, y, "spearman")[0]
    ax.set_title(f"{title}\nSpearman r = {r:.2f}", fontsize=7)
    ax.set_xlabel(measure, fontsize=7)
    ax.set_ylabel(str(part["metric"].iloc[0]) if len(part) else "", fontsize=7)
    ax.tick_params(labelsize=6)


def plot_all_correlations(*, table: str | os.PathLike, outs: Mapping[str, str | os.PathLike],
                          top1: Mapping[str, float | None], headline: Mapping[str, str]) -> None:
    """``plot_correlations`` for each measure -> figure path."""
    for measure, out in outs.items():
        plot_correlations(table=table, out=out, measure=measure, top1=top1, headline=headline)
