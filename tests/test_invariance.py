"""Invariance: transforms before the crop, Ledoit-Wolf, whitened cosine, multi-view pairs, the stage's files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fakes import make_chexpert, make_dr, toy_index, toy_pngs, toy_weights
from medtransfer.data.adapters import build_index
from medtransfer.data.cache import build_full_cache
from medtransfer.features import FeatureSet, save_features
from medtransfer.protocols.invariance import (
    Whitener,
    check_transforms,
    clean_crop,
    evaluate_invariance,
    evaluate_multiview,
    ledoit_wolf,
    multiview_pairs,
    transform_features,
    transformed_crops,
)
from medtransfer.results import Predictions, details, read_rows

pytestmark = pytest.mark.usefixtures("one_thread")


class ColourStats(nn.Module):
    """Per-channel mean and mean square over the image: blind to where a pixel is, not to its colour."""

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.pow(2).mean((2, 3))], dim=1)


def _image(h=40, w=52, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def test_no_transform_is_the_exact_centre_crop_and_flips_mirror_it():
    full = _image()
    crop = clean_crop(full, 32)
    assert torch.equal(crop[0], full[:, 4:36, 10:42])
    torch.testing.assert_close(transformed_crops(full, 32, "hflip", [1])[0], crop[0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(transformed_crops(full, 32, "vflip", [1])[0], crop[0].flip(-2), atol=1e-5, rtol=0)
    torch.testing.assert_close(transformed_crops(full, 32, "rotation", [0.0])[0], crop[0], atol=1e-5, rtol=0)


def test_translation_is_measured_after_the_resize():
    full = _image()
    shifted = transformed_crops(full, 32, "translation", [2 / 32])[0]  # two pixels of the model's input
    torch.testing.assert_close(shifted[:, 2:, 2:], full[:, 4:34, 10:40], atol=1e-5, rtol=0)


def test_invariance_is_one_for_an_ignored_transform_and_below_one_otherwise():
    net = ColourStats()
    fulls = [_image(seed=s) for s in range(40)]
    stats = np.stack([net(clean_crop(f, 32)).double().numpy()[0] for f in fulls])
    whitener = Whitener().fit(stats)
    transforms = {"hflip": [1], "vflip": [1], "brightness": [0.6, 1.4], "hue": [0.2]}
    clean, moved = zip(*(transform_features(net, lambda x: x, f, 32, transforms) for f in fulls[:4]))
    clean = np.stack(clean)
    for name, expect_one in (("hflip", True), ("vflip", True), ("brightness", False), ("hue", False)):
        cos, dist = whitener.compare(np.repeat(clean, len(transforms[name]), 0), np.concatenate([m[name] for m in moved]))
        if expect_one:
            np.testing.assert_allclose(cos, 1.0, atol=1e-6)
            np.testing.assert_allclose(dist, 0.0, atol=1e-3)
        else:
            assert (cos < 0.99).all() and (dist > 0.1).all(), name


@pytest.mark.parametrize("n, p", [(30, 50), (400, 60), (5000, 40)])  # n < p, n > p, and several row chunks
def test_ledoit_wolf_agrees_with_scikit_learn(n, p, monkeypatch):
    from sklearn.covariance import LedoitWolf

    import medtransfer.protocols.invariance as invariance

    monkeypatch.setattr(invariance, "_ROWS", 1024)  # 5,000 rows: five chunks, the last one short
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, p)) @ np.diag(np.linspace(0.1, 3, p)) + rng.normal(5.0, 2.0, size=p)  # off-centre
    ours, shrinkage = ledoit_wolf(x)
    theirs = LedoitWolf().fit(x)
    np.testing.assert_allclose(ours, theirs.covariance_, rtol=1e-10, atol=1e-12)
    assert shrinkage == pytest.approx(theirs.shrinkage_, rel=1e-10)
    whitener = Whitener().fit(x.astype(np.float32))  # float32 features, float64 sums: the same estimate
    np.testing.assert_allclose(whitener.cholesky_ @ whitener.cholesky_.T, theirs.covariance_, rtol=1e-5, atol=1e-7)


def test_ridge_covariance_is_the_sample_covariance_plus_the_ridge():
    x = np.random.default_rng(3).normal(size=(300, 20)) * np.linspace(1, 4, 20)
    w = Whitener("ridge", ridge=1e-3).fit(x)
    np.testing.assert_allclose(w.cholesky_ @ w.cholesky_.T, np.cov(x, rowvar=False) + 1e-3 * np.eye(20),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.mean_, x.mean(0), rtol=1e-12, atol=1e-12)


def test_covariance_on_a_seeded_subsample():
    x = np.random.default_rng(4).normal(size=(1000, 10))
    a, b = Whitener(n_images=100, seed=7).fit(x), Whitener(n_images=100, seed=7).fit(x)
    np.testing.assert_array_equal(a.cholesky_, b.cholesky_)  # the same seed, the same rows
    assert a.n_fitted_ == 100 and Whitener().fit(x).n_fitted_ == 1000
    rows = np.sort(np.random.default_rng(7).choice(1000, 100, replace=False))
    np.testing.assert_allclose(a.mean_, x[rows].mean(0), rtol=1e-12, atol=1e-14)
    assert not np.allclose(Whitener(n_images=100, seed=8).fit(x).mean_, a.mean_)
    assert Whitener(n_images=5000).fit(x).n_fitted_ == 1000  # more than there are: every row
    with pytest.raises(ValueError, match="covariance_images=1.*at least 2"):
        Whitener(n_images=1).fit(x)


_FIT_50K = """
import sys
import numpy as np
from medtransfer.protocols.invariance import Whitener
n, p = 50_000, 2_048
x = np.empty((n, p), np.float32)
rng = np.random.default_rng(0)
for lo in range(0, n, 5_000):
    x[lo:lo + 5_000] = rng.standard_normal((5_000, p), dtype=np.float32)
x[:, :64] *= 3.0  # some structure, so the shrinkage is not trivial
def peak_kb():  # VmHWM: this process's own peak (ru_maxrss starts from the parent's)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
before = peak_kb()
w = Whitener(sys.argv[1]).fit(x)
after = peak_kb()
print(before // 1024, after // 1024, w.n_fitted_, w.shrinkage_)
"""


@pytest.mark.slow  # a scale test: 50,000 x 2,048 features, tens of seconds each
@pytest.mark.parametrize("covariance", ["ledoit_wolf", "ridge"])
def test_whitening_of_50000_images_needs_p_by_p_memory(covariance):
    """The n x n form needed 20 GB here (2,000 images: 0.8 GB; 16,000 crashed); the p x p sums
    need p x p matrices and one chunk of rows beyond the features themselves (410 MB)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FIT_50K, covariance], capture_output=True, text=True,
                          timeout=600, check=True)
    before_mb, after_mb, fitted, shrinkage = proc.stdout.split()
    grown = int(after_mb) - int(before_mb)
    # p x p float64 = 32 MB: the scatter, the covariance, its Cholesky factor, one 64 MB chunk and its square
    assert grown < 400, f"whitening 50,000 x 2,048 features grew the peak by {grown} MB"
    assert int(fitted) == 50_000 and 0.0 <= float(shrinkage) <= 1.0


def test_whitened_distance_is_the_mahalanobis_distance():
    x = np.random.default_rng(1).normal(size=(200, 5))
    for cov_kind in ("ledoit_wolf", "ridge"):
        w = Whitener(cov_kind, ridge=1e-6).fit(x)
        cov = w.cholesky_ @ w.cholesky_.T
        d = x[0] - x[1]
        _, dist = w.compare(x[:1], x[1:2])
        assert dist[0] == pytest.approx(np.sqrt(d @ np.linalg.solve(cov, d)))
    assert Whitener("ridge").fit(x).shrinkage_ == 0.0


def test_unknown_transform_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown transform\(s\) \['rotate'\]; allowed: \['rotation', 'hflip'"):
        check_transforms({"rotate": [10]})


def test_chexpert_and_eyepacs_indexes_carry_their_views(tmp_path):
    (tmp_path / "cx").mkdir()
    make_chexpert(tmp_path / "cx")
    frame = build_index("chexpert", tmp_path / "cx", split="patient", seed=0)
    assert set(frame["view"]) == {"frontal", "lateral"} and frame["view_group"].iloc[0] == "patient00001/study1"
    pairs = multiview_pairs(frame)
    assert len(pairs) and (frame["view"].to_numpy()[pairs] == [["frontal", "lateral"]]).all()
    assert (frame["view_group"].to_numpy()[pairs[:, 0]] == frame["view_group"].to_numpy()[pairs[:, 1]]).all()
    (tmp_path / "dr").mkdir()
    make_dr(tmp_path / "dr")
    dr = build_index("diabetic_retinopathy", tmp_path / "dr")
    pairs = multiview_pairs(dr)
    assert len(pairs) == 10 and (dr["view"].to_numpy()[pairs] == [["left", "right"]]).all()
    assert (dr["label"].to_numpy()[pairs[:, 0]] == dr["label"].to_numpy()[pairs[:, 1]]).all()


def test_multiview_of_data_without_views_is_refused():
    frame = pd.DataFrame({"path": ["a", "b"], "label": [0, 1], "split": ["test", "test"]})
    with pytest.raises(ValueError, match=r"carries no views.*chexpert and diabetic_retinopathy"):
        multiview_pairs(frame, "dataset 'x'")


@pytest.fixture(scope="module")
def study(tmp_path_factory, one_thread):
    """A random resnet18, a whole-image cache of 6 training images and features of all 10."""
    root = tmp_path_factory.mktemp("inv")
    toy_weights(root / "w.pt")
    rng = np.random.default_rng(0)
    pngs = toy_pngs(root, [rng.integers(0, 255, (40, 48, 3)).astype(np.uint8) for _ in range(10)])
    toy_index(root / "index.csv", np.arange(10) % 2, n_train=6, paths=pngs)
    build_full_cache(root / "index.csv", root / "full.npy", size=32)
    meta = {"model": "toy", "dataset": "d", "weights_sha256": "0" * 64, "split": "given", "precision": "fp32",
            "preprocessing": "p"}
    save_features(root / "f.npz", FeatureSet(rng.normal(size=(10, 512)).astype(np.float32), np.arange(10) % 2,
                                             np.array(["train"] * 6 + ["test"] * 4), meta))
    return root


def test_stage_writes_one_rows_and_predictions_file_per_transform(study, tmp_path):
    transforms = {"rotation": [-10, 10], "hflip": [1], "blur": [1.0]}
    out = evaluate_invariance(
        weights=study / "w.pt", full_cache=study / "full.npy", index=study / "index.csv", features=study / "f.npz",
        out_rows={t: tmp_path / f"{t}.csv" for t in transforms}, out_predictions={t: tmp_path / f"{t}.npz" for t in transforms},
        model="toy", dataset="d", size=32, transforms=transforms, n_images=2, n_bootstrap=20, seed=0, device="cpu")
    for t in transforms:
        rows = read_rows([tmp_path / f"{t}.csv"])
        assert list(rows["metric"]) == ["cosine", "mahalanobis"] and set(rows["setting"]) == {t}
        assert rows["value"].iloc[0] == pytest.approx(out[t].mean()) and -1 <= rows["value"].iloc[0] <= 1
        assert details(rows.iloc[0])["grid"] == transforms[t] and rows["n"].iloc[0] == 2
        pred = Predictions.load(tmp_path / f"{t}.npz")
        assert pred.setting == t and (pred["positions"] < 6).all()  # training images of the whole-image cache
    with pytest.raises(ValueError, match=r"n_images=7 but .* only 6 training images"):
        evaluate_invariance(
            weights=study / "w.pt", full_cache=study / "full.npy", index=study / "index.csv",
            features=study / "f.npz", out_rows={"hflip": tmp_path / "x.csv"}, out_predictions={"hflip": tmp_path / "x.npz"},
            model="toy", dataset="d", size=32, transforms={"hflip": [1]}, n_images=7, device="cpu")


def test_multiview_rows_from_the_features_stage(tmp_path):
    (tmp_path / "dr").mkdir()
    make_dr(tmp_path / "dr")
    frame = build_index("diabetic_retinopathy", tmp_path / "dr")
    frame.to_csv(tmp_path / "index.csv", index=False)
    feats = np.random.default_rng(0).normal(size=(len(frame), 16)).astype(np.float32)
    meta = {"model": "m", "dataset": "dr", "weights_sha256": "0" * 64, "split": "published", "precision": "fp32"}
    save_features(tmp_path / "f.npz", FeatureSet(feats, frame["label"].to_numpy(), frame["split"].to_numpy(), meta))
    cos = evaluate_multiview(features=tmp_path / "f.npz", index=tmp_path / "index.csv", out_rows=tmp_path / "r.csv",
                             out_predictions=tmp_path / "p.npz", dataset="dr", n_images=4, n_bootstrap=10)
    rows = read_rows([tmp_path / "r.csv"])
    assert set(rows["setting"]) == {"multiview"} and rows["value"].iloc[0] == pytest.approx(cos.mean())
    with pytest.raises(ValueError, match=r"n_images=11 but dataset 'dr' has only 10 multi-view test pairs"):
        evaluate_multiview(features=tmp_path / "f.npz", index=tmp_path / "index.csv", out_rows=tmp_path / "r.csv",
                           out_predictions=tmp_path / "p.npz", dataset="dr", n_images=11)
