"""The whole workflow, for real: Snakemake on a tiny config in a temporary directory."""

import math

import pandas as pd
import pytest
import yaml

from medtransfer.results import PROVENANCE_COLUMNS, RESULT_COLUMNS
from workflow_helpers import make_workdir, snakemake, tiny_config

MODELS = ["supervised", "moco-v2", "swav", "pirl", "byol", "simclr-v1", "mimic-chexpert_lr_0.1", "moco-cxr-r18"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One full run of the tiny study (shared by the tests below; they only read or rerun)."""
    workdir = make_workdir(tmp_path_factory.mktemp("study"), tiny_config(MODELS))
    # eight models, one a DenseNet-121: about 25 minutes on a shared 2-core CPU
    snakemake(workdir, "all", timeout=3000)
    return workdir


@pytest.mark.slow
def test_table_has_every_cell_with_provenance(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    assert list(table.columns) == RESULT_COLUMNS
    main = table[~table["metric"].str.endswith("_diff_vs_best") & (table["protocol"] != "correlation")]
    cells = main.groupby(["protocol", "dataset", "metric"])["model"].apply(set)
    for protocol in ("linear", "fewshot", "finetune", "knn"):
        for dataset in ("demo_cxr", "demo_fundus"):
            assert cells[(protocol, dataset, "accuracy")] == set(MODELS)
    # PSNR is in dB, Mahalanobis distances are unbounded, cosines lie in [-1, 1]
    unbounded = main["metric"].isin(["psnr", "mahalanobis", "cosine"])
    assert main.loc[~unbounded, "value"].between(0, 1).all()
    assert (main.loc[main["metric"] == "psnr", "value"] > 0).all()
    assert (main.loc[main["metric"] == "mahalanobis", "value"] >= 0).all()
    assert main.loc[main["metric"] == "cosine", "value"].between(-1, 1).all()
    assert table["weights_demo"].all() and (table["seed"] == 3).all()
    for column in PROVENANCE_COLUMNS:
        assert table[column].notna().all() and (table[column].astype(str) != "").all(), column
    assert table["weights_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert set(table.loc[table["dataset"] == "demo_cxr", "split"]) == {"given"}
    # different random nets: different source files
    assert main.groupby("model")["weights_sha256"].first().nunique() == len(MODELS)
    assert table.loc[table["protocol"] == "correlation", "weights_sha256"].nunique() == 1  # a hash of them all


@pytest.mark.slow
def test_paired_comparisons_and_figures(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    diffs = table[table["metric"].str.endswith("_diff_vs_best")]
    assert set(diffs["protocol"]) == {"linear", "fewshot", "finetune", "knn", "reconstruction", "saliency",
                                      "invariance"}
    # the dataset's headline metric is what is compared (the .test config sets it for demo_fundus)
    assert set(diffs.loc[diffs["dataset"] == "demo_fundus", "metric"]) == {
        "balanced_accuracy_diff_vs_best", "accuracy_diff_vs_best",  # fewshot compares accuracy
        "lpips_mean_diff_vs_best", "attentive_diffusion_diff_vs_best", "cosine_diff_vs_best"}
    assert (diffs.groupby(["protocol", "dataset", "setting"])["model"].nunique() == len(MODELS)).all()
    for protocol in ("linear", "fewshot", "finetune", "knn", "reconstruction", "saliency", "invariance"):
        png = finished / "reports" / "figures" / f"{protocol}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_second_run_has_nothing_to_do(finished):
    proc = snakemake(finished, "all", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_deleted_table_is_rebuilt_alone_and_identical(finished):
    table = finished / "reports" / "table.csv"
    before = table.read_text()
    table.unlink()
    proc = snakemake(finished, "reports/table.csv", "-n")
    assert "table" in proc.stdout and "extract_features" not in proc.stdout
    snakemake(finished, "reports/table.csv")
    assert table.read_text() == before


@pytest.mark.slow
def test_rerun_with_same_seed_gives_the_same_numbers(finished):
    table = finished / "reports" / "table.csv"
    before = pd.read_csv(table)
    snakemake(finished, "all", "--forcerun", "extract_features", "linear_probe", "fewshot")
    after = pd.read_csv(table)
    pd.testing.assert_frame_equal(before, after)


def test_misspelt_config_key_is_named(tmp_path):
    config = tiny_config(["supervised"])
    config["protocols"]["linear"]["grid_pionts"] = 3
    workdir = make_workdir(tmp_path, config)
    proc = snakemake(workdir, "-n", check=False)
    assert proc.returncode != 0
    assert "grid_pionts" in proc.stdout + proc.stderr


def test_unknown_model_without_format_is_explained(tmp_path):
    config = tiny_config(["supervised"])
    config["models"]["my-net"] = {"url": "file:x.pth"}
    proc = snakemake(make_workdir(tmp_path, config), "-n", check=False)
    assert proc.returncode != 0
    assert "model 'my-net' is not one of the published models" in proc.stdout + proc.stderr


def test_default_config_validates_and_builds_the_dag(tmp_path):
    workdir = make_workdir(tmp_path)
    proc = snakemake(workdir, "-n")
    out = proc.stdout + proc.stderr
    for rule in ("make_demo_weights", "download_weights", "convert_weights", "extract_features",
                 "linear_probe", "fewshot", "finetune", "knn", "compare_models", "table", "figure"):
        assert rule in out
    assert yaml.safe_load((workdir / "config" / "config.yaml").read_text())["study"] == "demo"


@pytest.mark.slow
def test_reconstruction_rows_figures_and_lpips_weights_through_the_download_rule(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    rec = table[(table["protocol"] == "reconstruction") & ~table["metric"].str.endswith("_diff_vs_best")]
    assert set(rec["metric"]) == {"lpips_alex", "lpips_vgg", "lpips_squeeze", "lpips_mean", "psnr", "ssim"}
    assert (rec.groupby("dataset")["model"].nunique() == len(MODELS)).all() and (rec["n"] == 2).all()
    assert rec["weights_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    for dataset in ("demo_cxr", "demo_fundus"):
        for name in (f"{dataset}_grid", f"{dataset}_lpips"):
            png = finished / "reports" / "figures" / "reconstruction" / f"{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (png.with_suffix(".pdf")).read_bytes()[:4] == b"%PDF"
    for net in ("alexnet-owt-7be5be79", "vgg16-397923af", "squeezenet1_1-b8a52dc0"):
        prefix = net.split("-")[0].replace("alexnet", "alex").replace("vgg16", "vgg").replace("squeezenet1_1", "squeeze")
        assert (finished / "resources" / "weights" / "download" / f"lpips-{prefix}" / f"{net}.pth").exists()


@pytest.mark.slow
def test_finetune_crops_from_the_whole_image_cache(finished):
    from medtransfer.results import details

    table = pd.read_csv(finished / "reports" / "table.csv")
    ft = table[(table["protocol"] == "finetune") & (table["metric"] == "accuracy")]
    assert all(details(r)["augment"].startswith("rrc0.08-1_bicubic_aa+hflip_of_full_image") for _, r in ft.iterrows())
    assert (finished / "results" / "cache" / "demo_cxr" / "full.npy").exists()


@pytest.mark.slow
def test_saliency_and_invariance_rows_and_figures(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    main = table[~table["metric"].str.endswith("_diff_vs_best")]
    sal = main[main["protocol"] == "saliency"]
    assert set(sal["metric"]) == {"attentive_diffusion"} and set(sal["setting"]) == {"occlusion"}
    assert (sal.groupby("dataset")["model"].nunique() == len(MODELS)).all() and (sal["n"] == 2).all()
    assert sal["value"].between(0, 1).all() and (sal["ci_low"] <= sal["ci_high"]).all()
    inv = main[main["protocol"] == "invariance"]
    assert set(inv["setting"]) == {"rotation", "hflip", "brightness"} and set(inv["metric"]) == {"cosine", "mahalanobis"}
    assert (inv.groupby(["dataset", "setting", "metric"])["model"].nunique() == len(MODELS)).all()
    for dataset in ("demo_cxr", "demo_fundus"):
        for model in MODELS:
            for kind in ("heatmap", "overlay"):
                png = finished / "reports" / "figures" / "saliency" / dataset / f"{model}_{kind}.png"
                assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for kind in ("saliency", "invariance"):
        assert (finished / "benchmarks" / kind / "supervised" / "demo_cxr.tsv").exists()


@pytest.mark.slow
def test_correlation_rows_equal_scipy_on_the_tables_numbers(finished):
    from scipy import stats

    from medtransfer.results import details
    from medtransfer.weights.registry import REGISTRY

    table = pd.read_csv(finished / "reports" / "table.csv")
    corr = table[table["protocol"] == "correlation"]
    measures = {"imagenet_top1", "lpips_mean", "attentive_diffusion", "invariance_rotation", "invariance_hflip",
                "invariance_brightness"}
    assert {m.split("_", 1)[1] for m in corr["metric"]} == measures
    assert set(corr["dataset"]) == {"demo_cxr", "demo_fundus", "all"} and set(corr["model"]) == {"all"}
    main = table[~table["metric"].str.endswith("_diff_vs_best")]
    headline = {"demo_cxr": "accuracy", "demo_fundus": "balanced_accuracy"}
    checked = 0
    for _, row in corr[(corr["setting"] == "linear_manyshot") & (corr["dataset"] != "all")].iterrows():
        method, measure = row["metric"].split("_", 1)
        part = main[main["dataset"] == row["dataset"]]
        y = part[(part["protocol"] == "linear") & (part["metric"] == headline[row["dataset"]])].set_index("model")["value"]
        models = MODELS
        if measure == "imagenet_top1":  # models without a published top-1 are left out
            models = [m for m in MODELS if REGISTRY[m].top1 is not None]
            x = pd.Series({m: REGISTRY[m].top1 for m in models})
        elif measure == "attentive_diffusion":
            x = part[part["metric"] == "attentive_diffusion"].set_index("model")["value"]
        elif measure == "lpips_mean":
            x = part[part["metric"] == "lpips_mean"].set_index("model")["value"]
        else:
            x = part[(part["protocol"] == "invariance") & (part["setting"] == measure.split("_")[1])
                     & (part["metric"] == "cosine")].set_index("model")["value"]
        if y[models].nunique() == 1 or x[models].nunique() == 1:  # e.g. all at the same accuracy: r is undefined
            assert math.isnan(row["value"]), row["metric"]
        else:
            expected = (stats.spearmanr if method == "spearman" else stats.pearsonr)(x[models], y[models])[0]
            assert row["value"] == pytest.approx(expected, abs=1e-9), row["metric"]
        assert details(row)["transfer_metric"] == headline[row["dataset"]]
        checked += 1
    assert checked == 2 * 2 * len(measures) and corr["value"].notna().any()
    for measure in measures:
        png = finished / "reports" / "figures" / "correlation" / f"{measure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
