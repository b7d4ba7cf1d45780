"""The architecture table (formats.BACKBONES): ResNet-18, ResNet-50 and DenseNet-121 built from
one entry each, with the pooled width, the reconstruction target and the stem pool it names;
DenseNet-121's features against a hand-written reference (features -> ReLU -> average pool)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from fakes import toy_index, toy_pngs, toy_weights
from medtransfer.data.cache import build_full_cache
from medtransfer.features.extract import extract
from medtransfer.protocols.finetune import Classifier, evaluate_finetune
from medtransfer.protocols.invariance import evaluate_invariance
from medtransfer.protocols.reconstruct.inversion import TARGET_LAYERS, FeatureTap, target_layer
from medtransfer.protocols.saliency import evaluate_saliency
from medtransfer.weights.backbones import (
    ARCHS,
    WeightsMeta,
    backbone_keys,
    build_backbone,
    check_state_dict,
    feature_dim,
    load_weights,
    save_weights,
)
from medtransfer.weights.formats import BACKBONES

WIDTHS = {"resnet18": 512, "resnet50": 2048, "densenet121": 1024}


def test_one_entry_per_architecture_everywhere():
    assert ARCHS == tuple(BACKBONES) == ("resnet18", "resnet50", "densenet121")
    assert {a: feature_dim(a) for a in ARCHS} == WIDTHS
    assert TARGET_LAYERS == {"resnet18": "layer4", "resnet50": "layer4", "densenet121": "features.denseblock4"}


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_pooled_features_and_the_classifier_width(arch):
    torch.manual_seed(0)
    net = build_backbone(arch).eval()
    assert set(net.state_dict()) == set(backbone_keys(arch))
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, WIDTHS[arch])
    assert Classifier(net, 3).head.in_features == WIDTHS[arch]


def test_densenet_features_match_a_reference_computation():
    torch.manual_seed(1)
    reference = torchvision.models.densenet121(weights=None).eval()
    net = build_backbone("densenet121").eval()
    net.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")})
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        expected = F.relu(reference.features(x)).mean(dim=(2, 3))
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_densenet_reconstruction_target_is_denseblock4_before_the_final_norm():
    torch.manual_seed(2)
    net = build_backbone("densenet121").eval()
    net.features.norm5.running_mean.fill_(0.5)  # a final norm that is not near the identity
    assert target_layer("densenet121") == "features.denseblock4"
    tap = FeatureTap(net, target_layer("densenet121"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        tapped = tap(x)
        features = net.features
        before_norm = features.denseblock4(features.transition3(features.denseblock3(features.transition2(
            features.denseblock2(features.transition1(features.denseblock1(features.pool0(features.relu0(
                features.norm0(features.conv0(x)))))))))))
    assert tapped.shape == (1, 1024, 2, 2) and torch.equal(tapped, before_norm)
    assert not torch.allclose(tapped, features.norm5(before_norm))


def test_densenet_round_trip_and_a_wrong_architecture_is_named(tmp_path):
    net = build_backbone("densenet121")
    save_weights(tmp_path / "d.pt", net.state_dict(), WeightsMeta(arch="densenet121", model="d"))
    loaded, meta = load_weights(tmp_path / "d.pt")
    assert meta.arch == "densenet121"
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match=r"x\.pth: the weights are a densenet121 backbone, not the resnet18 "
                                         r"the config asks for\. Set `arch: densenet121`"):
        check_state_dict(net.state_dict(), "resnet18", "x.pth")


def test_densenet_has_no_tensorflow_padding():
    with pytest.raises(ValueError, match=r"'densenet121' cannot be built with padding 'tf_same'"):
        build_backbone("densenet121", "tf_same")
    assert type(build_backbone("resnet18", "tf_same_maxpool").maxpool).__name__ == "SameMaxPool2d"


# --- DenseNet-121 through every protocol that loads a backbone (tiny images) ----------------

@pytest.fixture(scope="module")
def dense(tmp_path_factory, one_thread):
    """A random DenseNet-121, 12 cached 32x32 images and a whole-image cache."""
    root = tmp_path_factory.mktemp("dense")
    toy_weights(root / "w.pt", arch="densenet121", model="d")
    rng = np.random.default_rng(0)
    np.save(root / "cache.npy", rng.integers(0, 255, (12, 32, 32, 3)).astype(np.uint8))
    pngs = toy_pngs(root, [rng.integers(0, 255, (36, 40, 3)).astype(np.uint8) for _ in range(12)])
    toy_index(root / "index.csv", np.arange(12) % 2, n_train=8, paths=pngs)
    build_full_cache(root / "index.csv", root / "full.npy", size=32)
    return root


def test_densenet_features_finetune_saliency_and_invariance(dense, tmp_path):
    fs = extract(weights=dense / "w.pt", cache=dense / "cache.npy", index=dense / "index.csv",
                 out=tmp_path / "f.npz", model="d", dataset="toy", device="cpu")
    assert fs.features.shape == (12, 1024)
    evaluate_finetune(weights=dense / "w.pt", cache=dense / "cache.npy", index=dense / "index.csv",
                      rows=tmp_path / "ft.csv", predictions=tmp_path / "ft.npz", model="d", dataset="toy",
                      steps=2, batch_size=4, lr=0.01, eval_every=1, patience=1, device="cpu", n_bootstrap=10)
    values = evaluate_saliency(weights=dense / "w.pt", cache=dense / "cache.npy", index=dense / "index.csv",
                               out_rows=tmp_path / "s.csv", out_predictions=tmp_path / "s.npz",
                               out_maps=tmp_path / "m.npz", model="d", dataset="toy", n_images=1, input_size=32,
                               crop_size=24, window=8, stride=8, batch_size=16, n_bootstrap=10, seed=1, device="cpu")
    assert len(values) == 1
    out = evaluate_invariance(weights=dense / "w.pt", full_cache=dense / "full.npy", index=dense / "index.csv",
                              out_rows={"hflip": tmp_path / "i.csv"},
                              out_predictions={"hflip": tmp_path / "i.npz"}, model="d", dataset="toy", size=32,
                              transforms={"hflip": [1]}, n_images=2, n_bootstrap=10, seed=0, device="cpu")
    assert len(out["hflip"]) == 2
