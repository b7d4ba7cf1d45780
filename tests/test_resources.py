"""Cluster resources: every rule declares them, heavy ones are sized from their inputs, and the
SLURM profile names only real rules."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from medtransfer import resources
from medtransfer.config import resolve

RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
GPU_RULES = {"extract_features", "finetune", "reconstruct", "score_reconstruction", "saliency", "invariance"}


def _rule_blocks():
    for smk in RULES:
        for block in re.split(r"(?m)^(?=rule )", smk.read_text())[1:]:
            yield re.match(r"rule (\w+):", block).group(1), block


def test_every_rule_declares_threads_memory_and_runtime():
    for name, block in _rule_blocks():
        assert re.search(r"(?m)^    threads: \d+$", block), f"rule {name} declares no threads"
        assert "mem_mb=" in block and "runtime=" in block, f"rule {name} declares no mem_mb/runtime"
        assert ("gpu=gpus" in block) == (name in GPU_RULES), f"rule {name}: gpu request"


def test_a_chexpert_finetune_gets_hours_and_a_demo_one_minutes():
    paper = resolve(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    demo = resolve(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    big = resources.finetune(191_000, image_size=224, settings=paper["protocols"]["finetune"])
    small = resources.finetune(64, image_size=demo["image_size"], settings=demo["protocols"]["finetune"])
    assert big.runtime > 6 * 60 and small.runtime < 15
    searched = resources.finetune(191_000, image_size=224, settings={
        **paper["protocols"]["finetune"], "search": True, "lr_grid": [0.1, 0.01, 0.001], "wd_grid": [0, 1e-5]})
    assert searched.runtime > 5 * big.runtime
    published_grid = resources.finetune(191_000, image_size=224, settings={**paper["protocols"]["finetune"], "search": True})
    assert published_grid.runtime > 3 * searched.runtime  # 20 runs against 6
    assert resources.extract(191_000, image_size=224).runtime > 3 * resources.extract(1000, image_size=224).runtime


def test_published_saliency_is_sized_by_its_windows():
    paper = resolve(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    settings = paper["protocols"]["saliency"]
    published = resources.saliency(settings=settings)  # 233 x 233 windows per image at stride 1
    coarse = resources.saliency(settings={**settings, "stride": 4})
    assert published.runtime > 5 * coarse.runtime
    assert resources.invariance(1000, image_size=224, settings=paper["protocols"]["invariance"]).runtime >= 6
    # the whitening's clean crops: one forward pass per training image (80 %), or covariance_images of them
    inv = paper["protocols"]["invariance"]
    per_pass = resources._scale(224) / resources.RATES["extract"]
    every = resources.invariance_seconds(100_000, image_size=224, settings=inv)
    some = resources.invariance_seconds(100_000, image_size=224, settings={**inv, "covariance_images": 1000})
    assert every - some == pytest.approx((80_000 - 1000) * per_pass)


def test_a_retry_doubles_the_runtime():
    first = resources.extract(50_000, image_size=224, attempt=1).runtime
    assert resources.extract(50_000, image_size=224, attempt=2).runtime == 2 * first


def test_images_are_counted_from_the_index(tmp_path):
    index = tmp_path / "index.csv"
    index.write_text("path,label,split\n" + "a.png,0,train\n" * 7)
    assert resources.count_images(index) == 7
    assert resources.count_images(tmp_path / "missing.csv") == 0  # before the index exists


def test_an_index_is_counted_once_until_it_changes(tmp_path):
    index = tmp_path / "index.csv"
    assert resources.count_images(index) == 0  # missing: not remembered as 0
    index.write_text("path,label,split\n" + "a.png,0,train\n" * 7)
    os.utime(index, ns=(1, 10**18))
    assert resources.count_images(index) == 7
    six_rows = "path,label,split\n" + "a.png,0,train\n" * 5 + "images/series/b.png,0,train\n"
    assert len(six_rows) == index.stat().st_size
    index.write_text(six_rows)
    os.utime(index, ns=(1, 10**18))  # same size and mtime: the remembered count (the key is the stat)
    assert resources.count_images(index) == 7
    os.utime(index, ns=(1, 10**18 + 1))  # touched: counted again
    assert resources.count_images(index) == 6
    index.write_text("path,label,split\n" + "a.png,0,train\n" * 9)
    os.utime(index, ns=(1, 10**18 + 1))  # same mtime, other size: counted again
    assert resources.count_images(index) == 9


def test_profile_groups_and_resources_name_real_rules():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    rules = {name for name, _ in _rule_blocks()}
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    assert set(profile["groups"]) <= rules
    assert set(profile["groups"].values()) == set(profile["group-components"])


@pytest.mark.slow
def test_profile_builds_the_tiny_study_dag():
    """The profile parses (plugin installed, options valid) and groups the small jobs."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "all", "--profile", "profiles/slurm", "-n",
                           "--configfile", ".test/config.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "extract_features" in proc.stdout + proc.stderr


SCALE = REPO / "bench" / "results" / "scale.csv"  # bench/scale.py's full run, recorded in docs/performance.md
CPU_CURVES = {  # bench stage -> the rule whose request must hold it, at the same number of images
    "index_chexpert": "index_dataset", "linear": "linear_probe", "knn": "knn", "episodes": "sample_episodes",
    "fewshot": "fewshot", "compare": "compare_models", "multiview": "multiview_invariance",
}
FIXED_RULES = {"table": "table", "summary": "summary", "correlate": "correlate", "figure": "figure",
               "bars": "bars", "radar": "radar", "cost": "cost"}


def _measured():
    import pandas as pd

    frame = pd.read_csv(SCALE)
    assert (frame["status"] == "ok").all(), frame[frame["status"] != "ok"]
    return frame


def _at(frame, stage, images):
    row = frame[(frame["stage"] == stage) & (frame["images"] == images)]
    assert len(row) == 1, (stage, images)
    return row.iloc[0]


def test_requests_hold_the_measured_curves_at_chexperts_size():
    """Every image-sized rule's first request at 223,414 images covers the bench's peak memory and
    time there (the GPU rules' time is priced at a GPU rate; their memory is checked)."""
    paper = resolve(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    frame, n = _measured(), resources.REFERENCE_IMAGES
    requests = {stage: resources.measured(rule, n) for stage, rule in CPU_CURVES.items()}
    requests["cache_images"] = resources.cache(n, threads=4, rule="cache_images")
    requests["cache_full_images"] = resources.cache(n, threads=4, rule="cache_full_images")
    requests["features"] = resources.extract(n, image_size=224)
    requests["finetune"] = resources.finetune(n, image_size=224, settings=paper["protocols"]["finetune"])
    requests["whiten_ledoit_wolf"] = requests["whiten_ridge"] = resources.invariance(
        n, image_size=224, settings=paper["protocols"]["invariance"])
    for stage, request in requests.items():
        row = _at(frame, stage, n)
        assert request.mem_mb >= row["peak_mb"], (stage, request, row["peak_mb"])
        assert request.runtime * 60 >= row["seconds"], (stage, request, row["seconds"])


def test_a_retry_doubles_every_measured_request():
    for rule in resources.CURVES:
        first, second = resources.memory_mb(rule, 88_702), resources.memory_mb(rule, 88_702, attempt=2)
        assert second == 2 * first, rule
    assert resources.measured("knn", 88_702, attempt=2).runtime == 2 * resources.measured("knn", 88_702).runtime


def test_fixed_requests_hold_a_study_seven_times_the_published_one():
    """The report rules read rows, not images: the bench's study of 100 models x 10 datasets
    (the published one: 14 x 11) stays within their fixed requests."""
    frame = _measured()
    blocks = dict(_rule_blocks())
    for stage, rule in FIXED_RULES.items():
        row = _at(frame, stage, 100_000)
        mem = int(re.search(r"mem_mb=(\d+)", blocks[rule]).group(1))
        runtime = int(re.search(r"runtime=(\d+)", blocks[rule]).group(1))
        assert mem >= row["peak_mb"] and runtime * 60 >= row["seconds"], (rule, mem, runtime, dict(row))


def test_measured_growth_is_linear_and_recorded_in_the_docs():
    """No stage's own memory grows faster than its images (exponent <= 1.1); time at most 1.15
    but kNN's (n_test x n_train similarities); the docs table shows the CSV's figures."""
    import pandas as pd

    exps = pd.read_csv(SCALE.with_name("scale_exponents.csv")).set_index("stage")
    assert (exps["growth"] <= 1.1).all(), exps["growth"]
    assert (exps.drop("knn")["time"] <= 1.15).all(), exps["time"]  # least squares over the four sizes
    docs = (REPO / "docs" / "performance.md").read_text()
    frame = _measured()
    for row in frame[frame["images"] == resources.REFERENCE_IMAGES].itertuples():
        assert re.search(rf"\| {row.stage} \| 223,414 \| {row.seconds:,.1f} \| {row.peak_mb:,.0f} \|", docs), row.stage
