import hashlib

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.demo import generate
from medtransfer.data.index import index_from_csv


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def test_same_seed_same_files(tmp_path):
    generate("demo_fundus", tmp_path / "a", n_images=12, size=48, seed=5)
    generate("demo_fundus", tmp_path / "b", n_images=12, size=48, seed=5)
    generate("demo_fundus", tmp_path / "c", n_images=12, size=48, seed=6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


@pytest.mark.parametrize("kind, mode, n_classes", [("demo_cxr", "L", 2), ("demo_fundus", "RGB", 3)])
def test_demo_runs_through_the_csv_adapter(tmp_path, kind, mode, n_classes):
    generate(kind, tmp_path, n_images=36, size=48, seed=0)
    index = index_from_csv(tmp_path / "labels.csv", split="given")
    assert sorted(index["label"].unique()) == list(range(n_classes))
    assert set(index["split"]) == {"train", "test"} and (index["split_rule"] == "given").all()
    # the split is by patient: no patient on both sides
    sides = index.groupby("patient")["split"].nunique()
    assert (sides == 1).all()
    with Image.open(index["path"].iloc[0]) as img:
        assert img.mode == mode and img.size == (48, 48)


def _signal(kind, n=60):
    """A crude hand-made feature separates the classes: the signal is learnable."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        frame = generate(kind, tmp, n_images=n, size=64, seed=1)
        pixels = [np.asarray(Image.open(Path(tmp) / p).convert("RGB"), dtype=float) for p in frame["path"]]
        return frame["label"].to_numpy(), pixels


def test_cxr_effusion_brightens_the_lung_base():
    labels, pixels = _signal("demo_cxr")
    base = np.array([p[40:56, 8:56].mean() for p in pixels])
    assert base[labels == "effusion"].mean() > base[labels == "no_effusion"].mean() + 10


def test_fundus_grades_add_lesions():
    labels, pixels = _signal("demo_fundus")
    # exudates are yellow: a high green channel inside the retina, beyond the optic disc
    roughness = np.array([np.abs(np.diff(p[..., 1], axis=0)).mean() for p in pixels])
    means = [roughness[labels == g].mean() for g in ("grade0", "grade1", "grade2")]
    assert means[0] < means[1] < means[2]


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown demo dataset kind 'demo_ct'"):
        generate("demo_ct", "/tmp/never")
