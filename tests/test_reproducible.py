"""Every file made from a seed is byte-identical when made again: in another folder, under
another name, at another time. Each test makes its files twice and compares sha256."""

import hashlib
import time

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.data.demo import generate
from medtransfer.features import FeatureSet, save_features
from medtransfer.protocols.reconstruct.perceptual import write_demo_lpips_weights
from medtransfer.results import Predictions
from medtransfer.runtime import sha256_file
from medtransfer.weights.convert import convert_file
from medtransfer.weights.demo import random_resnet50
from medtransfer.weights.formats import FORMATS
from medtransfer.writers import save_npz, write_zip

# sha256 of the tensors of random_resnet50(0), in state-dict order: the same on every machine
# (numpy's generator, float64 calibration rounded to 12 bits). A change here changes every
# demo weights file, and so every demo row's weights_sha256.
RANDOM_RESNET50_SEED0 = "c7dfc6cecc0a90845f4aa8f8ef19194e962243e862cedfa2ec796fa7b48b42ff"


def _tensor_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def state():
    return random_resnet50(seed=7, calibrate=False)


@pytest.fixture
def at_times(monkeypatch):
    """Run ``write(folder)`` twice, in two folders, with the clock 22 years apart."""
    def run(tmp_path, write):
        outs = []
        for i, now in enumerate((1.0e9, 1.7e9)):
            monkeypatch.setattr(time, "time", lambda now=now: now)
            outs.append(write(tmp_path / f"run{i}"))
        monkeypatch.undo()
        return outs
    return run


def test_random_resnet50_is_pinned():
    assert _tensor_digest(random_resnet50(seed=0)) == RANDOM_RESNET50_SEED0


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_demo_weights_and_their_conversion_are_byte_identical(fmt, state, tmp_path, at_times):
    record = FORMATS[fmt]

    def write(folder):
        source = folder / f"{fmt}.src"
        record.write_demo(state, source, 11)
        convert_file(source, folder / "converted.pt", fmt=fmt, model=fmt, demo=True)
        return sha256_file(source), sha256_file(folder / "converted.pt")

    first, second = at_times(tmp_path, write)
    assert first == second


@pytest.mark.parametrize("kind", ["demo_cxr", "demo_fundus"])
def test_demo_images_and_labels_are_byte_identical(kind, tmp_path, at_times):
    def write(folder):
        generate(kind, folder, n_images=12, size=32, seed=4)
        return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}

    first, second = at_times(tmp_path, write)
    assert first == second and len(first) == 13


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_demo_lpips_weights_are_byte_identical(net, tmp_path, at_times):
    first, second = at_times(tmp_path, lambda folder: sha256_file(write_demo_lpips_weights(folder / "w.pth", net)))
    assert first == second


def test_npz_outputs_and_zips_are_byte_identical(tmp_path, at_times):
    rng = np.random.RandomState(0)
    features = FeatureSet(features=rng.rand(6, 4).astype(np.float32), labels=np.arange(6) % 2,
                          split=np.array(["train"] * 4 + ["test"] * 2), meta={"model": "m", "seed": 0})
    predictions = Predictions(model="m", dataset="d", protocol="linear", setting="manyshot", pairing="images",
                              arrays={"probs": rng.rand(4, 2), "labels": np.arange(4) % 2,
                                      "positions": np.arange(4), "classes": np.array(["a", "b"])})

    def write(folder):
        save_features(folder / "features.npz", features)
        predictions.save(folder / "predictions.npz")
        save_npz(folder / "arrays.npz", a=np.arange(3), names=np.array(["x", "y"]))
        write_zip(folder / "files.zip", [("a/b.txt", b"hello"), ("a/c.bin", bytes(range(256)))])
        return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}

    first, second = at_times(tmp_path, write)
    assert first == second and len(first) == 4
    with np.load(tmp_path / "run0" / "arrays.npz") as data:  # still an ordinary npz
        assert data["a"].tolist() == [0, 1, 2] and data["names"].tolist() == ["x", "y"]


def test_plain_zip_members_would_differ(tmp_path, at_times):
    """The hazard write_zip removes: ZipFile.writestr dates a member with the clock."""
    import zipfile

    def write(folder):
        folder.mkdir()
        with zipfile.ZipFile(folder / "a.zip", "w") as archive:
            archive.writestr("a.txt", b"hello")
        return sha256_file(folder / "a.zip")

    first, second = at_times(tmp_path, write)
    assert first != second


def test_csv_writers_are_byte_identical(tmp_path, at_times):
    from medtransfer.writers import write_csv

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    first, second = at_times(tmp_path, lambda folder: (write_csv(folder / "t.csv", frame),
                                                       sha256_file(folder / "t.csv"))[1])
    assert first == second
