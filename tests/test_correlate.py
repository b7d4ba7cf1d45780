"""Correlate: rows equal scipy's on the table's numbers, the four views, the pooled rows (each dataset
once, undefined r skipped, Fisher z), the excluded random baseline, the study's top-1, figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import REPO
from medtransfer.reporting.correlate import ALL, FISHER_CLIP, MEAN, correlate, plot_correlations, points
from medtransfer.results import details, make_row, read_rows, write_rows
from medtransfer.study import POOLED_NAMES, Study

MODELS = ["a", "b", "c", "d", "e"]
TOP1 = {"a": 70.0, "b": 72.0, "c": 75.0, "d": 61.0, "e": None}
LPIPS = ("lpips_mean", "lpips_alex", "lpips_vgg", "lpips_squeeze")


def _table(tmp_path, datasets=("x", "y"), models=MODELS, seed=0):
    rng = np.random.default_rng(seed)
    meta = {"weights_sha256": "0" * 64, "split": "given", "precision": "fp32", "preprocessing": "p"}
    rows = []
    for d in datasets:
        for m in models:
            def row(protocol, setting, metric, value, m=m, d=d):  # called at once, in this iteration
                rows.append(make_row(model=m, dataset=d, protocol=protocol, setting=setting, metric=metric,
                                     value=value, n=10, seed=0, meta=meta))
            row("linear", "manyshot", "accuracy", rng.uniform(0.5, 0.9))
            row("linear", "manyshot", "balanced_accuracy", rng.uniform(0.5, 0.9))
            row("fewshot", "5shot", "accuracy", rng.uniform(0.5, 0.9))
            row("saliency", "occlusion", "attentive_diffusion", rng.uniform(0.2, 0.5))
            row("invariance", "hflip", "cosine", rng.uniform(0.5, 1.0))
            row("invariance", "hflip", "mahalanobis", rng.uniform(0, 5))
            for metric in LPIPS[1:] + ("psnr",):
                row("reconstruction", "dip", metric, rng.uniform(0.1, 0.6))
            row("linear", "manyshot", "accuracy_diff_vs_best", -0.1)
    frame = write_rows(rows, tmp_path / "rows.csv")
    nets = frame[frame["metric"].isin(LPIPS[1:])].groupby(["model", "dataset"], sort=False)["value"].mean()
    for (m, d), value in nets.items():  # lpips_mean: the backbones' mean, as the scoring writes it
        rows.append(make_row(model=m, dataset=d, protocol="reconstruction", setting="dip", metric="lpips_mean",
                             value=value, n=10, seed=0, meta=meta))
    write_rows(rows, tmp_path / "rows.csv")
    return tmp_path / "rows.csv"


def _view(out, view):
    return out[[details(r)["view"] == view for _, r in out.iterrows()]]


def _row(out, view, setting, metric, **keys):
    part = _view(out, view)
    part = part[(part["setting"] == setting) & (part["metric"] == metric)]
    for key, value in keys.items():
        part = part[part[key] == value]
    assert len(part) == 1, (view, setting, metric, keys)
    return part.iloc[0]


def _scipy(method, x, y):
    return (stats.spearmanr if method == "spearman" else stats.pearsonr)(x, y)[0]


def _x(table, measure):
    if measure == "attentive_diffusion":
        return table[table["metric"] == "attentive_diffusion"]
    if measure.startswith("lpips"):
        return table[(table["protocol"] == "reconstruction") & (table["metric"] == measure)]
    return table[(table["protocol"] == "invariance") & (table["metric"] == "cosine")]


def test_rows_equal_scipy_on_the_tables_numbers(tmp_path):
    path = _table(tmp_path)
    headline = {"x": "accuracy", "y": "balanced_accuracy"}
    out = correlate(rows=[path], out=tmp_path / "c.csv", top1=TOP1, headline=headline, n_bootstrap=200, seed=0)
    table = read_rows([path])
    assert set(out["protocol"]) == {"correlation"} and set(out["setting"]) == {"linear_manyshot", "fewshot_5shot"}
    measures = {m.split("_", 1)[1] for m in out["metric"]}
    assert measures == {"imagenet_top1", "attentive_diffusion", "invariance_hflip", *LPIPS}  # each backbone too
    per_dataset = _view(out, "dataset")
    assert set(per_dataset["dataset"]) == {"x", "y"} and set(per_dataset["model"]) == {ALL}
    assert len(per_dataset) == 2 * 2 * 2 * len(measures)  # transfers x datasets x methods x measures
    for _, row in per_dataset.iterrows():
        method, measure = row["metric"].split("_", 1)
        transfer, setting = row["setting"].split("_")
        metric = headline[row["dataset"]] if transfer == "linear" else "accuracy"
        y = table[(table["protocol"] == transfer) & (table["setting"] == setting) & (table["metric"] == metric)
                  & (table["dataset"] == row["dataset"])].set_index("model")["value"]
        if measure == "imagenet_top1":
            x = pd.Series({m: v for m, v in TOP1.items() if v is not None})
        else:
            x = _x(table, measure)
            x = x[x["dataset"] == row["dataset"]].set_index("model")["value"]
        common = sorted(set(x.index) & set(y.index))
        assert row["value"] == pytest.approx(_scipy(method, x[common], y[common]), abs=1e-12)
        assert row["n"] == len(common) and details(row)["models"] == common
        assert row["ci_low"] <= row["ci_high"] and details(row)["transfer_metric"] == metric
    assert out["weights_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_pooled_r_is_the_fisher_z_mean_by_hand(tmp_path):
    path = _table(tmp_path, datasets=("x", "y", "z"))
    table = read_rows([path])
    # On z the transfer score follows lpips_alex exactly: Spearman r = 1, clipped to FISHER_CLIP.
    alex = table[(table["metric"] == "lpips_alex") & (table["dataset"] == "z")].set_index("model")["value"]
    on_z = (table["dataset"] == "z") & (table["protocol"] == "linear") & (table["metric"] == "accuracy")
    table.loc[on_z, "value"] = table.loc[on_z, "model"].map(alex).to_numpy()
    table.to_csv(tmp_path / "rows.csv", index=False)
    out = correlate(rows=[path], out=tmp_path / "c.csv", top1=TOP1, headline=dict.fromkeys("xyz", "accuracy"),
                    n_bootstrap=100)
    for metric in ("spearman_lpips_alex", "pearson_invariance_hflip"):
        r = [_row(out, "dataset", "linear_manyshot", metric, dataset=d)["value"] for d in "xyz"]
        z = [math.atanh(max(-0.999, min(0.999, v))) for v in r]
        pooled = _row(out, "pooled", "linear_manyshot", metric, dataset=ALL, model=ALL)
        assert pooled["value"] == pytest.approx(math.tanh(sum(z) / 3), abs=1e-12)
        assert pooled["value"] != pytest.approx(np.mean(r), abs=1e-6)  # not the plain mean
        assert pooled["n"] == 3 and details(pooled)["n_datasets"] == 3
        assert pooled["ci_low"] <= pooled["value"] <= pooled["ci_high"]
    assert FISHER_CLIP == 0.999
    assert _row(out, "dataset", "linear_manyshot", "spearman_lpips_alex", dataset="z")["value"] == pytest.approx(1.0)


def test_undefined_per_dataset_r_is_skipped_in_the_point_and_the_ci(tmp_path):
    path = _table(tmp_path, datasets=("x", "y", "z"))
    headline = dict.fromkeys("xyz", "accuracy")
    table = read_rows([path])
    table.loc[(table["dataset"] == "z") & (table["protocol"] == "linear"), "value"] = 0.5  # constant: r undefined
    table.to_csv(tmp_path / "with_z.csv", index=False)
    table[table["dataset"] != "z"].to_csv(tmp_path / "without_z.csv", index=False)
    with_z = correlate(rows=[tmp_path / "with_z.csv"], out=tmp_path / "a.csv", top1=TOP1, headline=headline,
                       n_bootstrap=200)
    without_z = correlate(rows=[tmp_path / "without_z.csv"], out=tmp_path / "b.csv", top1=TOP1, headline=headline,
                          n_bootstrap=200)
    for metric in ("spearman_attentive_diffusion", "pearson_lpips_vgg"):
        assert math.isnan(_row(with_z, "dataset", "linear_manyshot", metric, dataset="z")["value"])
        got = _row(with_z, "pooled", "linear_manyshot", metric, model=ALL)
        want = _row(without_z, "pooled", "linear_manyshot", metric, model=ALL)
        assert np.isfinite([got["value"], got["ci_low"], got["ci_high"]]).all()
        assert (got["value"], got["ci_low"], got["ci_high"]) == pytest.approx(
            (want["value"], want["ci_low"], want["ci_high"]), abs=1e-12)
        assert got["n"] == 2 and details(got)["n_datasets"] == 2
        assert details(got)["datasets"] == ["x", "y"] and details(got)["undefined"] == ["z"]


def test_a_pooled_row_with_no_defined_dataset_is_nan_with_the_provenance_of_its_models(tmp_path):
    """Every dataset's r undefined (the demo's finetune at chance): the pooled row is NaN from 0
    datasets, yet names the models and carries their provenance, as every row must."""
    path = _table(tmp_path)
    table = read_rows([path])
    table.loc[table["protocol"] == "linear", "value"] = 0.5  # constant everywhere: no r anywhere
    table["weights_demo"] = True
    table.to_csv(tmp_path / "flat.csv", index=False)
    out = correlate(rows=[tmp_path / "flat.csv"], out=tmp_path / "c.csv", top1=TOP1,
                    headline=dict.fromkeys("xy", "accuracy"), n_bootstrap=20)
    got = _row(out, "pooled", "linear_manyshot", "pearson_lpips_vgg", model=ALL)
    per_dataset = _row(out, "dataset", "linear_manyshot", "pearson_lpips_vgg", dataset="x")
    assert math.isnan(got["value"]) and got["n"] == 0 and details(got)["undefined"] == ["x", "y"]
    assert details(got)["models"] == MODELS and bool(got["weights_demo"])
    assert got["weights_sha256"] == per_dataset["weights_sha256"]


def test_one_dataset_under_two_entries_is_pooled_once_except_for_its_fewshot_tasks(tmp_path):
    path = _table(tmp_path, datasets=("c2", "c5", "x", "y"))
    table = read_rows([path])
    twin = table[table["dataset"] == "c2"].copy()
    twin["dataset"] = "c5"  # one root, two entries: identical many-shot and measure values...
    few = (twin["protocol"] == "fewshot").to_numpy()
    twin.loc[few, "value"] = table.loc[(table["dataset"] == "c5") & (table["protocol"] == "fewshot"), "value"].to_numpy()
    table = pd.concat([table[table["dataset"] != "c5"], twin])  # ...but their own few-shot episodes (n_way)
    table.to_csv(tmp_path / "rows.csv", index=False)
    table[table["dataset"] != "c5"].to_csv(tmp_path / "once.csv", index=False)
    same = {"c2": "cifar", "c5": "cifar", "x": "x", "y": "y"}
    same_data = {"linear": same, "fewshot": {d: d for d in same}}
    headline = dict.fromkeys(same, "accuracy")
    out = correlate(rows=[path], out=tmp_path / "c.csv", top1=TOP1, headline=headline, n_bootstrap=100,
                    same_data=same_data)
    once = correlate(rows=[tmp_path / "once.csv"], out=tmp_path / "o.csv", top1=TOP1, headline=headline,
                     n_bootstrap=100, same_data=same_data)
    for metric in ("pearson_lpips_mean", "spearman_invariance_hflip"):
        pooled = _row(out, "pooled", "linear_manyshot", metric, model=ALL)
        assert details(pooled)["datasets"] == ["c2", "x", "y"] and details(pooled)["same_data"] == {"c5": "c2"}
        assert pooled["value"] == pytest.approx(_row(once, "pooled", "linear_manyshot", metric, model=ALL)["value"])
        averaged = _row(out, "dataset_mean", "linear_manyshot", metric)
        assert averaged["value"] == pytest.approx(_row(once, "dataset_mean", "linear_manyshot", metric)["value"])
        fewshot = _row(out, "pooled", "fewshot_5shot", metric, model=ALL)
        assert details(fewshot)["datasets"] == ["c2", "c5", "x", "y"] and details(fewshot)["n_datasets"] == 4
    assert set(_view(out, "dataset")["dataset"]) == {"c2", "c5", "x", "y"}  # every entry keeps its own rows


def test_per_model_view_correlates_one_models_scores_over_the_datasets(tmp_path):
    path = _table(tmp_path, datasets=("w", "x", "y", "z"))
    table = read_rows([path])
    out = correlate(rows=[path], out=tmp_path / "c.csv", top1=TOP1, headline=dict.fromkeys("wxyz", "accuracy"),
                    n_bootstrap=100)
    per_model = _view(out, "model")
    assert set(per_model["model"]) == set(MODELS) and set(per_model["dataset"]) == {ALL}
    assert not per_model["metric"].str.endswith("imagenet_top1").any()  # constant over datasets
    linear = table[(table["protocol"] == "linear") & (table["metric"] == "accuracy")]
    for model in ("a", "d"):
        for measure in ("attentive_diffusion", "lpips_squeeze"):
            x = _x(table, measure)
            x = x[x["model"] == model].set_index("dataset")["value"]
            y = linear[linear["model"] == model].set_index("dataset")["value"]
            for method in ("spearman", "pearson"):
                row = _row(out, "model", "linear_manyshot", f"{method}_{measure}", model=model)
                assert row["value"] == pytest.approx(_scipy(method, x[list("wxyz")], y[list("wxyz")]), abs=1e-12)
                assert row["n"] == 4 and details(row)["datasets"] == list("wxyz") and details(row)["models"] == [model]


def test_dataset_mean_view_correlates_the_models_averaged_scores(tmp_path):
    path = _table(tmp_path, datasets=("x", "y", "z"))
    table = read_rows([path])
    table = table[~((table["model"] == "b") & (table["dataset"] == "z"))]  # b lacks z: left out of the means
    table.to_csv(tmp_path / "rows.csv", index=False)
    out = correlate(rows=[path], out=tmp_path / "c.csv", top1=TOP1, headline=dict.fromkeys("xyz", "accuracy"),
                    n_bootstrap=100)
    keep = ["a", "c", "d", "e"]
    y = table[(table["protocol"] == "linear") & (table["metric"] == "accuracy")].groupby("model")["value"].mean()
    for measure in ("invariance_hflip", "lpips_alex", "imagenet_top1"):
        x = pd.Series(TOP1).dropna() if measure == "imagenet_top1" else _x(table, measure).groupby("model")["value"].mean()
        models = [m for m in keep if m in x.index]
        for method in ("spearman", "pearson"):
            row = _row(out, "dataset_mean", "linear_manyshot", f"{method}_{measure}")
            assert (row["model"], row["dataset"]) == (ALL, MEAN) and details(row)["models"] == models
            assert row["value"] == pytest.approx(_scipy(method, x[models], y[models]), abs=1e-12)
            assert details(row)["models_dropped"] == ["b"] and details(row)["datasets"] == ["x", "y", "z"]


def test_excluded_models_enter_no_row(tmp_path):
    path = _table(tmp_path, models=MODELS + ["random"])
    table = read_rows([path])
    table.loc[(table["model"] == "random") & (table["protocol"] == "linear"), "value"] = 0.01  # an extreme point
    table["weights_random"] = table["model"] == "random"
    table.to_csv(tmp_path / "rows.csv", index=False)
    table[table["model"] != "random"].to_csv(tmp_path / "without.csv", index=False)
    headline = {"x": "accuracy", "y": "accuracy"}
    out = correlate(rows=[path], out=tmp_path / "c.csv", top1=TOP1, headline=headline, n_bootstrap=50,
                    exclude=["random"])
    without = correlate(rows=[tmp_path / "without.csv"], out=tmp_path / "w.csv", top1=TOP1, headline=headline,
                        n_bootstrap=50)
    assert "random" not in set(out["model"])
    assert all("random" not in details(r)["models"] and details(r)["excluded"] == ["random"] for _, r in out.iterrows())
    pd.testing.assert_series_equal(out["value"], without["value"])
    kept = correlate(rows=[path], out=tmp_path / "k.csv", top1=TOP1, headline=headline, n_bootstrap=0)
    assert "random" in set(kept["model"]) and not kept["value"].equals(without["value"])
    over = (kept["model"] == ALL) & ~kept["metric"].str.endswith("imagenet_top1")  # random has no top-1
    assert not out["weights_random"].any() and kept.loc[over, "weights_random"].all()
    assert out.loc[out["model"] == ALL, "weights_sha256"].nunique() == 2  # a hash of the models' hashes (or a-d's)
    assert kept.loc[over, "weights_sha256"].nunique() == 1
    assert set(out.loc[out["model"] == ALL, "weights_sha256"]).isdisjoint(kept.loc[over, "weights_sha256"])


def _study_config(tmp_path, **correlation):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "labels.csv").write_text("path,label\na.png,x\n")
    return {"models": {"supervised": {}, "byol": {}, "random": {}},
            "datasets": {"mine": {"kind": "csv", "csv": "labels.csv"}}, "protocols": {"linear": {}},
            "data_root": str(tmp_path / "data"), "correlation": correlation}


def test_the_random_baseline_is_excluded_by_default_and_exclude_is_checked(tmp_path):
    assert Study(_study_config(tmp_path)).correlation_exclude() == ["random"]
    assert Study(_study_config(tmp_path, exclude=[])).correlation_exclude() == []
    assert Study(_study_config(tmp_path, exclude=["byol"])).correlation_exclude() == ["byol"]
    with pytest.raises(ValueError, match=r"correlation.exclude names \['rando'\], not models of this study"):
        Study(_study_config(tmp_path, exclude=["rando"]))
    config = _study_config(tmp_path)
    config["datasets"]["mean"] = config["datasets"]["mine"]
    with pytest.raises(ValueError, match=r"dataset or model name\(s\) \['mean'\].*rename them"):
        Study(config)
    assert POOLED_NAMES == (ALL, MEAN)


def test_paper_config_correlates_the_studys_top1_without_random_and_cifar_once(tmp_path):
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    paper["data_root"] = str(tmp_path)
    for spec in paper["datasets"].values():
        Path(tmp_path, spec["root"]).mkdir(exist_ok=True)
    study = Study(paper)
    assert study.top1_source() == "study" and study.correlation_exclude() == ["random"]
    top1 = study.top1()
    assert (top1["supervised"], top1["supervised-r18"], top1["supervised-d121"]) == (77.2, 72.12, 74.98)
    assert top1["moco-v2"] == 71.1 < top1["supervised-r18"]  # the study's order, not torchvision's (69.758)
    assert top1["random"] is None and top1["moco-cxr-r18"] is None
    same = study.same_data()
    assert same["linear"]["cifar10_2way"] == same["linear"]["cifar10_5way"] != same["linear"]["bach"]
    assert same["fewshot"]["cifar10_2way"] != same["fewshot"]["cifar10_5way"]
    assert {"lpips_alex", "lpips_vgg", "lpips_squeeze", "lpips_mean"} <= set(study.correlation_measures())
    del paper["correlation"]["top1"]
    assert Study(paper).top1()["supervised"] == 76.1  # the default: the registry's (torchvision's)


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
    table = read_rows([path])
    assert len(points(table, TOP1, headline)) > 0
    assert set(points(table, TOP1, headline, exclude=["a"])["model"]) == {"b", "c", "d", "e"}
    plot_correlations(table=path, out=tmp_path / "s.png", measure="imagenet_top1", top1=TOP1, headline=headline,
                      exclude=["a"])
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
