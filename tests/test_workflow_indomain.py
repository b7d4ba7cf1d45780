"""The in-domain models and the random baseline through the whole workflow, for real.

The second demo study (``config/indomain.yaml``: the Lightning DenseNet-121 of MIMIC-CheXpert
with histogram equalisation, the MoCo-CXR ResNet-18 with the CXR mean/std, and the untrained
random ResNet-50, on demo_cxr), every stage, with the tiny study's protocol settings
(``.test/config.yaml``) so it takes about two minutes. Their demo files are written in the
published layouts and converted by the real converters.
"""

import pandas as pd
import pytest
import torch
import yaml

from medtransfer.results import RESULT_COLUMNS, details
from medtransfer.weights.backbones import load_weights
from workflow_helpers import REPO, make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow  # the whole second demo study through Snakemake

MODELS = ["mimic-chexpert_lr_0.1", "moco-cxr-r18", "random"]
ARCHS = {"mimic-chexpert_lr_0.1": "densenet121", "moco-cxr-r18": "resnet18", "random": "resnet50"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    config = yaml.safe_load((REPO / "config" / "indomain.yaml").read_text())
    assert list(config["models"]) == MODELS
    tiny = tiny_config()
    config.update(image_size=tiny["image_size"], protocols=tiny["protocols"], device="cpu")
    config["datasets"]["demo_cxr"]["demo"] = tiny["datasets"]["demo_cxr"]["demo"]
    workdir = make_workdir(tmp_path_factory.mktemp("indomain"), config)
    snakemake(workdir, "all")
    return workdir


def test_every_stage_has_rows_for_every_model(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    assert list(table.columns) == RESULT_COLUMNS
    main = table[~table["metric"].str.endswith("_diff_vs_best") & (table["protocol"] != "correlation")]
    for protocol in ("linear", "fewshot", "knn", "finetune", "reconstruction", "saliency", "invariance"):
        assert set(main.loc[main["protocol"] == protocol, "model"]) == set(MODELS), protocol
    assert table["weights_sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_normalisation_and_random_flag_travel_in_every_row(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    main = table[table["protocol"] != "correlation"]
    expected = {"mimic-chexpert_lr_0.1": "histeq(all_channels,256_bins,[0,255])",
                "moco-cxr-r18": "cxr_mean_std(0.5020,0.085585)", "random": "imagenet_mean_std"}
    for model, norm in expected.items():
        rows = main[main["model"] == model]
        assert rows["preprocessing"].str.endswith(f"+normalise:{norm}").all(), model
        assert (rows["weights_random"].astype(str) == str(model == "random")).all(), model


def test_converted_files_hold_the_right_architecture_and_list_dropped_keys(finished):
    for model, arch in ARCHS.items():
        net, meta = load_weights(finished / "resources" / "weights" / f"{model}.pt")
        assert meta.arch == arch and meta.model == model
        assert meta.source_format == {"mimic-chexpert_lr_0.1": "lightning_moco", "moco-cxr-r18": "moco"}.get(
            model, "torchvision")
        assert sum(p.numel() for p in net.parameters()) > 0
        with torch.no_grad():
            out = net(torch.zeros(1, 3, 64, 64))
        assert out.shape == (1, {"densenet121": 1024, "resnet18": 512, "resnet50": 2048}[arch])
    _, lightning = load_weights(finished / "resources" / "weights" / "mimic-chexpert_lr_0.1.pt")
    dropped = " ".join(lightning.dropped)
    assert "encoder_k" in dropped and "queue" in dropped
    _, cxr = load_weights(finished / "resources" / "weights" / "moco-cxr-r18.pt")
    assert any("fc.0" in k for k in cxr.dropped) and any("encoder_k" in k for k in cxr.dropped)
    assert all(reason for reason in {**lightning.dropped, **cxr.dropped}.values())
    _, rnd = load_weights(finished / "resources" / "weights" / "random.pt")
    assert rnd.random and set(rnd.dropped) == {"fc.weight", "fc.bias"}  # torchvision's ImageNet head


def test_reconstruction_targets_and_figures_for_each_architecture(finished):
    table = pd.read_csv(finished / "reports" / "table.csv")
    rec = table[(table["protocol"] == "reconstruction") & (table["metric"] == "lpips_mean")]
    layers = {row["model"]: details(row)["layer"] for _, row in rec.iterrows()}
    # DenseNet-121: the last dense block before the final norm, as published; ResNets: layer4
    assert layers == {"mimic-chexpert_lr_0.1": "features.denseblock4", "moco-cxr-r18": "layer4", "random": "layer4"}
    for model in MODELS:
        png = finished / "reports" / "figures" / "saliency" / "demo_cxr" / f"{model}_heatmap.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
