from pathlib import Path

import pytest
import yaml

from conftest import REPO
from medtransfer.study import Study, Unit
from medtransfer.weights.registry import REGISTRY, resolve_model


@pytest.fixture(autouse=True)
def in_a_workdir(tmp_path, monkeypatch):
    """Run where the configs' data_root exists and holds the user dataset's labels.csv
    (Study checks every root and CSV before any job runs)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.csv").write_text("path,label\na.png,x\n")
    monkeypatch.chdir(tmp_path)


def _config(**models):
    return {
        "models": models or {"supervised": {}},
        "datasets": {"demo_cxr": {"kind": "demo_cxr"}, "mine": {"kind": "csv", "csv": "labels.csv"}},
        "protocols": {"linear": {}, "fewshot": {"n_support": [5, 20], "n_way": 2}},
        "data_root": "data",
    }


def test_registry_has_the_six_imagenet_resnet50s():
    assert {"supervised", "moco-v2", "swav", "pirl", "byol", "simclr-v1"} <= set(REGISTRY)  # + test_registry_zoo
    assert REGISTRY["simclr-v1"].normalisation == "none" and REGISTRY["byol"].format == "byol"


def test_user_model_from_a_local_path_needs_no_download():
    study = Study(_config(**{"my-net": {"path": "/w/my.pth", "format": "torchvision"}}))
    assert study.weights_source("my-net") == "/w/my.pth"
    assert study.download_inputs("my-net") == []


def test_published_model_downloads_to_its_file_name_and_file_urls_are_inputs():
    study = Study(_config(pirl={}, swav={"url": "file:resources/x/swav.tar"}))
    assert study.weights_source("pirl") == "resources/weights/download/pirl/PIRL.pth"
    assert study.download_inputs("pirl") == []
    assert study.download_inputs("swav") == ["resources/x/swav.tar"]


@pytest.mark.parametrize("overrides, message", [
    ({"format": "keras", "url": "http://x"}, "unknown format 'keras'"),
    ({"url": "http://x"}, "needs `format` and a `url` or `path`"),
    ({"format": "moco", "url": "http://x", "normalisation": "zscore"}, "unknown normalisation 'zscore'"),
    ({"format": "moco", "url": "http://x", "arch": "vit"}, "unknown arch 'vit'"),
])
def test_bad_user_models_are_explained(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_model("my-net", overrides)


def test_units_cover_protocols_datasets_and_shots():
    study = Study(_config())
    units = study.units()
    assert Unit("fewshot", "mine", "20shot") in units and Unit("linear", "demo_cxr", "manyshot") in units
    assert len(units) == 2 * 1 + 2 * 2
    assert study.dataset_csv("mine") == "data/labels.csv"
    assert study.dataset_csv("demo_cxr") == "resources/demo/data/demo_cxr/labels.csv"


def test_dataset_settings_checked():
    config = _config()
    config["datasets"]["x"] = {"kind": "bach"}
    with pytest.raises(ValueError, match="dataset 'x': kind bach needs `root:`"):
        Study(config)
    config["datasets"]["x"] = {"kind": "csv"}
    with pytest.raises(ValueError, match="kind csv needs `csv:"):
        Study(config)


def test_registry_pin_is_dropped_for_a_mirror_or_local_file():
    assert resolve_model("supervised").sha256 == "0676ba61"
    assert resolve_model("supervised", {"url": "file:x.pth"}).sha256 == ""
    assert resolve_model("supervised", {"url": "file:x.pth", "sha256": "ab" * 32}).sha256 == "ab" * 32


def _why_config():
    Path("data/cx").mkdir(exist_ok=True)  # roots must exist (the autouse fixture's working folder)
    config = _config(supervised={}, byol={})
    config["datasets"]["cx"] = {"kind": "chexpert", "root": "cx", "multiview": True}
    config["protocols"].update({"saliency": {}, "invariance": {"transforms": {"hflip": [1], "rotation": [5]}}})
    config["correlation"] = {}
    return config


def test_why_stages_units_multiview_and_correlation_targets():
    study = Study(_why_config())
    units = study.units()
    assert Unit("saliency", "mine", "occlusion") in units
    assert Unit("invariance", "cx", "multiview") in units and Unit("invariance", "mine", "multiview") not in units
    assert study.transforms() == ["rotation", "hflip"]  # the registry's order
    assert study.table_inputs()[-1] == "results/correlation/correlation.csv"
    assert study.correlation_measures() == ["imagenet_top1", "attentive_diffusion", "invariance_rotation",
                                            "invariance_hflip", "invariance_multiview"]
    assert study.top1() == {"supervised": 76.1, "byol": 74.3}
    assert study.default_settings("knn") == {"k": 20, "temperature": 0.07, "n_bootstrap": 1000}
    assert all("correlation" not in f for f in Study(_config()).table_inputs())


def test_bad_why_settings_fail_before_any_work():
    config = _why_config()
    config["datasets"]["mine"]["multiview"] = True
    with pytest.raises(ValueError, match=r"dataset 'mine': multiview: true, but kind 'csv' has no multi-view pairs; "
                                         r"kinds with pairs: \['chexpert', 'diabetic_retinopathy'\]"):
        Study(config)
    config = _why_config()
    config["protocols"]["invariance"]["transforms"] = {"rotate": [5]}
    with pytest.raises(ValueError, match=r"'rotate' is not one of \['rotation', 'hflip', 'vflip'"):
        Study(config)
    config = _why_config()
    config["protocols"]["saliency"] = {"input_size": 64, "window": 8, "stride": 5, "crop_size": 56}
    with pytest.raises(ValueError, match=r"stride \(5\) must be at most window \(8\) and divide input_size - window"):
        Study(config)


def test_the_report_figures_follow_the_protocols_models_and_measures():
    study = Study(_why_config())
    figures = study.figures()
    assert "reports/figures/saliency/cx/byol_overlay.png" in figures
    assert "reports/figures/correlation/invariance_multiview.png" in figures
    assert "reports/figures/bars/saliency.png" not in figures  # bars only for transfer protocols
    assert {"reports/figures/radar/supervised.png", "reports/figures/radar/byol.png"} <= set(figures)
    demo = Study(_config())
    assert demo.figures() == ["reports/figures/linear.png", "reports/figures/fewshot.png",
                              "reports/figures/bars/linear.png", "reports/figures/bars/fewshot.png",
                              "reports/figures/radar/supervised.png"]


def test_settings_of_a_protocol_not_run_are_the_schemas():
    study = Study(_config())
    assert study.settings_or_defaults("knn") == study.default_settings("knn")
    assert study.settings_or_defaults("linear") == study.settings("linear")


def test_grey_datasets_get_no_colour_transform_in_the_dag():
    """hue leaves a grey image as it is: no hue target (rows, comparison, measure) for a grey dataset."""
    config = _why_config()  # demo_cxr and cx (chexpert) are grey, mine (csv) colour by default
    config["protocols"]["invariance"]["transforms"] = {"rotation": [0, 90], "hue": [0, 0.25]}
    study = Study(config)
    hue = {u.dataset for u in study.units() if u.setting == "hue"}
    assert hue == {"mine"} and study.colour == {"demo_cxr": False, "mine": True, "cx": False}
    targets = study.table_inputs("invariance")
    assert "results/invariance/byol/mine/hue.csv" in targets and "results/compare/invariance/mine/hue.csv" in targets
    assert [f for f in targets if "hue" in f and "/mine/" not in f] == []
    assert "results/invariance/byol/cx/rotation.csv" in targets
    assert study.setting_names("invariance", "cx") == ["rotation", "multiview"]
    assert study.invariance_datasets(colour=True) == ["mine"]  # the rule with every transform
    assert study.invariance_datasets(colour=False) == ["demo_cxr", "cx"]  # the rule without hue
    assert study.transforms(colour=False) == ["rotation"]
    assert study.left_out_settings("invariance") == {"demo_cxr": ["hue"], "cx": ["hue"]}
    config["datasets"]["mine"]["colour"] = False
    grey = Study(config)
    assert not [u for u in grey.units() if u.setting == "hue"] and "invariance_hue" not in grey.correlation_measures()
    assert grey.invariance_datasets(colour=True) == [] and len(grey.invariance_datasets(colour=False)) == 3
    config["protocols"]["invariance"]["transforms"] = {"rotation": [0, 90]}  # no colour transform: one rule
    plain = Study(config)
    assert plain.invariance_datasets(colour=True) == ["demo_cxr", "mine", "cx"]
    assert plain.invariance_datasets(colour=False) == [] and plain.left_out_settings("invariance") == {}


def test_the_colour_flag_is_for_users_data_only():
    config = _why_config()
    config["datasets"]["cx"]["colour"] = True
    with pytest.raises(ValueError, match=r"dataset 'cx': kind chexpert records its own colour \(False\); `colour` is "
                                         r"for the kinds csv and imagefolder only: remove it"):
        Study(config)


def test_the_paper_config_runs_the_published_invariance_grids():
    """The published grids, identity included (rotation 0, hflip 0, hue 0), and hue on colour data only."""
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for spec in paper["datasets"].values():
        Path("data", spec["root"]).mkdir(parents=True, exist_ok=True)
    study = Study(paper)
    assert study.settings("invariance")["transforms"] == {
        "rotation": list(range(0, 360, 18)), "hflip": [0, 1], "hue": [-0.5, -0.25, 0, 0.25, 0.5],
        "translation": [-0.1, 0.1]}
    assert study.transforms() == ["rotation", "hflip", "hue", "translation"]
    colour = {"bach", "diabetic_retinopathy", "ichallenge_amd", "ichallenge_pm", "cifar10_2way", "cifar10_5way"}
    assert {u.dataset for u in study.units() if u.setting == "hue"} == colour
    assert set(study.left_out_settings("invariance")) == set(paper["datasets"]) - colour
