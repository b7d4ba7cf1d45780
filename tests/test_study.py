import pytest

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


def test_registry_has_the_six_published_models():
    assert set(REGISTRY) == {"supervised", "moco-v2", "swav", "pirl", "byol", "simclr-v1"}
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
