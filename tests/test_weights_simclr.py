"""SimCLR-v1 TF1 checkpoint -> torchvision: creation-order mapping, drops, SAME max-pool.

Golden proofs against real TensorFlow (run in a subprocess, skipped without it): a full
ResNet-50 checkpoint saved by TensorFlow converts to the exact torchvision tensors, and the
stem max-pool emulation equals ``tf.nn.max_pool2d(padding="SAME")``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from medtransfer.weights import simclr, tfbundle
from medtransfer.weights.backbones import SameMaxPool2d, backbone_keys, load_weights
from medtransfer.weights.convert import convert_file
from medtransfer.weights.inspect import describe
from medtransfer.weights.sources import source_files, source_sha256

HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed (pip install tensorflow-cpu)")

TF_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

cfg = json.load(open(sys.argv[1]))
data = np.load(cfg["npz"])
names = list(data.files)
tf.raw_ops.SaveV2(prefix=cfg["prefix"], tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=[tf.constant(data[n]) for n in names])
x = np.load(cfg["pool_in"])  # NHWC
y = tf.nn.max_pool2d(x, ksize=3, strides=2, padding="SAME").numpy()
np.save(cfg["pool_out"], y)
"""


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    """A seeded torchvision ResNet-50 (with fc) whose every float tensor is random, so a
    swapped BN statistic or a mis-ordered layer cannot go unnoticed."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    with torch.no_grad():
        for value in state.values():
            if value.is_floating_point():
                value.normal_()
    return state


def extra_variables() -> dict[str, np.ndarray]:
    """Non-backbone variables the published checkpoint holds (a few, realistic names)."""
    return {
        "global_step": np.array(225206, np.int64),
        "head_supervised/linear_layer/dense/kernel": np.ones((2048, 1000), np.float32),
        "head_supervised/linear_layer/dense/bias": np.ones(1000, np.float32),
        "head_contrastive/nl_1/dense/kernel": np.ones((2048, 128), np.float32),
        "head_contrastive/nl_0/batch_normalization/gamma": np.ones(2048, np.float32),
        "base_model/conv2d_52/kernel/Momentum": np.ones((1, 1, 512, 2048), np.float32),
        "base_model/batch_normalization_7/moving_mean/Momentum": np.ones(64, np.float32),
    }


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory: pytest.TempPathFactory, resnet_state) -> Path:
    """TensorFlow saves a full SimCLR-named ResNet-50 checkpoint and runs a SAME max-pool."""
    if not HAS_TF:
        pytest.skip("tensorflow is not installed (pip install tensorflow-cpu)")
    work = tmp_path_factory.mktemp("tf_simclr")
    np.savez(work / "vars.npz", **simclr.to_native(resnet_state), **extra_variables())
    x = np.random.default_rng(0).standard_normal((1, 112, 112, 8), dtype=np.float32)
    np.save(work / "pool_in.npy", x)
    config = {
        "npz": str(work / "vars.npz"), "prefix": str(work / "1x" / "model.ckpt-225206"),
        "pool_in": str(work / "pool_in.npy"), "pool_out": str(work / "pool_out.npy"),
    }
    (work / "job.json").write_text(json.dumps(config))
    (work / "job.py").write_text(TF_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    proc = subprocess.run([sys.executable, str(work / "job.py"), str(work / "job.json")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"TensorFlow subprocess failed:\n{proc.stderr[-3000:]}"
    (work / "vars.npz").unlink()  # 100 MB no longer needed
    return work


def assert_maps_back(converted: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> None:
    assert set(converted) == set(backbone_keys("resnet50"))
    for key, value in converted.items():
        if key.endswith("num_batches_tracked"):
            assert value.dtype == torch.int64 and value.item() == 0, key
        else:
            assert torch.equal(value, original[key]), key


# ---------------------------------------------------------------------- mapping

def test_creation_order_puts_the_shortcut_first() -> None:
    order = simclr.creation_order()
    assert len(order) == 53  # stem + 16 blocks x 3 + 4 projection shortcuts
    assert order[:5] == [
        ("conv1", "bn1"), ("layer1.0.downsample.0", "layer1.0.downsample.1"),
        ("layer1.0.conv1", "layer1.0.bn1"), ("layer1.0.conv2", "layer1.0.bn2"), ("layer1.0.conv3", "layer1.0.bn3"),
    ]
    # conv2d_10 vs conv2d_2: integer order, where a string sort would swap them
    assert order[10] == ("layer1.2.conv3", "layer1.2.bn3")
    assert order[11] == ("layer2.0.downsample.0", "layer2.0.downsample.1")
    convs = {f"{conv}.weight" for conv, _ in order}
    assert convs == {k for k, shape in backbone_keys("resnet50").items() if len(shape) == 4}


@pytest.fixture(scope="module")
def native_zip(tmp_path_factory: pytest.TempPathFactory, resnet_state) -> Path:
    path = tmp_path_factory.mktemp("native") / "ResNet50_1x.zip"
    simclr.write_native(resnet_state, path)
    return path


def test_roundtrip_write_native_then_convert(native_zip: Path, resnet_state) -> None:
    with zipfile.ZipFile(native_zip) as archive:
        assert sorted(archive.namelist()) == [
            "ResNet50_1x/checkpoint", "ResNet50_1x/model.ckpt-225206.data-00000-of-00001",
            "ResNet50_1x/model.ckpt-225206.index",
        ]
    converted = simclr.convert(native_zip)
    assert_maps_back(converted.state_dict, resnet_state)
    dropped = converted.dropped
    assert dropped["global_step"] == "training step counter"
    assert "classifier head" in dropped["head_supervised/linear_layer/dense/kernel"]
    assert "classifier head" in dropped["head_supervised/linear_layer/dense/bias"]
    assert "optimizer slot" in dropped["base_model/conv2d/kernel/Momentum"]
    assert all(name.startswith(("head_", "global_step")) or name.endswith("/Momentum") for name in dropped)


def test_write_native_keeps_head_and_step(native_zip: Path, tmp_path: Path, resnet_state) -> None:
    with zipfile.ZipFile(native_zip) as archive:
        archive.extractall(tmp_path)
    prefix = tmp_path / "ResNet50_1x" / "model.ckpt-225206"
    head = tfbundle.read_checkpoint(prefix, names=["head_supervised/linear_layer/dense/kernel", "global_step"])
    assert np.array_equal(head["head_supervised/linear_layer/dense/kernel"], resnet_state["fc.weight"].numpy().T)
    assert head["global_step"].dtype == np.int64 and head["global_step"] == 225206


def test_convert_file_registry_writes_loadable_weights(native_zip: Path, tmp_path: Path, resnet_state) -> None:
    meta = convert_file(native_zip, tmp_path / "simclr.pt", fmt="simclr_tf",
                        model="simclr-v1", normalisation="none", demo=True)
    assert meta.padding == "tf_same_maxpool" and meta.mean is None
    model, _ = load_weights(tmp_path / "simclr.pt")  # strict load
    assert isinstance(model.maxpool, SameMaxPool2d)
    assert torch.equal(model.layer4[2].bn3.running_var, resnet_state["layer4.2.bn3.running_var"])


# ------------------------------------------------------------------ real TensorFlow

@needs_tf
def test_convert_tensorflow_written_checkpoint(tf_run: Path, resnet_state) -> None:
    converted = simclr.convert(tf_run / "1x" / "model.ckpt-225206.index")
    assert_maps_back(converted.state_dict, resnet_state)
    assert set(converted.dropped) == set(extra_variables())
    assert "projection head" in converted.dropped["head_contrastive/nl_1/dense/kernel"]


@needs_tf
def test_convert_zip_with_another_folder_layout(tf_run: Path, tmp_path: Path, resnet_state) -> None:
    path = tmp_path / "ResNet50_1x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted((tf_run / "1x").iterdir()):
            archive.write(file, f"simclrv1/1x/{file.name}")
    assert_maps_back(simclr.convert(path).state_dict, resnet_state)


@needs_tf
def test_same_maxpool_matches_tensorflow_and_differs_from_torchvision(tf_run: Path) -> None:
    x = torch.from_numpy(np.load(tf_run / "pool_in.npy")).permute(0, 3, 1, 2)  # NHWC -> NCHW
    want = torch.from_numpy(np.load(tf_run / "pool_out.npy")).permute(0, 3, 1, 2)
    got = SameMaxPool2d(3, 2)(x)
    assert got.shape == want.shape == (1, 8, 56, 56)
    assert torch.equal(got, want)  # a max is exact: no tolerance needed
    symmetric = F.max_pool2d(x, 3, 2, padding=1)  # torchvision's stem max-pool
    assert symmetric.shape == want.shape
    assert (symmetric != want).float().mean() > 0.3  # windows shifted by one pixel
    # TF "SAME" on an even size pads 0 before and 1 after: the same as torch's pool on
    # the input with one -inf row/column appended.
    padded = F.pad(x, (0, 1, 0, 1), value=float("-inf"))
    assert torch.equal(F.max_pool2d(padded, 3, 2), want)


# ------------------------------------------------------------------------- errors

def tiny_native(count: int = 53, extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """SimCLR backbone names for ``count`` conv/BN pairs with 1-element placeholders
    (names are checked before shapes, so errors show up without 100 MB of data)."""
    scopes = [("" if n == 0 else f"_{n}") for n in range(count)]
    names = [f"base_model/conv2d{s}/kernel" for s in scopes]
    names += [f"base_model/batch_normalization{s}/{p}" for s in scopes
              for p in ("gamma", "beta", "moving_mean", "moving_variance")]
    return {**{name: np.zeros(1, np.float32) for name in names}, **(extra or {})}


def test_other_architecture_is_rejected_with_missing_variables(tmp_path: Path) -> None:
    tfbundle.write_checkpoint(tmp_path / "model.ckpt-1", tiny_native(count=36))  # ResNet-34's 36 convs
    with pytest.raises(ValueError, match=r"model\.ckpt-1\.index: not a SimCLR-v1 resnet50 checkpoint\. "
                                         r"missing variables \(85\): \['base_model/batch_normalization_36/beta'"):
        simclr.convert(tmp_path / "model.ckpt-1.index")


def test_unexpected_backbone_variable_is_rejected(tmp_path: Path) -> None:
    tfbundle.write_checkpoint(tmp_path / "ck", tiny_native(extra={"base_model/dense/kernel": np.zeros(1)}))
    with pytest.raises(ValueError, match=r"ck: not a SimCLR-v1.*unexpected variables \(1\): \['base_model/dense/kernel'\]"):
        simclr.convert(tmp_path / "ck")


def test_wrong_shapes_are_listed(tmp_path: Path) -> None:
    tfbundle.write_checkpoint(tmp_path / "ck", tiny_native())
    with pytest.raises(ValueError, match=r"ck: 265 variables have the wrong shapes .*'base_model/conv2d/"
                                         r"kernel -> conv1\.weight: \(1,\) \(expected \(7, 7, 3, 64\)\)'"):
        simclr.convert(tmp_path / "ck")


def test_truncated_zip_is_named(native_zip: Path, tmp_path: Path) -> None:
    path = tmp_path / "ResNet50_1x.zip"
    path.write_bytes(native_zip.read_bytes()[: 50_000_000])
    with pytest.raises(ValueError, match=r"ResNet50_1x\.zip: cannot read this zip .*download it again"):
        simclr.convert(path)


def test_truncated_data_member_names_the_zip_member(tmp_path: Path) -> None:
    tfbundle.write_checkpoint(tmp_path / "ck" / "model.ckpt-225206", tiny_native())
    path = tmp_path / "ResNet50_1x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(tmp_path / "ck" / "model.ckpt-225206.index", "ResNet50_1x/model.ckpt-225206.index")
        data = (tmp_path / "ck" / "model.ckpt-225206.data-00000-of-00001").read_bytes()
        archive.writestr("ResNet50_1x/model.ckpt-225206.data-00000-of-00001", data[:-9])
    with pytest.raises(ValueError, match=r"ResNet50_1x\.zip:ResNet50_1x/model\.ckpt-225206\.data-00000-of-00001: "
                                         r"truncated"):
        simclr.convert(path)


def test_zip_without_exactly_one_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ResNet50_1x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ResNet50_1x/README", "no checkpoint here")
    with pytest.raises(ValueError, match=r"ResNet50_1x\.zip: expected exactly one TensorFlow checkpoint"):
        simclr.convert(path)


# ------------------------------------------------- the published zip's layout, prefixes

def _hub_module(folder: Path) -> dict[str, Path]:
    """A TF-Hub module as SimCLR's README lists it beside the checkpoint: saved_model.pb,
    tfhub_module.pb and a variables/ checkpoint (same backbone names, placeholder values;
    the .pb files are never read, so their bytes are stand-ins)."""
    tfbundle.write_checkpoint(folder / "variables" / "variables", tiny_native())
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    (folder / "tfhub_module.pb").write_bytes(b"\x08\x03")
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hub_zip(native_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet50_1x.zip as published: ResNet50_1x/{checkpoint, model.ckpt-225206.*, hub/...}."""
    folder = tmp_path_factory.mktemp("hub_zip")
    path = folder / "ResNet50_1x.zip"
    with zipfile.ZipFile(native_zip) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for member in src.namelist():
            dst.writestr(member, src.read(member))
        for name, file in _hub_module(folder / "hub").items():
            dst.write(file, f"ResNet50_1x/hub/{name}")
    return path


def test_zip_with_a_hub_module_converts_the_training_checkpoint(hub_zip: Path, tmp_path: Path, resnet_state) -> None:
    with zipfile.ZipFile(hub_zip) as archive:
        assert "ResNet50_1x/hub/variables/variables.index" in archive.namelist()
    assert_maps_back(simclr.convert(hub_zip).state_dict, resnet_state)
    info = describe(hub_zip)
    assert info["format"] == "simclr_tf" and info["checkpoint"] == "ResNet50_1x/model.ckpt-225206"
    meta = convert_file(hub_zip, tmp_path / "simclr.pt", fmt="simclr_tf")
    assert meta.mean is None and meta.padding == "tf_same_maxpool"  # the format's defaults


def test_zip_with_two_training_checkpoints_names_them(tmp_path: Path) -> None:
    path = tmp_path / "ResNet50_1x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for step in (1000, 225206):
            tfbundle.write_checkpoint(tmp_path / f"model.ckpt-{step}", tiny_native(count=1))
            for file in sorted(tmp_path.glob(f"model.ckpt-{step}.*")):
                archive.write(file, f"ResNet50_1x/{file.name}")
    with pytest.raises(ValueError, match=r"ResNet50_1x\.zip: cannot tell which TensorFlow checkpoint.*"
                                         r"'ResNet50_1x/model\.ckpt-1000\.index', 'ResNet50_1x/model\.ckpt-225206"
                                         r"\.index'.*set the model's `path:` to the checkpoint prefix"):
        simclr.convert(path)


def test_checkpoint_prefix_as_path(hub_zip: Path, tmp_path: Path, resnet_state) -> None:
    """``path: .../model.ckpt-225206`` names no file, only the checkpoint's .index and data."""
    with zipfile.ZipFile(hub_zip) as archive:
        archive.extractall(tmp_path)
    folder = tmp_path / "ResNet50_1x"
    prefix = folder / "model.ckpt-225206"
    assert not prefix.exists()
    assert [f.name for f in source_files(prefix)] == [
        "model.ckpt-225206.data-00000-of-00001", "model.ckpt-225206.index"]
    meta = convert_file(prefix, tmp_path / "a.pt", fmt="simclr_tf", model="simclr-v1")
    assert meta.source_sha256 == source_sha256(prefix) == source_sha256(folder)  # hub/ is not part of it
    again = convert_file(prefix.with_name("model.ckpt-225206.index"), tmp_path / "b.pt", fmt="simclr_tf")
    assert again.source_sha256 == meta.source_sha256
    model, _ = load_weights(tmp_path / "a.pt")
    assert torch.equal(model.conv1.weight, resnet_state["conv1.weight"])
    assert describe(prefix)["format"] == "simclr_tf"
