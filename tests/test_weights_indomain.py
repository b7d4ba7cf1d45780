"""The in-domain chest X-ray formats on files written in their published layouts: CovidPrognosis'
PyTorch Lightning MoCo checkpoints (DenseNet-121) and MoCo-CXR's MoCo checkpoints (ResNet-18,
DenseNet-121), plus torchvision's own DenseNet file with its old key names. Every backbone
tensor is equal after conversion, every dropped key is listed with its reason, and a file of
the wrong architecture or format is refused naming both. Lightning checkpoints load without
Lightning and without running anything: callback classes, ``AttributeDict`` and ``Namespace``
hyper-parameters, Lightning 1.0.x metric states."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from fakes import lightning_class
from medtransfer.weights.backbones import backbone_keys, load_weights
from medtransfer.weights.base import LIGHTNING_ATTRIBUTE_DICTS, LightningName, UnsafePickleError, load_torch
from medtransfer.weights.convert import convert_file
from medtransfer.weights.demo import random_model, write_demo_weights
from medtransfer.weights.formats import FORMATS
from medtransfer.weights.inspect import detect
from medtransfer.weights.lightning import METRIC_STATE


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


HPARAMS = {"arch": "densenet121", "feature_dim": 128, "queue_size": 65536, "use_mlp": False, "learning_rate": 0.1}
METRICS = {"train_acc.correct": torch.tensor(57), "train_acc.total": torch.tensor(64),
           "val_acc.correct": torch.tensor(0), "val_acc.total": torch.tensor(0)}


def _lightning_1_0_6(state: dict[str, torch.Tensor], path: Path, hyper_parameters: object) -> None:
    """A checkpoint as Lightning 1.0.6 writes a CovidPrognosis MoCo module: the demo layout with
    its accuracy metrics' counters in the state dict and the hyper-parameters object given."""
    FORMATS["lightning_moco"].write_demo(state, path, 3)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["pytorch-lightning_version"] = "1.0.6"
    checkpoint["state_dict"] |= METRICS
    checkpoint["hyper_parameters"] = hyper_parameters
    torch.save(checkpoint, path)


@pytest.mark.parametrize("name", [*LIGHTNING_ATTRIBUTE_DICTS, "argparse.Namespace"])
def test_lightning_hyper_parameters_load_as_plain_data_and_nothing_runs(nets, tmp_path, monkeypatch, caplog, name):
    """`hyper_parameters` as Lightning's AttributeDict (each home it has had) or a Namespace: the
    file converts with Lightning absent, and even with a Lightning importable whose class runs
    code on unpickling, safe loading builds plain data and runs none of it."""
    assert importlib.util.find_spec("pytorch_lightning") is None and importlib.util.find_spec("lightning") is None
    ran: list[str] = []

    def setitem(self, key, value):  # records each item a plain unpickler sets
        ran.append(key)
        dict.__setitem__(self, key, value)

    if name == "argparse.Namespace":
        hyper_parameters = argparse.Namespace(**HPARAMS)
    else:  # Lightning's class: a dict subclass
        cls = lightning_class(monkeypatch, name, __setitem__=setitem)
        hyper_parameters = cls(HPARAMS)
    _lightning_1_0_6(nets["densenet121"], tmp_path / "mimic.pt", hyper_parameters)
    if name != "argparse.Namespace":
        module, _, qualname = name.rpartition(".")
        assert f"c{module}\n{qualname}\n".encode() in (tmp_path / "mimic.pt").read_bytes()  # its GLOBAL
        assert type(torch.load(tmp_path / "mimic.pt", weights_only=False)["hyper_parameters"]) is cls
        assert ran == list(HPARAMS)  # a plain unpickler runs the class's code
        ran.clear()
        loaded = load_torch(tmp_path / "mimic.pt")["hyper_parameters"]  # that class still importable
        assert type(loaded) is dict and loaded == HPARAMS and ran == []
    monkeypatch.undo()  # Lightning is gone again
    assert not {m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric")}
    loaded = load_torch(tmp_path / "mimic.pt")["hyper_parameters"]
    assert (vars(loaded) if name == "argparse.Namespace" else loaded) == HPARAMS
    assert type(loaded) is (argparse.Namespace if name == "argparse.Namespace" else dict)
    with caplog.at_level(logging.INFO, logger="medtransfer.weights.lightning"):
        meta = convert_file(tmp_path / "mimic.pt", tmp_path / "out.pt", fmt="lightning_moco", arch="densenet121")
    _check_equal(tmp_path / "out.pt", nets["densenet121"], "densenet121")
    assert {k: v for k, v in meta.dropped.items() if v == METRIC_STATE} == dict.fromkeys(METRICS, METRIC_STATE)
    assert load_weights(tmp_path / "out.pt")[1].dropped == meta.dropped  # the converted file says so
    assert "train_acc.correct" in caplog.text and "metric state" in caplog.text
    assert ran == []


def test_a_lightning_checkpoint_that_would_run_code_is_still_refused(nets, tmp_path, monkeypatch):
    """Allowing Lightning's AttributeDict lets nothing else through: a payload inside the
    hyper-parameters, or an instance of another Lightning class, is refused naming it."""
    marker = tmp_path / "marker"

    class Opens:  # unpickles as open(marker, "w")
        def __reduce__(self):
            return open, (str(marker), "w")

    cls = lightning_class(monkeypatch, LIGHTNING_ATTRIBUTE_DICTS[0])
    state_cls = lightning_class(monkeypatch, "pytorch_lightning.trainer.states.TrainerState", base=object)
    _lightning_1_0_6(nets["densenet121"], tmp_path / "payload.pt", cls(HPARAMS, log=Opens()))
    _lightning_1_0_6(nets["densenet121"], tmp_path / "state.pt", cls(HPARAMS, state=state_cls()))
    torch.load(tmp_path / "payload.pt", weights_only=False)
    assert marker.exists(), "the payload must run under a plain unpickler"
    marker.unlink()
    monkeypatch.undo()
    with pytest.raises(UnsafePickleError, match=r"names the Python global (builtins|io)\.open.*nothing from the file was run"):
        convert_file(tmp_path / "payload.pt", tmp_path / "out.pt", fmt="lightning_moco", arch="densenet121")
    assert not marker.exists() and not (tmp_path / "out.pt").exists()
    with pytest.raises(UnsafePickleError, match=r"names the Python global pytorch_lightning\.trainer\.states\.TrainerState"):
        load_torch(tmp_path / "state.pt")
