import pytest
import torch
import torch.nn.functional as F

from medtransfer.weights.backbones import (
    SameConv2d,
    SameMaxPool2d,
    WeightsMeta,
    _same_pads,
    backbone_keys,
    build_backbone,
    check_state_dict,
    load_weights,
    normalise,
    save_weights,
)


@pytest.mark.parametrize("size, kernel, stride, pads", [
    (224, 7, 2, (2, 3)),  # the stem conv: TF pads more at the end
    (112, 3, 2, (0, 1)),  # the stem max-pool on an even map
    (56, 3, 1, (1, 1)),
    (56, 1, 2, (0, 0)),
    (7, 3, 2, (1, 1)),
])
def test_same_pads_follow_tensorflow(size, kernel, stride, pads):
    assert _same_pads(size, kernel, stride) == pads


def test_same_conv_equals_explicit_asymmetric_padding():
    torch.manual_seed(0)
    conv = SameConv2d(3, 4, 7, stride=2, bias=False)
    x = torch.randn(1, 3, 16, 16)
    expected = F.conv2d(F.pad(x, (2, 3, 2, 3)), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected)


def test_same_maxpool_pads_with_minus_infinity():
    x = -torch.ones(1, 1, 4, 4)  # all negative: zero padding would leak a 0
    assert SameMaxPool2d(3, 2)(x).max().item() == -1.0


@pytest.mark.parametrize("padding", ["torch", "tf_same", "tf_same_maxpool"])
def test_backbones_share_keys_and_give_pooled_features(padding):
    model = build_backbone("resnet50", padding).eval()
    assert set(model.state_dict()) == set(backbone_keys("resnet50"))
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 2048)


def test_unknown_padding_and_arch_are_named():
    with pytest.raises(ValueError, match="unknown padding 'same'"):
        build_backbone("resnet50", "same")
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build_backbone("vit")


def test_check_state_dict_lists_every_problem():
    state = {k: torch.zeros(s) for k, s in backbone_keys("resnet50").items()}
    del state["conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["bn1.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"src\.pth.*missing \(1\): \['conv1.weight'\].*unexpected \(1\)"
                                         r".*bn1.weight: got \(3,\), expected \(64,\)"):
        check_state_dict(state, "resnet50", "src.pth")


def test_weights_file_round_trip(tmp_path):
    model = build_backbone("resnet18")
    meta = WeightsMeta(arch="resnet18", padding="tf_same_maxpool", mean=None, std=None, model="m")
    save_weights(tmp_path / "w.pt", model.state_dict(), meta)
    loaded, got = load_weights(tmp_path / "w.pt")
    assert got.padding == "tf_same_maxpool" and got.mean is None and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_foreign_file_is_not_taken_for_weights(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a medtransfer weights file.*medtransfer.weights convert"):
        load_weights(tmp_path / "x.pt")


def test_normalise_uses_the_models_own_statistics():
    x = torch.full((1, 3, 2, 2), 0.5)
    assert torch.equal(normalise(x, WeightsMeta(mean=None, std=None)), x)
    out = normalise(x, WeightsMeta())
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224,
                                                         (0.5 - 0.406) / 0.225]))
