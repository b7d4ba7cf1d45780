"""Finetuning on crops of whole images (the full cache); evaluation stays on the centre cache."""

import numpy as np
import pandas as pd
import pytest

from fakes import toy_index, toy_pngs, toy_weights
from medtransfer.data.cache import build_cache, build_full_cache
from medtransfer.data.index import write_index
from medtransfer.protocols.finetune import evaluate_finetune
from medtransfer.results import details, read_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory, one_thread):
    """20 PNGs of mixed sizes and orientations (class 1 bright), both caches, a random resnet18."""
    root = tmp_path_factory.mktemp("full")
    toy_weights(root / "weights.pt")
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 2
    images = [np.clip(rng.normal(190 if label else 60, 25, size=(40, 64, 3) if i % 3 else (72, 36, 3)), 0, 255)
              .astype(np.uint8) for i, label in enumerate(labels)]
    toy_index(root / "index.csv", labels, n_train=14, paths=toy_pngs(root, images, prefix=""),
              names=("dark", "bright"))
    build_cache(root / "index.csv", root / "cache.npy", size=32)
    build_full_cache(root / "index.csv", root / "full.npy", size=32)
    return root


def _run(toy, tmp_path, name, **kw):
    args = dict(weights=toy / "weights.pt", cache=toy / "cache.npy", index=toy / "index.csv",
                rows=tmp_path / f"{name}.csv", predictions=tmp_path / f"{name}.npz", model="toy", dataset="toy",
                steps=4, batch_size=6, lr=0.05, early_stopping=False, device="cpu", n_bootstrap=20)
    evaluate_finetune(**{**args, **kw})
    return args["rows"], args["predictions"]


def test_training_crops_come_from_the_full_cache(toy, tmp_path):
    rows_a, preds_a = _run(toy, tmp_path, "a", full_cache=toy / "full.npy")
    rows_b, _ = _run(toy, tmp_path, "b", full_cache=toy / "full.npy")
    _, preds_centre = _run(toy, tmp_path, "c")
    assert rows_a.read_bytes() == rows_b.read_bytes()  # seeded
    # short side round(32 * 256 / 224) = 37; the 72x36 images become 74x37, the longest
    assert details(read_rows([rows_a]).iloc[0])["augment"] == "rrc0.08-1_bicubic_aa+hflip_of_full_image_short37_long_max74"
    assert details(read_rows([tmp_path / "c.csv"]).iloc[0])["augment"] == "rrc0.08-1_bicubic+hflip_of_centre_crop"
    with np.load(preds_a) as full, np.load(preds_centre) as centre:
        assert full["probs"].shape == centre["probs"].shape == (6, 2)  # evaluated on the centre cache
        assert not np.allclose(full["losses"], centre["losses"])  # trained on other crops


def test_full_cache_must_match_the_index(toy, tmp_path):
    frame = pd.read_csv(toy / "index.csv")
    write_index(frame.iloc[:10].assign(split=["train"] * 6 + ["test"] * 4), tmp_path / "short.csv")
    build_full_cache(tmp_path / "short.csv", tmp_path / "short.npy", size=32)
    with pytest.raises(ValueError, match=r"short\.npy holds 10 images but the index lists 20; rebuild the full cache"):
        _run(toy, tmp_path, "x", full_cache=tmp_path / "short.npy")
    build_full_cache(toy / "index.csv", tmp_path / "test_only.npy", size=32, split="test")
    with pytest.raises(ValueError, match=r"test_only\.npy lacks 14 training images \(rows \[0, 1, 2, 3, 4\]"):
        _run(toy, tmp_path, "y", full_cache=tmp_path / "test_only.npy")
