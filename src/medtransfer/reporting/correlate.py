"""Correlate: what goes with transfer? Correlations between transfer and explanatory measures.

For every transfer protocol (``registry.transfer_protocols()``: linear, fewshot, finetune,
knn) and setting, the transfer score of each model on a dataset (the dataset's headline
metric where the protocol reports it, else its first metric, as in the paired
comparisons) is set against each explanatory measure of the same model:

- ``imagenet_top1``: the model's ImageNet top-1 (``correlation.top1``: the registry's or the study's);
- ``lpips_mean``, ``lpips_alex``, ``lpips_vgg``, ``lpips_squeeze``: the reconstruction stage's
  LPIPS distance, averaged over the three backbones and of each;
- ``attentive_diffusion``: the saliency stage's attentive diffusion;
- ``invariance_<transform>``: the invariance stage's whitened cosine per transform (and
  ``invariance_multiview``).

Rows: protocol ``correlation``, setting ``<protocol>_<setting>``, metric
``<spearman|pearson>_<measure>``, in four views (``details["view"]``):

- ``dataset`` (model ``all``, dataset ``<name>``): r over the models on one dataset, with a
  percentile-bootstrap CI resampling models;
- ``pooled`` (model ``all``, dataset ``all``): the Fisher-z mean of the per-dataset r, each
  underlying dataset once, undefined r skipped, CI resampling datasets and models;
- ``dataset_mean`` (model ``all``, dataset ``mean``): each model's transfer score and
  measure averaged over the datasets, then r over the models;
- ``model`` (model ``<name>``, dataset ``all``): one model's transfer score against its
  measure over the datasets (not for ``imagenet_top1``, constant across datasets).

Models in ``exclude`` (by default the untrained ``random`` baseline) enter none of them.
Everything is read from the result rows (the numbers of reports/table.csv); nothing is recomputed.
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
# Dataset names of the rows over datasets; study.POOLED_NAMES keeps datasets off them.
ALL = "all"
MEAN = "mean"
TOP1 = "imagenet_top1"
MIN_MODELS = 3
# |r| is clipped to this before arctanh: a perfect rank order of a handful of models
# (common with Spearman) would otherwise be an infinite z and outweigh every other dataset.
FISHER_CLIP = 0.999


def _main_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["metric"].astype(str).str.endswith("_diff_vs_best") & (table["protocol"] != PROTOCOL)]


def transfer_scores(table: pd.DataFrame, headline: Mapping[str, str]) -> pd.DataFrame:
    """(transfer, protocol, dataset, model, y, metric): each transfer protocol's score per model and dataset."""
    main, parts = _main_rows(table), []
    for name in registry.transfer_protocols():
        spec = registry.get(name)
        for dataset, metric in headline.items():
            metric = spec.compared_metric(metric)
            rows = main[(main["protocol"] == name) & (main["dataset"] == dataset) & (main["metric"] == metric)]
            parts.append(pd.DataFrame({"transfer": name + "_" + rows["setting"].astype(str), "protocol": name,
                                       "dataset": dataset, "model": rows["model"], "y": rows["value"],
                                       "metric": metric}))
    columns = ["transfer", "protocol", "dataset", "model", "y", "metric"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def measures(table: pd.DataFrame, top1: Mapping[str, float | None]) -> pd.DataFrame:
    """(measure, dataset, model, x): every explanatory measure per model and dataset."""
    main = _main_rows(table)
    datasets = sorted(set(main["dataset"]))
    known = {m: v for m, v in top1.items() if v is not None}
    parts = [pd.DataFrame({"measure": TOP1, "dataset": d, "model": list(known), "x": list(known.values())})
             for d in datasets]
    for name, spec in registry.PROTOCOLS.items():
        for metric, template in spec.measures:
            rows = main[(main["protocol"] == name) & (main["metric"] == metric)]
            parts.append(pd.DataFrame({"measure": [template.format(setting=s) for s in rows["setting"].astype(str)],
                                       "dataset": rows["dataset"], "model": rows["model"], "x": rows["value"]}))
    return pd.concat(parts, ignore_index=True)


def points(table: pd.DataFrame, top1: Mapping[str, float | None], headline: Mapping[str, str],
           exclude: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (transfer, measure, dataset, model) with the measure ``x`` and transfer score ``y``;
    the models in ``exclude`` left out."""
    y, x = transfer_scores(table, headline), measures(table, top1)
    out = x.merge(y, on=["dataset", "model"], how="inner")
    out = out[np.isfinite(out["x"].astype(float)) & np.isfinite(out["y"].astype(float))
              & ~out["model"].isin(list(exclude))]
    return out.sort_values(["transfer", "measure", "dataset", "model"], kind="stable").reset_index(drop=True)


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    """(r, two-sided p) of scipy's Spearman or Pearson; NaN when fewer than 3 points or a constant side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < MIN_MODELS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y) if method == "spearman" else stats.pearsonr(x, y)
    return float(result[0]), float(result[1])


def fisher_mean(r: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """tanh of the mean arctanh of the finite ``r`` (|r| clipped to ``FISHER_CLIP``); NaN where none is finite."""
    r = np.asarray(r, np.float64)
    finite = np.isfinite(r)
    z = np.where(finite, np.arctanh(np.clip(np.where(finite, r, 0.0), -FISHER_CLIP, FISHER_CLIP)), 0.0)
    count = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.tanh(np.where(count > 0, z.sum(axis=axis) / np.maximum(count, 1), np.nan))


def _rowwise_r(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """r of every row pair of (B, n) ``x`` and ``y`` (Spearman: Pearson of average ranks); NaN if constant."""
    if method == "spearman":
        x, y = rankdata(x, axis=1), rankdata(y, axis=1)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    denom = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


def _percentiles(draws: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of the finite draws (NaN when there are none)."""
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return float("nan"), float("nan")
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def _bootstrap(groups: list[tuple[np.ndarray, np.ndarray]], method: str, n_bootstrap: int,
               seed: int, pooled: bool = False) -> tuple[float, float]:
    """Percentile 95% CI of r (one group) or, ``pooled``, of the pooled r over ``groups`` (datasets).

    Each group's points (models) are resampled ``n_bootstrap`` times; pooled, draw ``b`` is
    the Fisher-z mean (``fisher_mean``) of the ``b``-th resample of a seeded resample of the
    groups, over the groups whose resampled r is defined. Draws without a defined r (a
    constant side) are left out.
    """
    if n_bootstrap == 0 or not groups or any(len(x) < MIN_MODELS for x, _ in groups):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    per = []
    for x, y in groups:
        idx = rng.integers(0, len(x), (n_bootstrap, len(x)))
        per.append(_rowwise_r(x[idx], y[idx], method))
    per = np.stack(per)  # (G, B)
    if not pooled:
        return _percentiles(per[0])
    picks = rng.integers(0, len(groups), (n_bootstrap, len(groups)))
    return _percentiles(fisher_mean(per[picks, np.arange(n_bootstrap)[:, None]], axis=1))


_JOINED = ("split", "precision", "preprocessing")


def model_provenance(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (the index): its weights hash, whether any row is demo / random, and the sets of
    its splits, precisions and preprocessings; read once, combined per row by ``_provenance``."""
    main = _main_rows(table)
    grouped = main.groupby("model")
    out = pd.DataFrame({"weights_sha256": grouped["weights_sha256"].first(),
                        "weights_demo": grouped["weights_demo"].agg(lambda v: bool(v.astype(bool).any())),
                        "weights_random": grouped["weights_random"].agg(lambda v: bool(v.astype(bool).any()))})
    for key in _JOINED:
        out[key] = grouped[key].agg(lambda v: frozenset(v.astype(str)))
    return out


def _provenance(per_model: pd.DataFrame, models: Iterable[str]) -> dict[str, object]:
    """One provenance for a row over several models: a hash of their weights hashes, joined fields."""
    part = per_model.loc[per_model.index.isin(list(models))]
    hashes = sorted(f"{m}:{h}" for m, h in part["weights_sha256"].items())
    joined = {k: "|".join(sorted(frozenset().union(*part[k]))) for k in _JOINED}
    return {"weights_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
            "weights_demo": bool(part["weights_demo"].any()), "weights_random": bool(part["weights_random"].any()),
            **joined}


def pooled_datasets(datasets: Iterable[str], same: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """(the datasets pooled, {left out: the pooled one it repeats}): of datasets whose ``same``
    strings are equal (one underlying dataset), the first in ``same``'s order (the config's) stays."""
    same = same or {}
    order = {d: i for i, d in enumerate(same)}
    kept, repeats, first = [], {}, {}
    for dataset in sorted(datasets, key=lambda d: (order.get(d, len(order)), d)):
        key = same.get(dataset, f"dataset:{dataset}")
        if key in first:
            repeats[dataset] = first[key]
        else:
            first[key] = dataset
            kept.append(dataset)
    return sorted(kept), repeats


def _xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame["x"].to_numpy(np.float64), frame["y"].to_numpy(np.float64)


class _Cell:
    """The points of one (transfer, measure) and what every row of it shares."""

    def __init__(self, provenance: pd.DataFrame, part: pd.DataFrame, base: dict, same: Mapping[str, str] | None,
                 n_bootstrap: int, seed: int) -> None:
        self.provenance, self.part, self.base, self.n_bootstrap, self.seed = provenance, part, base, n_bootstrap, seed
        self.groups = {d: g for d, g in part.groupby("dataset", sort=True)}
        self.kept, self.repeats = pooled_datasets(self.groups, same)

    def row(self, *, model: str, dataset: str, method: str, value: float, ci: tuple[float, float], n: int,
            models: Iterable[str], **details) -> dict:
        """One row; ``models`` (those used) go into its provenance and details."""
        models = [str(m) for m in models]
        return make_row(model=model, dataset=dataset, protocol=PROTOCOL, setting=self.base["transfer"],
                        metric=f"{method}_{self.base['measure']}", value=value, ci_low=ci[0], ci_high=ci[1], n=n,
                        seed=self.seed, meta=_provenance(self.provenance, models),
                        details={**self.base, "method": method, "n_bootstrap": self.n_bootstrap, "models": models,
                                 **details})

    def per_dataset(self, method: str) -> tuple[list[dict], dict[str, float]]:
        rows, r_of = [], {}
        for dataset, g in self.groups.items():
            x, y = _xy(g)
            r, p = correlation(x, y, method)
            r_of[dataset] = r
            rows.append(self.row(model=ALL, dataset=dataset, method=method, value=r, n=len(x), models=g["model"],
                                 ci=_bootstrap([(x, y)], method, self.n_bootstrap, self.seed), view="dataset",
                                 transfer_metric=str(g["metric"].iloc[0]), p=p))
        return rows, r_of

    def pooled(self, method: str, r_of: Mapping[str, float]) -> dict:
        used = [d for d in self.kept if np.isfinite(r_of[d])]
        undefined = [d for d in self.kept if d not in used]
        pairs = [_xy(self.groups[d]) for d in used]
        # the models of the datasets pooled; of every dataset looked at when none is defined, so
        # an undefined row still carries the provenance of what it was computed from
        models = sorted({m for d in used or self.kept for m in self.groups[d]["model"]})
        ci = _bootstrap(pairs, method, self.n_bootstrap, self.seed, pooled=True)
        return self.row(model=ALL, dataset=ALL, method=method, value=float(fisher_mean([r_of[d] for d in used])),
                        ci=ci, n=len(used), models=models, view="pooled", transfer_metric=self._metrics(),
                        datasets=used, n_datasets=len(used), undefined=undefined, same_data=self.repeats,
                        pooling=f"Fisher z: tanh of the mean arctanh of the per-dataset r, |r| clipped to "
                                f"{FISHER_CLIP}; each underlying dataset once; undefined r skipped")

    def dataset_mean(self, method: str) -> dict:
        part = self.part[self.part["dataset"].isin(self.kept)]
        counts = part.groupby("model")["dataset"].nunique()
        models = sorted(counts.index[counts == len(self.kept)])
        means = part[part["model"].isin(models)].groupby("model")[["x", "y"]].mean()
        x, y = _xy(means)
        return self.row(model=ALL, dataset=MEAN, method=method, value=correlation(x, y, method)[0], n=len(x),
                        ci=_bootstrap([(x, y)], method, self.n_bootstrap, self.seed), models=models,
                        view="dataset_mean", transfer_metric=self._metrics(), datasets=self.kept,
                        same_data=self.repeats, models_dropped=sorted(set(counts.index) - set(models)))

    def per_model(self, method: str) -> list[dict]:
        part, rows = self.part[self.part["dataset"].isin(self.kept)], []
        for model, g in part.groupby("model", sort=True):
            x, y = _xy(g)
            rows.append(self.row(model=str(model), dataset=ALL, method=method, value=correlation(x, y, method)[0],
                                 ci=_bootstrap([(x, y)], method, self.n_bootstrap, self.seed), n=len(x),
                                 models=[model], view="model", transfer_metric=self._metrics(),
                                 datasets=list(g["dataset"]), same_data=self.repeats))
        return rows

    def _metrics(self) -> str:
        return "|".join(sorted(set(self.part["metric"].astype(str))))  # each dataset's headline metric may differ


def correlation_rows(table: pd.DataFrame, top1: Mapping[str, float | None], headline: Mapping[str, str],
                     n_bootstrap: int = 1000, seed: int = 0, exclude: Iterable[str] = (),
                     same_data: Mapping[str, Mapping[str, str]] | None = None,
                     top1_source: str = "registry") -> list[dict]:
    """Every correlation row of a table (see the module docstring).

    ``same_data``: transfer protocol -> dataset -> a string equal for datasets over the same
    data (``Study.same_data``), pooled once; None: every dataset is its own.
    """
    exclude = sorted(set(exclude))
    pts, out, provenance = points(table, top1, headline, exclude), [], model_provenance(table)
    for (transfer, measure), part in pts.groupby(["transfer", "measure"], sort=True):
        base = {"transfer": transfer, "measure": measure, "excluded": exclude}
        if measure == TOP1:
            base["top1"] = top1_source
        protocol = str(part["protocol"].iloc[0])
        cell = _Cell(provenance, part, base, (same_data or {}).get(protocol), n_bootstrap, seed)
        for method in METHODS:
            rows, r_of = cell.per_dataset(method)
            out += rows + [cell.pooled(method, r_of), cell.dataset_mean(method)]
            if measure != TOP1:  # one model's top-1 is the same on every dataset: no r across datasets
                out += cell.per_model(method)
    return out


def correlate(*, rows: Iterable[str | os.PathLike], out: str | os.PathLike, top1: Mapping[str, float | None],
              headline: Mapping[str, str], n_bootstrap: int = 1000, seed: int = 0, exclude: Iterable[str] = (),
              same_data: Mapping[str, Mapping[str, str]] | None = None, top1_source: str = "registry") -> pd.DataFrame:
    """Read the models' row files, write the correlation rows to ``out``.

    ``top1``: model -> ImageNet top-1 (None: unknown, left out), from ``top1_source``
    (``registry`` or ``study``, recorded in the rows); ``headline``: dataset -> its headline
    metric; ``exclude``: models left out of every correlation; ``same_data``: see
    ``correlation_rows``.
    """
    table = read_rows(rows)
    found = correlation_rows(table, top1, headline, n_bootstrap, seed, exclude, same_data, top1_source)
    if not found:
        write_csv(out, pd.DataFrame(columns=RESULT_COLUMNS))
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return write_rows(found, out)


def plot_correlations(*, table: str | os.PathLike, out: str | os.PathLike, measure: str,
                      top1: Mapping[str, float | None], headline: Mapping[str, str],
                      exclude: Iterable[str] = ()) -> None:
    """Scatter of transfer against one measure: a panel per (dataset, transfer), a point per model (those
    in ``exclude`` left out, as in the rows), the fitted line."""
    plt = pyplot()
    frame = pd.read_csv(table)
    pts = points(frame, top1, headline, exclude)
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
                          top1: Mapping[str, float | None], headline: Mapping[str, str],
                          exclude: Iterable[str] = ()) -> None:
    """``plot_correlations`` for each measure -> figure path."""
    for measure, out in outs.items():
        plot_correlations(table=table, out=out, measure=measure, top1=top1, headline=headline, exclude=exclude)
