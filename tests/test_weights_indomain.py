"""The in-domain chest X-ray formats on files written in their published layouts: CovidPrognosis'
PyTorch Lightning MoCo checkpoints (DenseNet-121) and MoCo-CXR's MoCo checkpoints (ResNet-18,
DenseNet-121), plus torchvision's own DenseNet file with its old key names. Every backbone
tensor is equal after conversion, every dropped key is listed with its reason, and a file of
the wrong architecture or format is refused naming both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from medtransfer.weights.backbones import backbone_keys, load_weights
from medtransfer.weights.convert import convert_file
from medtransfer.weights.demo import random_model, write_demo_weights
from medtransfer.weights.formats import FORMATS
from medtransfer.weights.inspect import detect


@pytest.fixture(scope="module")
def nets():
    return {arch: random_model(arch, seed=5, calibrate=False) for arch in ("resnet18", "densenet121")}


def _backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}


def _check_equal(out: Path, state: dict[str, torch.Tensor], arch: str) -> None:
    model, meta = load_weights(out)  # strict load
    assert meta.arch == arch
    loaded = model.state_dict()
    expected = _backbone(state)
    assert set(loaded) == set(expected) == set(backbone_keys(arch))
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_lightning_densenet_converts_exactly_and_lists_what_it_drops(nets, tmp_path):
    state = nets["densenet121"]
    FORMATS["lightning_moco"].write_demo(state, tmp_path / "mimic.pt", 3)
    raw = torch.load(tmp_path / "mimic.pt", weights_only=True)
    assert {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "hyper_parameters"} <= set(raw)
    assert "model.encoder_q.features.denseblock4.denselayer16.conv2.weight" in raw["state_dict"]
    assert raw["state_dict"]["model.encoder_q.classifier.weight"].shape == (128, 1024)
    meta = convert_file(tmp_path / "mimic.pt", tmp_path / "out.pt", fmt="lightning_moco", arch="densenet121")
    _check_equal(tmp_path / "out.pt", state, "densenet121")
    dropped = meta.dropped
    assert set(dropped) == {k for k in raw["state_dict"] if not k.startswith("model.encoder_q.features.")}
    assert dropped["model.encoder_q.classifier.weight"].startswith("MoCo projection head")
    assert dropped["model.queue"] == dropped["model.queue_ptr"] == "MoCo negative-key queue and its pointer"
    assert {v for k, v in dropped.items() if k.startswith("model.encoder_k.")} == {"MoCo momentum (key) encoder"}
    assert detect(tmp_path / "mimic.pt")[0] == "lightning_moco"


@pytest.mark.parametrize("arch, head", [("resnet18", "fc"), ("densenet121", "classifier")])
def test_moco_cxr_converts_exactly_and_drops_its_mlp_head(nets, tmp_path, arch, head):
    state = nets[arch]
    FORMATS["moco"].write_demo(state, tmp_path / "cxr.pth.tar", 4)
    raw = torch.load(tmp_path / "cxr.pth.tar", weights_only=True)["state_dict"]
    width = 512 if arch == "resnet18" else 1024
    assert raw[f"module.encoder_q.{head}.0.weight"].shape == (width, width)
    assert raw[f"module.encoder_q.{head}.2.weight"].shape == (128, width)
    meta = convert_file(tmp_path / "cxr.pth.tar", tmp_path / "out.pt", fmt="moco", arch=arch)
    _check_equal(tmp_path / "out.pt", state, arch)
    heads = {k for k in meta.dropped if k.startswith(f"module.encoder_q.{head}.")}
    assert heads == {f"module.encoder_q.{head}.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    assert set(meta.dropped) == {k for k in raw if not k.startswith("module.encoder_q.") or k in heads}
    assert detect(tmp_path / "cxr.pth.tar")[0] == "moco"


def test_torchvision_densenet_with_old_key_names(nets, tmp_path):
    state = nets["densenet121"]
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()
           if not k.endswith("num_batches_tracked")}  # files that old predate it
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, tmp_path / "densenet121-a639ec97.pth")
    meta = convert_file(tmp_path / "densenet121-a639ec97.pth", tmp_path / "out.pt", fmt="torchvision",
                        arch="densenet121")
    _check_equal(tmp_path / "out.pt", state, "densenet121")
    assert set(meta.dropped) == {"classifier.weight", "classifier.bias"}


def test_wrong_architecture_names_both(nets, tmp_path):
    FORMATS["lightning_moco"].write_demo(nets["densenet121"], tmp_path / "mimic.pt", 3)
    with pytest.raises(ValueError, match=r"the weights are a densenet121 backbone, not the resnet18 the config "
                                         r"asks for\. Set `arch: densenet121`"):
        convert_file(tmp_path / "mimic.pt", tmp_path / "out.pt", fmt="lightning_moco", arch="resnet18")
    FORMATS["moco"].write_demo(nets["resnet18"], tmp_path / "r18.pth.tar", 4)
    with pytest.raises(ValueError, match=r"a resnet18 backbone, not the resnet50"):
        convert_file(tmp_path / "r18.pth.tar", tmp_path / "out.pt", fmt="moco", arch="resnet50")
    assert not (tmp_path / "out.pt").exists()


def test_wrong_format_names_both(nets, tmp_path):
    FORMATS["lightning_moco"].write_demo(nets["densenet121"], tmp_path / "mimic.pt", 3)
    with pytest.raises(ValueError, match=r"cannot convert it as format `moco`.*looks like format `lightning_moco`"):
        convert_file(tmp_path / "mimic.pt", tmp_path / "out.pt", fmt="moco", arch="densenet121")
    FORMATS["moco"].write_demo(nets["resnet18"], tmp_path / "r18.pth.tar", 4)
    with pytest.raises(ValueError, match=r"cannot convert it as format `lightning_moco`.*looks like format `moco`"):
        convert_file(tmp_path / "r18.pth.tar", tmp_path / "out.pt", fmt="lightning_moco", arch="resnet18")


@pytest.mark.parametrize("fmt, arch", [("lightning_moco", "densenet121"), ("moco", "resnet18")])
def test_demo_weights_of_each_architecture_convert(fmt, arch, tmp_path):
    write_demo_weights(tmp_path / "src", fmt=fmt, model="m", seed=1, arch=arch)
    convert_file(tmp_path / "src", tmp_path / "out.pt", fmt=fmt, arch=arch, demo=True)
    model, meta = load_weights(tmp_path / "out.pt")
    assert meta.demo and meta.arch == arch
    with pytest.raises(ValueError, match=r"format `byol` cannot hold a densenet121"):
        write_demo_weights(tmp_path / "x", fmt="byol", model="m", arch="densenet121")


def test_lightning_callback_classes_named_in_a_checkpoint_load_as_plain_data(nets, tmp_path, monkeypatch):
    """Lightning 1.x keys `callbacks` by the callback class: a file naming it converts without
    Lightning installed, and nothing of it runs."""
    import sys
    import types

    from medtransfer.weights.base import LightningName, load_torch

    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:  # what Lightning pickles: the class itself, as a dict key
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = module.__name__, "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    for name, mod in [("pytorch_lightning", types.ModuleType("pytorch_lightning")),
                      ("pytorch_lightning.callbacks", types.ModuleType("pytorch_lightning.callbacks")),
                      (module.__name__, module)]:
        monkeypatch.setitem(sys.modules, name, mod)
    FORMATS["lightning_moco"].write_demo(nets["densenet121"], tmp_path / "plain.pt", 3)
    checkpoint = torch.load(tmp_path / "plain.pt", weights_only=True)
    checkpoint["callbacks"] = {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "best_model_path": "x"}}
    torch.save(checkpoint, tmp_path / "mimic.pt")
    monkeypatch.undo()  # Lightning is gone again
    assert "pytorch_lightning" not in sys.modules
    (key,) = load_torch(tmp_path / "mimic.pt")["callbacks"]
    assert issubclass(key, LightningName) and key.__name__ == "ModelCheckpoint"
    convert_file(tmp_path / "mimic.pt", tmp_path / "out.pt", fmt="lightning_moco", arch="densenet121")
    _check_equal(tmp_path / "out.pt", nets["densenet121"], "densenet121")
