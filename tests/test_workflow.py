"""The whole workflow, for real: Snakemake on a tiny config in a temporary directory."""

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy import stats

from browser import Page, find_chromium
from conftest import REPO
from medtransfer.results import PROVENANCE_COLUMNS, RESULT_COLUMNS, details
from medtransfer.weights.registry import REGISTRY
from workflow_helpers import make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow  # every test here runs Snakemake (a whole study, or a dry run)

MODELS = ["supervised", "moco-v2", "swav", "pirl", "byol", "simclr-v1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One full run of the tiny study, shared by the tests below: they only read it."""
    workdir = make_workdir(tmp_path_factory.mktemp("study"), tiny_config(MODELS))
    snakemake(workdir, "all")
    return workdir


@pytest.fixture
def own_run(finished, tmp_path):
    """A copy of the finished run for a test that deletes, reruns or adds files: no test sees
    another's changes, so any order (or any single test) gives the same result. Every mtime is
    kept, and Snakemake's metadata holds relative paths, so the copy is up to date."""
    return shutil.copytree(finished, tmp_path / "run", symlinks=True, copy_function=_link_weights(finished))


def _link_weights(run):
    """Copies a file, but hard-links those under resources/ (2 GB of weights, which no test
    writes; a rerun job would replace a file, never write into it)."""
    weights = run / "resources"

    def copy(src: str, dst: str) -> None:
        if Path(src).is_relative_to(weights):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)
    return copy


def test_table_has_every_cell_with_provenance(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    assert list(table.columns) == RESULT_COLUMNS
    main = table[~table["metric"].str.endswith("_diff_vs_best") & (table["protocol"] != "correlation")]
    cells = main.groupby(["protocol", "dataset", "metric"])["model"].apply(set)
    for protocol in ("linear", "fewshot", "finetune", "knn"):
        for dataset in ("demo_cxr", "demo_fundus"):
            assert cells[(protocol, dataset, "accuracy")] == set(MODELS)
    # PSNR is in dB, Mahalanobis distances are unbounded, cosines lie in [-1, 1]
    unbounded = main["metric"].isin(["psnr", "psnr_model_view", "mahalanobis", "cosine"])
    assert main.loc[~unbounded, "value"].between(0, 1).all()
    assert (main.loc[main["metric"].isin(["psnr", "psnr_model_view"]), "value"] > 0).all()
    assert (main.loc[main["metric"] == "mahalanobis", "value"] >= 0).all()
    assert main.loc[main["metric"] == "cosine", "value"].between(-1, 1).all()
    assert table["weights_demo"].all() and (table["seed"] == 3).all()
    for column in PROVENANCE_COLUMNS:
        assert table[column].notna().all() and (table[column].astype(str) != "").all(), column
    assert table["weights_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert set(table.loc[table["dataset"] == "demo_cxr", "split"]) == {"given"}
    # different random nets: different source files
    assert main.groupby("model")["weights_sha256"].first().nunique() == len(MODELS)
    corr = table[table["protocol"] == "correlation"]
    assert corr.loc[corr["model"] == "all", "weights_sha256"].nunique() == 1  # a hash of them all
    own = corr[corr["model"] != "all"].groupby("model")["weights_sha256"].agg(set)  # per-model view: its own
    assert set(own.index) == set(MODELS) and (own.map(len) == 1).all() and own.map(min).nunique() == len(MODELS)


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


def test_torch_free_jobs_ran_without_torch(finished):
    """The job logs' last timing line says whether the process had loaded torch by its exit:
    the report, comparison, figure and data jobs never do, lazy imports included."""
    from test_imports import TORCH_FREE

    seen = {}
    for log in (finished / "logs").rglob("*.log"):
        rule = log.relative_to(finished / "logs").parts[0].removesuffix(".log")
        flags = re.findall(r"medtransfer\.timing: work took .* torch=(\d)", log.read_text())
        assert flags, f"{log} has no timing line (every script calls runtime.log_to_file first)"
        seen.setdefault(rule, set()).add(flags[-1])
    assert {rule for rule in TORCH_FREE & seen.keys() if "1" in seen[rule]} == set()
    assert len(TORCH_FREE & seen.keys()) >= 12 and "1" in seen["finetune"]


def test_second_run_has_nothing_to_do(finished):
    proc = snakemake(finished, "all", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_deleted_table_is_rebuilt_alone_and_identical(own_run):
    table = own_run / "reports" / "table.csv"
    before = table.read_text()
    table.unlink()
    proc = snakemake(own_run, "reports/table.csv", "-n")
    assert "table" in proc.stdout and "extract_features" not in proc.stdout
    snakemake(own_run, "reports/table.csv")
    assert table.read_text() == before


def test_rerun_with_same_seed_gives_the_same_numbers(own_run):
    """One model's features and its finetune (the stochastic protocol) made again, with
    everything downstream (linear, kNN, few-shot, comparisons, table): the same numbers."""
    table = own_run / "reports" / "table.csv"
    before = pd.read_csv(table)
    forced = [own_run / "results" / "features" / "byol" / "demo_cxr.npz",
              own_run / "results" / "finetune" / "byol" / "demo_cxr" / "manyshot.csv"]
    made = [p.stat().st_mtime_ns for p in forced]
    snakemake(own_run, "all", "--forcerun", *(str(p.relative_to(own_run)) for p in forced))
    assert all(p.stat().st_mtime_ns > m for p, m in zip(forced, made))  # they were made again
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
                 "linear_probe", "fewshot", "finetune", "knn", "compare_models", "table", "summary", "figure", "bars",
                 "radar"):
        assert rule in out
    assert yaml.safe_load((workdir / "config" / "config.yaml").read_text())["study"] == "demo"


def test_reconstruction_rows_figures_and_lpips_weights_through_the_download_rule(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    rec = table[(table["protocol"] == "reconstruction") & ~table["metric"].str.endswith("_diff_vs_best")]
    raw = {"lpips_alex", "lpips_vgg", "lpips_squeeze", "lpips_mean", "psnr", "ssim"}
    assert set(rec["metric"]) == raw | {f"{m}_model_view" for m in raw}
    # no demo model equalises its input, so each pair as the model sees it is the raw pair
    both = rec.pivot_table(index=["model", "dataset"], columns="metric", values="value")
    for metric in raw:
        np.testing.assert_allclose(both[f"{metric}_model_view"], both[metric], rtol=1e-9, err_msg=metric)
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


def test_finetune_crops_from_the_whole_image_cache(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    ft = table[(table["protocol"] == "finetune") & (table["metric"] == "accuracy")]
    assert all(details(r)["augment"].startswith("rrc0.08-1_bicubic_aa+hflip_of_full_image") for _, r in ft.iterrows())
    assert (finished / "results" / "cache" / "demo_cxr" / "full.npy").exists()


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


def test_correlation_rows_equal_scipy_on_the_tables_numbers(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    corr = table[table["protocol"] == "correlation"]
    measures = {"imagenet_top1", "lpips_mean", "lpips_alex", "lpips_vgg", "lpips_squeeze", "attentive_diffusion",
                "invariance_rotation", "invariance_hflip", "invariance_brightness"}
    assert {m.split("_", 1)[1] for m in corr["metric"]} == measures
    # per dataset, pooled (all), dataset-averaged (mean); per model over the datasets (two: NaN)
    assert set(corr["dataset"]) == {"demo_cxr", "demo_fundus", "all", "mean"}
    assert set(corr["model"]) == {"all", *MODELS} and corr.loc[corr["model"] != "all", "value"].isna().all()
    main = table[~table["metric"].str.endswith("_diff_vs_best")]
    headline = {"demo_cxr": "accuracy", "demo_fundus": "balanced_accuracy"}
    checked = 0
    for _, row in corr[(corr["setting"] == "linear_manyshot") & ~corr["dataset"].isin(["all", "mean"])].iterrows():
        method, measure = row["metric"].split("_", 1)
        part = main[main["dataset"] == row["dataset"]]
        y = part[(part["protocol"] == "linear") & (part["metric"] == headline[row["dataset"]])].set_index("model")["value"]
        models = MODELS
        if measure == "imagenet_top1":  # models without a published top-1 are left out
            models = [m for m in MODELS if REGISTRY[m].top1 is not None]
            x = pd.Series({m: REGISTRY[m].top1 for m in models})
        elif measure == "attentive_diffusion":
            x = part[part["metric"] == "attentive_diffusion"].set_index("model")["value"]
        elif measure.startswith("lpips_"):
            x = part[part["metric"] == measure].set_index("model")["value"]
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


TRANSFER = ("linear", "fewshot", "finetune", "knn")
DAGGER = "\u2020"


def _markdown_tables(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """Section title -> model -> column -> cell of every pipe table in a Markdown summary."""
    tables, title = {}, None
    for block in text.split("\n## ")[1:]:
        title, *lines = block.splitlines()
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
        if rows:
            header = rows[0]
            tables[title] = {r[0]: dict(zip(header[1:], r[1:])) for r in rows[2:]}
    return tables


def test_summary_tables_agree_with_the_paired_comparisons(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    tables = _markdown_tables((finished / "reports" / "summary.md").read_text())
    titles = {"linear": "Linear probe", "fewshot": "Few-shot (prototypical)", "finetune": "Finetune",
              "knn": "Weighted kNN"}
    assert set(tables) == {f"{t}: headline metric" for t in titles.values()} | {
        f"{titles[p]}: AUROC" for p in ("linear", "finetune", "knn")}
    diffs = table[table["metric"].str.endswith("_diff_vs_best") & table["protocol"].isin(TRANSFER)]
    checked = 0
    for _, row in diffs.iterrows():
        metric = row["metric"].removesuffix("_diff_vs_best")
        cell = tables[f"{titles[row['protocol']]}: headline metric"][row["model"]][f"{row['dataset']}: {metric}"]
        info = details(row)
        value = table[(table["protocol"] == row["protocol"]) & (table["dataset"] == row["dataset"])
                      & (table["model"] == row["model"]) & (table["metric"] == metric)]["value"].item()
        assert cell.strip("*").startswith(f"{100 * value:.1f}"), (row["protocol"], row["model"], cell)
        assert cell.startswith("**") == (info["best"] == row["model"]), cell
        assert cell.endswith(DAGGER) == (info["best"] != row["model"] and not info["differs"]), cell
        checked += 1
    assert checked == len(TRANSFER) * 2 * len(MODELS)
    for title, grid in tables.items():
        assert set(grid) == set(MODELS) and all(cell["average rank"] for cell in grid.values()), title
    text = (finished / "reports" / "summary.md").read_text()
    assert "nothing to compare with" in text and "DEMO study" in text  # the demo has no published cell
    tex = (finished / "reports" / "summary.tex").read_text()
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == len(tables)
    for block in tex.split("\\midrule")[1:]:
        body = [line for line in block.split("\\bottomrule")[0].splitlines() if line.strip()]
        assert len(body) == len(MODELS) and len({line.count("&") for line in body}) == 1
    assert (finished / "reports" / "summary.html").read_text().count("<table") == len(tables)


def _not_blank(path) -> bool:
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    return pixels.std() > 5 and (pixels < 128).mean() > 0.005


def test_figures_are_not_blank_and_have_pdfs(finished):
    figures = finished / "reports" / "figures"
    expected = ([figures / f"{p}.png" for p in (*TRANSFER, "reconstruction", "saliency", "invariance")]
                + [figures / "bars" / f"{p}.png" for p in TRANSFER] + [figures / "radar" / f"{m}.png" for m in MODELS])
    for png in expected:
        assert png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF", png
    for png in sorted(figures.rglob("*.png")):
        assert _not_blank(png), png
    assert len(list(figures.rglob("*.png"))) >= len(expected)


def test_summary_rebuilds_alone_from_the_table(own_run):
    summary = own_run / "reports" / "summary.md"
    before = summary.read_text()
    summary.unlink()
    proc = snakemake(own_run, "reports/summary.md", "-n")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    assert set(jobs) - {"total"} == {"summary"}, proc.stdout  # nothing upstream is recomputed
    snakemake(own_run, "reports/summary.md")
    assert summary.read_text() == before
    again = snakemake(own_run, "reports/summary.md", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def _registered(finished) -> set[str]:
    """Every output the workflow flags with report() in this study."""
    files = {"reports/table.csv", "reports/summary.md", "reports/summary.tex", "reports/summary.html"}
    files |= {"reports/cost.csv", "reports/figures/cost.png"}
    files |= {f"reports/figures/{p}.png" for p in (*TRANSFER, "reconstruction", "saliency", "invariance")}
    files |= {f"reports/figures/bars/{p}.png" for p in TRANSFER} | {f"reports/figures/radar/{m}.png" for m in MODELS}
    for dataset in ("demo_cxr", "demo_fundus"):
        files |= {f"reports/figures/reconstruction/{dataset}_{k}.png" for k in ("grid", "lpips")}
        files |= {f"reports/figures/saliency/{dataset}/{m}_overlay.png" for m in MODELS}
    files |= {str(p.relative_to(finished)) for p in (finished / "reports" / "figures" / "correlation").glob("*.png")}
    return files


def test_html_report_in_a_real_browser(own_run):
    """Snakemake's report opened in headless Chromium: every registered table and figure is listed
    in the rendered page, the console shows no errors, and the screenshot is not blank."""
    if find_chromium() is None:
        pytest.skip("no chromium on PATH: install Debian's chromium package (.ci/run does where it can)")
    snakemake(own_run, "--report", "reports/report.html")
    with Page((own_run / "reports" / "report.html").as_uri()) as page:
        page.wait_for("document.body.innerText.includes('RESULTS')")
        categories = json.loads(page.evaluate("JSON.stringify(categories)"))
        registered = {f for subs in categories.values() for files in subs.values() for f in files}
        assert registered == _registered(own_run)
        listed = set()
        for category, subs in categories.items():
            _click(page, "Results", required=False)
            _click(page, category)
            for sub in subs if len(subs) > 1 else [None]:
                if sub is not None:
                    _click(page, sub)
                text = page.evaluate("document.querySelector('nav').innerText")
                listed |= {f for f in registered if f in text}
                if sub is not None:
                    _click(page, category)
        assert listed == registered
        _click(page, "Results", required=False)
        _click(page, "summary")
        _open(page, "reports/summary.html")
        page.wait_for("!!document.querySelector('main iframe, main img, iframe')")
        page._drain(1.0)
        assert page.errors == []
        shot = page.screenshot(own_run / "reports" / "report.png")
    assert _not_blank(shot)
    if os.environ.get("MEDTRANSFER_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "report.png")


def _open(page, path: str) -> None:
    """Show a listed result: the first button or link in its row of the results table."""
    found = page.evaluate(f"""(() => {{
        const td = [...document.querySelectorAll('td')].find(e => e.textContent.trim() === {json.dumps(path)});
        const button = td && td.parentElement.querySelector('a, button');
        if (button) button.click();
        return !!button; }})()""")
    assert found, f"no result {path!r} listed in the report"
    page._drain(0.5)


def _click(page, text: str, required: bool = True) -> None:
    """Click the page's link whose text is ``text`` (the report's menus and breadcrumbs are links)."""
    found = page.evaluate(f"""(() => {{
        const a = [...document.querySelectorAll('a')].find(e => e.textContent.trim() === {json.dumps(text)});
        if (a) a.click();
        return !!a; }})()""")
    assert found or not required, f"no link {text!r} in the report"
    page._drain(0.3)


def test_cost_report_sums_every_jobs_benchmark(own_run):
    # made again in this copy of the finished run: the sum then covers every file the run left
    snakemake(own_run, "reports/cost.csv", "--forcerun", "cost")
    cost = pd.read_csv(own_run / "reports" / "cost.csv")
    files = list((own_run / "benchmarks").rglob("*.tsv"))
    total = cost[(cost["stage"] == "all") & (cost["model"] == "all")].iloc[0]
    assert total["jobs"] == len(files)  # every job's file (the cost rule itself writes none: it runs last)
    assert total["wall_s"] == pytest.approx(sum(pd.read_csv(f, sep="\t")["s"].sum() for f in files), abs=0.01)
    stages = {p.stem for p in (own_run / "workflow" / "rules").glob("*.smk")} - {"common", "cost"}
    assert set(cost.loc[cost["model"] == "all", "stage"]) - {"all"} == stages
    assert set(cost.loc[cost["stage"] == "all", "model"]) - {"all"} == set(MODELS)
    assert (own_run / "reports" / "figures" / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
