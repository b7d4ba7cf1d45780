"""The published study's config builds its whole DAG against fake trees in the real layouts."""

import re

import pandas as pd
import yaml

from conftest import REPO
from test_data_adapters import make_amd, make_bach, make_chestx, make_chexpert, make_dr, make_pm, make_tb
from workflow_helpers import make_workdir, snakemake

DATASETS = ["bach", "chestx", "chexpert", "diabetic_retinopathy", "ichallenge_amd", "ichallenge_pm",
            "montgomerycxr", "shenzhencxr"]


def _fake_trees(data):
    for name in DATASETS:
        (data / name).mkdir(parents=True)
    make_bach(data / "bach")
    make_chestx(data / "chestx")
    make_chexpert(data / "chexpert")
    make_dr(data / "diabetic_retinopathy")
    make_amd(data / "ichallenge_amd")
    make_pm(data / "ichallenge_pm")
    make_tb(data / "montgomerycxr", "montgomerycxr")
    make_tb(data / "shenzhencxr", "shenzhencxr")


def _jobs(output: str) -> dict[str, int]:
    stats = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}


def test_paper_config_indexes_fake_trees_and_builds_the_full_dag(tmp_path):
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert set(paper["datasets"]) == set(DATASETS) and len(paper["models"]) == 6
    workdir = make_workdir(tmp_path / "run", paper)
    _fake_trees(workdir / "data")
    indexes = [f"results/data/{name}/index.csv" for name in DATASETS]
    snakemake(workdir, *indexes)  # the real index rules on the fake downloads
    for name in DATASETS:
        index = pd.read_csv(workdir / "results" / "data" / name / "index.csv")
        assert {"train", "test"} == set(index["split"]), name
        assert index["split_rule"].str.startswith(("published", "given")).all(), name
    jobs = _jobs(snakemake(workdir, "all", "-n").stdout)
    assert jobs["download_weights"] == 6 and jobs["convert_weights"] == 6
    assert jobs["cache_images"] == 8 and jobs["sample_episodes"] == 8
    for rule in ("extract_features", "linear_probe", "fewshot", "finetune"):
        assert jobs[rule] == 48, rule
    assert jobs["compare_models"] == 24 and "index_dataset" not in jobs


def test_missing_dataset_root_is_named(tmp_path):
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    workdir = make_workdir(tmp_path, paper)
    proc = snakemake(workdir, "results/data/bach/index.csv", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr + _logs(workdir)
    assert re.search(r"data/bach.*(does not exist|not found|missing)", out), out[-3000:]


def _logs(workdir):
    return "".join(p.read_text() for p in (workdir / "logs").rglob("*.log")) if (workdir / "logs").exists() else ""
