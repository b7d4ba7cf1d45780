"""Feature extraction on tiny real files: a resnet18 weights file made by the converter,
a 6-image uint8 cache at 32 px built from PNGs, and an index CSV.

The golden file ``tests/golden/features_resnet18_seed0_32px.npy`` was made by running
this file as a script (``python tests/test_features.py``): it builds the same seeded
weights and images, then computes the features *without* medtransfer -- stock
``torchvision.models.resnet18`` with ``fc`` removed, loaded strictly, eval mode, in
float64, on images normalised with the ImageNet mean/std in numpy -- and stores them
as float32. ``extract`` never wrote it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medtransfer.data.cache import build_cache, load_cache
from medtransfer.data.index import write_index
from medtransfer.features import load_features
from medtransfer.features.extract import extract
from medtransfer.runtime import seed_everything, set_deterministic
from medtransfer.weights.backbones import backbone_keys, load_weights
from medtransfer.weights.convert import convert_file

GOLDEN = Path(__file__).resolve().parent / "golden" / "features_resnet18_seed0_32px.npy"
MEAN = np.array([0.485, 0.456, 0.406])  # ImageNet statistics, typed out on purpose:
STD = np.array([0.229, 0.224, 0.225])  # the reference must not reuse the package's constants
N_IMAGES, SIZE, SEED = 6, 32, 0


def seeded_state_dict(arch: str = "resnet18", seed: int = SEED) -> dict[str, torch.Tensor]:
    """Backbone weights from numpy's legacy generator (stable across numpy/torch versions).

    He-scaled convolutions keep activations O(1) through the network; BatchNorm running
    statistics are far from (0, 1), so eval-mode and train-mode BatchNorm differ a lot.
    """
    rng = np.random.RandomState(seed)
    state = {}
    for key, shape in sorted(backbone_keys(arch).items()):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100, dtype=torch.int64)
            continue
        if len(shape) == 4:
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.3, 3.0, shape)
        elif key.endswith("running_mean") or key.endswith("bias"):
            value = rng.normal(0.0, 0.5, shape)
        else:  # BatchNorm weight
            value = rng.uniform(0.5, 1.5, shape)
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return state


def seeded_images(n: int = N_IMAGES, size: int = SIZE, seed: int = SEED) -> np.ndarray:
    """uint8 (n, size, size, 3): seeded gradients plus noise, so convolutions see structure."""
    rng = np.random.RandomState(seed + 1)
    ramp = np.linspace(0, 1, size)
    base = (ramp[None, :, None, None] * rng.uniform(0, 200, (n, 1, 1, 3))
            + ramp[None, None, :, None] * rng.uniform(0, 55, (n, 1, 1, 3)))
    return np.clip(base + rng.normal(0, 20, (n, size, size, 3)), 0, 255).round().astype(np.uint8)


def reference_features(state: dict[str, torch.Tensor], images: np.ndarray) -> np.ndarray:
    """Independent computation: torchvision resnet18, float64, numpy normalisation."""
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    net.load_state_dict(state, strict=True)
    net = net.double().eval()
    x = (images.astype(np.float64) / 255.0 - MEAN) / STD
    with torch.no_grad():
        return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


@pytest.fixture(autouse=True)
def _restore_determinism():
    """Determinism is process-wide: leave it as the other tests expect."""
    benchmark = torch.backends.cudnn.benchmark
    yield
    set_deterministic(False)
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> SimpleNamespace:
    """PNGs -> index CSV -> cache (as the pipeline makes them); converted weights files."""
    root = tmp_path_factory.mktemp("features")
    images = seeded_images()
    paths = []
    for i, img in enumerate(images):
        paths.append(root / f"img{i}.png")
        Image.fromarray(img).save(paths[-1])
    frame = pd.DataFrame({
        "path": [str(p) for p in paths], "label": [0, 1] * 3, "label_name": ["a", "b"] * 3,
        "split": ["train"] * 4 + ["test"] * 2, "patient": "", "split_rule": "given",
    })
    write_index(frame, root / "index.csv")
    build_cache(root / "index.csv", root / "cache.npy", size=SIZE)
    assert np.array_equal(load_cache(root / "cache.npy"), images)  # the golden assumes this
    torch.save(seeded_state_dict(), root / "source.pth")
    weights = {}
    for norm in ("imagenet", "none"):
        weights[norm] = root / f"{norm}.pt"
        convert_file(root / "source.pth", weights[norm], fmt="torchvision", arch="resnet18",
                     normalisation=norm, model="seeded")
    return SimpleNamespace(root=root, images=images, frame=frame, index=root / "index.csv",
                           cache=root / "cache.npy", weights=weights)


def run(files, tmp_path, name: str = "f.npz", norm: str = "imagenet", **kw):
    kw.setdefault("device", "cpu")
    return extract(weights=files.weights[norm], cache=files.cache, index=files.index,
                   out=tmp_path / name, model="seeded", dataset="toy", **kw)


def model_input(images: np.ndarray, norm: str) -> torch.Tensor:
    x = images.astype(np.float32) / 255.0
    if norm == "imagenet":
        x = (x - MEAN.astype(np.float32)) / STD.astype(np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def test_matches_golden_features_from_torchvision(files, tmp_path):
    golden = np.load(GOLDEN)
    fs = run(files, tmp_path)
    assert fs.features.shape == golden.shape == (N_IMAGES, 512)
    assert fs.features.dtype == np.float32
    np.testing.assert_allclose(fs.features, golden, rtol=1e-4, atol=1e-5 * np.abs(golden).max())


def test_features_are_written_with_labels_split_and_provenance(files, tmp_path):
    fs = run(files, tmp_path, seed=7)
    back = load_features(tmp_path / "f.npz")
    assert np.array_equal(back.features, fs.features)
    assert back.labels.tolist() == [0, 1] * 3
    assert back.split.tolist() == ["train"] * 4 + ["test"] * 2
    assert back.meta["seed"] == 7 and back.meta["classes"] == ["a", "b"]
    assert back.meta["precision"] == "fp32" and back.meta["deterministic"] is False


def test_batchnorm_runs_in_eval_mode(files, tmp_path):
    fs = run(files, tmp_path)
    net, _ = load_weights(files.weights["imagenet"])
    x = model_input(files.images, "imagenet")
    with torch.no_grad():
        eval_out = net.eval()(x).numpy()
        train_out = net.train()(x).numpy()
    scale = np.abs(eval_out).max()
    np.testing.assert_allclose(fs.features, eval_out, rtol=1e-5, atol=1e-5 * scale)
    # train-mode BatchNorm (batch statistics) would give clearly different features
    assert np.abs(fs.features - train_out).max() > 0.1 * scale


@pytest.mark.parametrize("batch_size", [1, 4])
def test_features_do_not_depend_on_batch_size(files, tmp_path, batch_size):
    whole = run(files, tmp_path, "all.npz", batch_size=N_IMAGES).features
    parts = run(files, tmp_path, "parts.npz", batch_size=batch_size).features
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


@pytest.mark.parametrize("norm, recorded", [("imagenet", "normalise:imagenet_mean_std"),
                                            ("none", "normalise:none([0,1])")])
def test_normalisation_follows_the_weights_metadata(files, tmp_path, norm, recorded):
    fs = run(files, tmp_path, norm=norm)
    net, _ = load_weights(files.weights[norm])
    with torch.no_grad():
        expected = net(model_input(files.images, norm)).numpy()
        other = net(model_input(files.images, "none" if norm == "imagenet" else "imagenet")).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(fs.features, expected, rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(fs.features - other).max() > 0.1 * scale
    assert fs.meta["preprocessing"].endswith(recorded)


def test_cache_and_index_of_different_lengths_name_both_files(files, tmp_path):
    short = tmp_path / "short_index.csv"
    write_index(files.frame.iloc[:5], short)
    pattern = (rf"cache {re.escape(str(files.cache))} holds 6 images but the index "
               rf"{re.escape(str(short))} lists 5.*Re-run the cache_images rule")
    with pytest.raises(ValueError, match=pattern):
        extract(weights=files.weights["imagenet"], cache=files.cache, index=short,
                out=tmp_path / "f.npz", model="seeded", dataset="toy", device="cpu")
    assert not (tmp_path / "f.npz").exists()


def test_unknown_precision_is_named(files, tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'fp16'; expected 'fp32' or 'bf16'"):
        run(files, tmp_path, precision="fp16")


def test_deterministic_mode_is_set_and_unset(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    seed_everything(3, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    seed_everything(3)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_user_cublas_workspace_setting_is_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0, deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_seed_everything_seeds_python_numpy_and_torch():
    import random

    draws = []
    for _ in range(2):
        seed_everything(11)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_deterministic_extraction_is_bit_identical_on_cpu(files, tmp_path):
    first = run(files, tmp_path, "a.npz", deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    second = run(files, tmp_path, "b.npz", deterministic=True)
    assert np.array_equal(first.features, second.features)
    assert first.meta["deterministic"] is True


@pytest.mark.gpu
def test_deterministic_extraction_is_bit_identical_on_gpu(files, tmp_path):
    first = run(files, tmp_path, "a.npz", device="cuda", deterministic=True)
    second = run(files, tmp_path, "b.npz", device="cuda", deterministic=True)
    assert np.array_equal(first.features, second.features)
    golden = np.load(GOLDEN)
    # cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32): compare loosely
    np.testing.assert_allclose(first.features, golden, rtol=2e-2, atol=2e-2 * np.abs(golden).max())


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    feats = reference_features(seeded_state_dict(), seeded_images())
    np.save(GOLDEN, feats.astype(np.float32))
    print(f"wrote {GOLDEN}: shape {feats.shape}, |max| {np.abs(feats).max():.4g}")


def test_batches_of_any_size_give_the_same_features(files, tmp_path):
    """The gathering thread hands over every batch in order, the last one short."""
    whole = run(files, tmp_path, "a.npz", batch_size=64).features
    for batch_size in (1, 4):
        np.testing.assert_allclose(run(files, tmp_path, "b.npz", batch_size=batch_size).features, whole,
                                   rtol=1e-5, atol=1e-6 * np.abs(whole).max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("batch_size", [4, 256])
def test_gpu_fast_path_matches_the_fp32_reference(files, tmp_path, batch_size):
    """Pinned staging buffers, side-stream copies, normalisation on the device, bf16 +
    channels_last, features gathered on the device: equal to the CPU fp32 golden features
    within bf16 rounding."""
    golden = np.load(GOLDEN)
    fast = run(files, tmp_path, device="cuda", precision="bf16", batch_size=batch_size).features
    scale = np.abs(golden).max()
    np.testing.assert_allclose(fast, golden, rtol=5e-2, atol=3e-2 * scale)
    cosine = (fast * golden).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(golden, axis=1)
    assert cosine.min() > 0.999
    fp32 = run(files, tmp_path, "b.npz", device="cuda", precision="fp32", batch_size=batch_size).features
    np.testing.assert_allclose(fp32, golden, rtol=2e-2, atol=2e-2 * scale)  # TF32 convolutions


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_backbone_matches_eager_and_reports_its_compile_time(files, tmp_path):
    eager = run(files, tmp_path, "a.npz", device="cuda", precision="bf16").features
    compiled = run(files, tmp_path, "b.npz", device="cuda", precision="bf16", compile_model=True)
    np.testing.assert_allclose(compiled.features, eager, rtol=5e-2, atol=2e-2 * np.abs(eager).max())
    assert compiled.meta["compile_s"] > 0


def test_feature_files_are_memory_mapped_and_parts_read_in_chunks(tmp_path, monkeypatch):
    """A stored file maps its features; a part reads only its rows, across chunk borders; a
    compressed file (another writer) is read whole and gives the same parts."""
    import medtransfer.features as features
    from medtransfer.features import FeatureSet, load_features, save_features

    monkeypatch.setattr(features, "_READ_ROWS", 7)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    split = np.where(rng.random(50) < 0.7, "train", "test")
    fs = FeatureSet(x, np.arange(50) % 3, split, {"model": "m"})
    save_features(tmp_path / "f.npz", fs)
    loaded = load_features(tmp_path / "f.npz")
    assert isinstance(loaded.features, np.memmap) and not loaded.features.flags.writeable
    for name in ("train", "test"):
        rows, labels = loaded.part(name)
        np.testing.assert_array_equal(rows, x[split == name])
        np.testing.assert_array_equal(labels, (np.arange(50) % 3)[split == name])
    np.testing.assert_array_equal(loaded.rows(np.array([0, 6, 7, 49])), x[[0, 6, 7, 49]])
    np.savez_compressed(tmp_path / "c.npz", features=x, labels=fs.labels, split=split, meta=np.array("{}"))
    compressed = load_features(tmp_path / "c.npz")
    assert not isinstance(compressed.features, np.memmap)
    np.testing.assert_array_equal(compressed.part("test")[0], x[split == "test"])
