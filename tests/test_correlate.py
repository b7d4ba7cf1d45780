"""Correlate: rows equal scipy's on the table's numbers, CIs, pooled rows, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medtransfer.reporting.correlate import correlate, plot_correlations, points
from medtransfer.results import details, make_row, read_rows, write_rows

MODELS = ["a", "b", "c", "d", "e"]
TOP1 = {"a": 70.0, "b": 72.0, "c": 75.0, "d": 61.0, "e": None}


def _table(tmp_path):
    rng = np.random.default_rng(0)
    meta = {"weights_sha256": "0" * 64, "split": "given", "precision": "fp32", "preprocessing": "p"}
    rows = []
    for d in ("x", "y"):
        for m in MODELS:
            def row(protocol, setting, metric, value, m=m, d=d):  # called at once, in this iteration
                rows.append(make_row(model=m, dataset=d, protocol=protocol, setting=setting, metric=metric,
                                     value=value, n=10, seed=0, meta=meta))
            row("linear", "manyshot", "accuracy", rng.uniform(0.5, 0.9))
            row("linear", "manyshot", "balanced_accuracy", rng.uniform(0.5, 0.9))
            row("fewshot", "5shot", "accuracy", rng.uniform(0.5, 0.9))
            row("saliency", "occlusion", "attentive_diffusion", rng.uniform(0.2, 0.5))
            row("invariance", "hflip", "cosine", rng.uniform(0.5, 1.0))
            row("invariance", "hflip", "mahalanobis", rng.uniform(0, 5))
            row("linear", "manyshot", "accuracy_diff_vs_best", -0.1)
    write_rows(rows, tmp_path / "rows.csv")
    return tmp_path / "rows.csv"


def test_rows_equal_scipy_on_the_tables_numbers(tmp_path):
    path = _table(tmp_path)
    headline = {"x": "accuracy", "y": "balanced_accuracy"}
    out = correlate(rows=[path], out=tmp_path / "c.csv", top1=TOP1, headline=headline, n_bootstrap=200, seed=0)
    table = read_rows([path])
    assert set(out["protocol"]) == {"correlation"} and set(out["model"]) == {"all"}
    assert set(out["setting"]) == {"linear_manyshot", "fewshot_5shot"}
    measures = {m.split("_", 1)[1] for m in out["metric"]}
    assert measures == {"imagenet_top1", "attentive_diffusion", "invariance_hflip"}
    for _, row in out[out["dataset"] != "all"].iterrows():
        method, measure = row["metric"].split("_", 1)
        transfer, setting = row["setting"].split("_")
        metric = headline[row["dataset"]] if transfer == "linear" else "accuracy"
        y = table[(table["protocol"] == transfer) & (table["setting"] == setting) & (table["metric"] == metric)
                  & (table["dataset"] == row["dataset"])].set_index("model")["value"]
        if measure == "imagenet_top1":
            x = pd.Series({m: v for m, v in TOP1.items() if v is not None})
        else:
            protocol, metric_x = ("saliency", "attentive_diffusion") if measure == "attentive_diffusion" else ("invariance", "cosine")
            x = table[(table["protocol"] == protocol) & (table["metric"] == metric_x)
                      & (table["dataset"] == row["dataset"])].set_index("model")["value"]
        common = sorted(set(x.index) & set(y.index))
        expected = (stats.spearmanr if method == "spearman" else stats.pearsonr)(x[common], y[common])[0]
        assert row["value"] == pytest.approx(expected, abs=1e-12) and row["n"] == len(common)
        assert row["ci_low"] <= row["ci_high"] and details(row)["models"] == common
        assert details(row)["transfer_metric"] == metric
    pooled = out[out["dataset"] == "all"].set_index(["setting", "metric"])["value"]
    per = out[out["dataset"] != "all"].groupby(["setting", "metric"])["value"].mean()
    pd.testing.assert_series_equal(pooled.sort_index(), per.sort_index(), check_names=False)
    assert out["weights_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_too_few_models_give_nan_not_an_error(tmp_path):
    path = _table(tmp_path)
    table = read_rows([path])
    table[table["model"].isin(["a", "b"])].to_csv(tmp_path / "two.csv", index=False)
    out = correlate(rows=[tmp_path / "two.csv"], out=tmp_path / "c.csv", top1=TOP1,
                    headline={"x": "accuracy", "y": "accuracy"}, n_bootstrap=20)
    assert out["value"].isna().all()


def test_scatter_figure(tmp_path):
    path = _table(tmp_path)
    headline = {"x": "accuracy", "y": "accuracy"}
    assert len(points(read_rows([path]), TOP1, headline)) > 0
    plot_correlations(table=path, out=tmp_path / "s.png", measure="imagenet_top1", top1=TOP1, headline=headline)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
