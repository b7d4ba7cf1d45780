"""The second wave of the registry: ImageNet ResNet-18 / DenseNet-121, the in-domain chest X-ray
models and the untrained `random` baseline, flagged in every result row."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from medtransfer.weights.registry import REGISTRY, resolve_model

SECOND_WAVE = {
    "supervised-r18": ("torchvision", "resnet18", "imagenet", 69.758),
    "supervised-d121": ("torchvision", "densenet121", "imagenet", 74.434),
    "mimic-chexpert_lr_0.01": ("lightning_moco", "densenet121", "histeq", None),
    "mimic-chexpert_lr_0.1": ("lightning_moco", "densenet121", "histeq", None),
    "mimic-chexpert_lr_1.0": ("lightning_moco", "densenet121", "histeq", None),
    "moco-cxr-r18": ("moco", "resnet18", "cxr", None),
    "moco-cxr-d121": ("moco", "densenet121", "cxr", None),
    "random": ("torchvision", "resnet50", "imagenet", None),
}


def test_thirteen_published_models_and_the_random_baseline():
    assert len(REGISTRY) == 13 + 1
    for name, (fmt, arch, norm, top1) in SECOND_WAVE.items():
        spec = REGISTRY[name]
        assert (spec.format, spec.arch, spec.normalisation, spec.top1) == (fmt, arch, norm, top1), name
    assert all(REGISTRY[m].top1 is not None for m in ("supervised", "moco-v2", "swav", "pirl", "byol", "simclr-v1"))
    # The registry's top-1 is the publishers' (torchvision's for its files); the study's imagenet-top1.csv
    # had other values for the three supervised nets and the same for the self-supervised ones.
    study = {"supervised": (76.1, 77.2), "supervised-r18": (69.758, 72.12), "supervised-d121": (74.434, 74.98),
             "moco-v2": (71.1, 71.1), "swav": (75.3, 75.3), "pirl": (61.7, 61.7), "byol": (74.3, 74.3),
             "simclr-v1": (69.3, 69.3)}
    assert {m: (s.top1, s.top1_study) for m, s in REGISTRY.items() if s.top1_study is not None} == study
    assert [m for m, s in REGISTRY.items() if s.random] == ["random"]
    assert REGISTRY["mimic-chexpert_lr_0.1"].url.endswith("mimic-chexpert_lr_0.1_bs_128_fd_128_qs_65536.pt")
    with pytest.raises(ValueError, match=r"random: true is made locally; its `url` must be a file: URL"):
        resolve_model("random", {"url": "https://example.org/r.pth"})


def test_random_baseline_is_torchvision_initialisation_flagged_in_every_row(tmp_path):
    from medtransfer.features import run_meta
    from medtransfer.results import make_row
    from medtransfer.weights.backbones import load_weights
    from medtransfer.weights.convert import convert_file
    from medtransfer.weights.demo import write_demo_weights

    for folder in ("a", "b"):
        write_demo_weights(tmp_path / folder / "r.pth", fmt="torchvision", model="random", seed=3, random=True)
    assert (tmp_path / "a" / "r.pth").read_bytes() == (tmp_path / "b" / "r.pth").read_bytes()  # seeded
    state = torch.load(tmp_path / "a" / "r.pth", weights_only=True)
    assert torch.equal(state["bn1.running_mean"], torch.zeros(64))  # no calibration: torchvision's init
    assert torch.equal(state["layer4.2.bn3.running_var"], torch.ones(2048))
    meta = convert_file(tmp_path / "a" / "r.pth", tmp_path / "w.pt", fmt="torchvision", model="random", random=True)
    assert meta.random and not meta.demo
    wmeta = load_weights(tmp_path / "w.pt")[1]
    index = pd.DataFrame({"split_rule": ["given"], "label": [0], "label_name": ["a"]})
    provenance = run_meta(model="random", dataset="d", weights_meta=wmeta, index=index, precision="fp32",
                          size=32, seed=0)
    row = make_row(model="random", dataset="d", protocol="linear", setting="s", metric="m", value=0.5, n=1,
                   seed=0, meta=provenance)
    assert row["weights_random"] is True and row["weights_demo"] is False
