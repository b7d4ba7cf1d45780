"""The cost report (benchmark files summed per stage and model) and the study cost estimate."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtransfer import resources
from medtransfer.config import resolve
from medtransfer.reporting import cost

REPO = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(folder: Path, rel: str, seconds: float, rss: float, cpu: float) -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:{int(seconds):02d}\t{rss}\t900.0\t1.0\t1.0\t0.1\t0.1\t50.0\t{cpu}\n")


@pytest.fixture
def benchmarks(tmp_path):
    folder = tmp_path / "benchmarks"
    _bench(folder, "extract_features/moco-v2/demo_cxr.tsv", 10.0, 800.0, 9.0)
    _bench(folder, "extract_features/byol/demo_cxr.tsv", 30.0, 900.0, 25.0)
    _bench(folder, "finetune/moco-v2/demo_cxr.tsv", 40.0, 1200.0, 35.0)
    _bench(folder, "cache_images/demo_cxr.tsv", 15.0, 300.0, 14.0)
    _bench(folder, "table.tsv", 5.0, 100.0, 4.0)
    # a model whose name contains another's must not be taken for it
    _bench(folder, "linear_probe/moco-v2-long/demo_cxr.tsv", 2.0, 50.0, 1.0)
    return folder


STAGES = {"extract_features": "features", "finetune": "finetune", "cache_images": "data", "table": "report",
          "linear_probe": "linear"}


def test_jobs_get_their_stage_model_and_dataset(benchmarks):
    jobs = cost.read_benchmarks(benchmarks, stages=STAGES, models=["moco-v2", "byol", "moco-v2-long"],
                                datasets=["demo_cxr"])
    by = {(r["stage"], r["model"], r["dataset"]): r["wall_s"] for _, r in jobs.iterrows()}
    assert by[("features", "moco-v2", "demo_cxr")] == 10.0 and by[("features", "byol", "demo_cxr")] == 30.0
    assert by[("data", "all", "demo_cxr")] == 15.0 and by[("report", "all", "all")] == 5.0
    assert by[("linear", "moco-v2-long", "demo_cxr")] == 2.0


def test_totals_per_stage_and_model_add_up(benchmarks):
    jobs = cost.read_benchmarks(benchmarks, stages=STAGES, models=["moco-v2", "byol", "moco-v2-long"],
                                datasets=["demo_cxr"])
    table = cost.summarise(jobs).set_index(["stage", "model"])
    assert table.loc[("all", "all"), "wall_s"] == 102.0 and table.loc[("all", "all"), "jobs"] == 6
    assert table.loc[("features", "all"), "wall_s"] == 40.0
    assert table.loc[("features", "all"), "wall_share"] == pytest.approx(40 / 102, abs=1e-4)
    assert table.loc[("all", "moco-v2"), "wall_s"] == 50.0 and table.loc[("all", "moco-v2"), "peak_rss_mb"] == 1200.0
    assert table.loc[("finetune", "moco-v2"), "cpu_s"] == 35.0
    stages = table.xs("all", level="model").drop("all")
    assert stages["wall_s"].sum() == pytest.approx(102.0)  # every job in exactly one stage


def test_cost_report_files(benchmarks, tmp_path):
    out, fig = tmp_path / "reports" / "cost.csv", tmp_path / "reports" / "figures" / "cost.png"
    cost.write_cost(benchmarks=benchmarks, out=out, figure=fig, stages=STAGES,
                    models=["moco-v2", "byol", "moco-v2-long"], datasets=["demo_cxr"], study="t")
    table = pd.read_csv(out)
    assert list(table.columns) == cost.COST_COLUMNS and set(table["study"]) == {"t"}
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_benchmark_file_is_named(tmp_path):
    folder = tmp_path / "benchmarks"
    (folder / "finetune" / "m").mkdir(parents=True)
    (folder / "finetune" / "m" / "d.tsv").write_text("wall\n1\n")
    with pytest.raises(ValueError, match=r"finetune/m/d\.tsv.*no `s`"):
        cost.read_benchmarks(folder, stages={}, models=["m"], datasets=["d"])
    with pytest.raises(ValueError, match="no benchmark files"):
        cost.write_cost(benchmarks=tmp_path / "none", out=tmp_path / "c.csv", figure=tmp_path / "c.png",
                        stages={}, models=[], datasets=[], study="t")


def _paper() -> dict:
    return resolve(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))


def test_estimate_prices_the_published_study_from_documented_sizes(tmp_path):
    config = _paper()
    plan = cost.estimate(config, index_dir=tmp_path)
    chexpert = plan[(plan["dataset"] == "chexpert") & (plan["stage"] == "features")].iloc[0]
    assert chexpert["images"] == cost.TYPICAL_IMAGES["chexpert"] and chexpert["size_from"] == "documented"
    rate = cost.GPU_RATES[config["precision"]]["extract"]
    expected = len(config["models"]) * chexpert["images"] * (config["image_size"] / 224) ** 2 / rate / 3600
    assert chexpert["hours"] == pytest.approx(expected)
    finetune = plan[plan["stage"] == "finetune"]["hours"].sum()
    assert finetune > plan[plan["stage"] == "features"]["hours"].sum()  # 5,000 steps beat one pass
    assert set(plan["unit"]) == {"GPU-hours", "CPU core-hours"}


def test_estimate_counts_an_existing_index_and_takes_overrides(tmp_path):
    config = _paper()
    (tmp_path / "bach").mkdir()
    (tmp_path / "bach" / "index.csv").write_text("path,label\n" + "a.png,0\n" * 7)
    plan = cost.estimate(config, index_dir=tmp_path, images={"shenzhencxr": 11})
    first = plan.groupby("dataset").first()
    assert first.loc["bach", "images"] == 7 and first.loc["bach", "size_from"] == "index"
    assert first.loc["shenzhencxr", "images"] == 11 and first.loc["shenzhencxr", "size_from"] == "given"
    assert resources.count_images(tmp_path / "bach" / "index.csv") == 7


def test_estimate_refuses_an_unknown_size(tmp_path):
    config = _paper()
    config["datasets"] = {"mine": {"kind": "folder", "root": "x"}}
    with pytest.raises(ValueError, match=r"'mine'.*--images mine=N"):
        cost.estimate(config, index_dir=tmp_path)


def test_cli_prints_gpu_hours_per_stage(capsys, tmp_path):
    assert cost.main(["--configfile", str(REPO / "config" / "paper.yaml"), "--index-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "GPU-hours per stage" in out and "finetune" in out and "total" in out
    assert cost.main(["--configfile", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="NAME=COUNT"):
        cost.main(["--images", "bach"])
