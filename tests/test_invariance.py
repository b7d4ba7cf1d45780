"""Invariance: transforms before the crop, Ledoit-Wolf, whitened cosine, multi-view pairs, the stage's files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fakes import make_chexpert, make_dr, toy_index, toy_pngs, toy_weights
from medtransfer.data.adapters import build_index
from medtransfer.data.augment import full_batch
from medtransfer.data.cache import build_full_cache, load_full_cache
from medtransfer.features import FeatureSet, save_features
from medtransfer.protocols.invariance import (
    MomentSums,
    Whitener,
    check_transforms,
    clean_crop,
    evaluate_invariance,
    evaluate_multiview,
    feature_moments,
    held_out_halves,
    ledoit_wolf,
    multiview_pairs,
    transform_features,
    transformed_crops,
)
from medtransfer.protocols.shared import draw_sorted, frozen_backbone
from medtransfer.results import Predictions, details, read_rows
from medtransfer.weights.backbones import WeightsMeta, build_backbone, normalise, save_weights

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


def test_the_identity_of_each_transform_is_the_clean_crop():
    """The published grids hold the identity: hflip 0, rotation 0, hue 0, brightness 1, blur 0, ..."""
    full = _image()
    crop = clean_crop(full, 32)[0]
    for name, identity in (("hflip", 0), ("vflip", 0), ("rotation", 0), ("hue", 0), ("brightness", 1),
                           ("contrast", 1), ("translation", 0), ("scale", 1), ("blur", 0)):
        torch.testing.assert_close(transformed_crops(full, 32, name, [identity])[0], crop, atol=1e-5, rtol=0,
                                   msg=name)
    flips = transformed_crops(full, 32, "hflip", [0, 1])
    assert not torch.allclose(flips[0], flips[1], atol=1e-3)  # 0 the identity, 1 mirrored


@pytest.mark.parametrize("transforms, message", [
    ({"hflip": [0, 2]}, r"transforms.hflip: \[2\] not allowed; each value must be 0 \(the identity\) or 1"),
    ({"vflip": [-1]}, r"transforms.vflip: \[-1\] not allowed"),
    ({"hue": [0.75]}, r"transforms.hue: \[0.75\] not allowed; each value must be a hue shift in turns from -0.5"),
    ({"blur": [-1.0]}, r"transforms.blur: \[-1.0\] not allowed"),
    ({"scale": [0]}, r"transforms.scale: \[0\] not allowed"),
])
def test_transform_values_outside_their_domain_are_named(transforms, message):
    with pytest.raises(ValueError, match=message):
        check_transforms(transforms)


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


def test_moments_summed_chunk_by_chunk_are_the_two_pass_moments():
    """One pass over chunks of any size (the invariance crops, a batch at a time) gives the centred
    mean, scatter and fourth moment of all the rows, even far off the origin."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(700, 12)) * np.linspace(0.5, 2, 12) + 1e3
    centred = x - x.mean(0)
    sums = MomentSums()
    for lo, hi in ((0, 1), (1, 90), (90, 400), (400, 700)):
        sums.add(x[lo:hi])
    mean, scatter, fourth = sums.result()
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(scatter, centred.T @ centred, rtol=1e-8, atol=1e-6)
    assert fourth == pytest.approx(float(((centred ** 2).sum(1) ** 2).sum()), rel=1e-8)
    assert np.allclose(feature_moments(x, rows=64)[1], scatter, rtol=1e-8, atol=1e-6)
    whole, chunked = Whitener().fit(x), Whitener().fit_chunks([x[:333], x[333:]])
    np.testing.assert_allclose(chunked.cholesky_, whole.cholesky_, rtol=1e-9, atol=1e-9)


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
    """A random resnet18 (and the same net histogram-equalising its inputs), a whole-image cache of
    6 training images (of 10)."""
    root = tmp_path_factory.mktemp("inv")
    toy_weights(root / "w.pt")
    torch.manual_seed(0)
    save_weights(root / "histeq.pt", build_backbone("resnet18").state_dict(),
                 WeightsMeta(arch="resnet18", model="h", mean=None, std=None, normalisation="histeq"))
    rng = np.random.default_rng(0)
    pngs = toy_pngs(root, [rng.integers(0, 255, (40, 48, 3)).astype(np.uint8) for _ in range(10)])
    toy_index(root / "index.csv", np.arange(10) % 2, n_train=6, paths=pngs)
    build_full_cache(root / "index.csv", root / "full.npy", size=32)
    return root


def _run(study, tmp_path, transforms, weights="w.pt", **settings):
    return evaluate_invariance(
        weights=study / weights, full_cache=study / "full.npy", index=study / "index.csv",
        out_rows={t: tmp_path / f"{t}.csv" for t in transforms},
        out_predictions={t: tmp_path / f"{t}.npz" for t in transforms}, model="toy", dataset="d", size=32,
        transforms=transforms, n_images=settings.pop("n_images", 2), n_bootstrap=20, seed=0, device="cpu",
        **settings)


def test_stage_writes_one_rows_and_predictions_file_per_transform(study, tmp_path):
    transforms = {"rotation": [-10, 10], "hflip": [0, 1], "blur": [1.0]}
    out = _run(study, tmp_path, transforms)
    for t in transforms:
        rows = read_rows([tmp_path / f"{t}.csv"])
        assert list(rows["metric"]) == ["cosine", "mahalanobis"] and set(rows["setting"]) == {t}
        assert rows["value"].iloc[0] == pytest.approx(out[t].mean()) and -1 <= rows["value"].iloc[0] <= 1
        assert details(rows.iloc[0])["grid"] == transforms[t] and rows["n"].iloc[0] == 2
        # the crops' view (short side round(32 * 256 / 224) = 37, crop 32), not the features stage's
        assert rows["preprocessing"].iloc[0].startswith("resize_short37_bicubic+center_crop32+normalise:")
        assert details(rows.iloc[0])["whitening_view"].startswith("clean centre crops (resize_short37_bicubic+"
                                                                  "center_crop32) of 6 training images")
        pred = Predictions.load(tmp_path / f"{t}.npz")
        assert pred.setting == t and (pred["positions"] < 6).all()  # training images of the whole-image cache
    assert details(read_rows([tmp_path / "hflip.csv"]).iloc[0])["cosine_by_value"][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"n_images=7 but .* only 6 training images"):
        _run(study, tmp_path, {"hflip": [1]}, n_images=7)


def test_whitening_comes_from_the_clean_crops_of_the_training_images(study, tmp_path):
    """The rows' numbers are those of a whitening fitted on the clean centre crops of the cache's
    training images (all 6, or covariance_images of them drawn by seed), the view compared."""
    transforms = {"rotation": [15.0], "brightness": [1.3]}
    net, wmeta = frozen_backbone(study / "w.pt", "cpu")
    images, hw = load_full_cache(study / "full.npy")

    def crop(pos):
        full = full_batch(images, hw, np.array([pos]), "cpu")[0][0].float().div(255.0)
        return full, net(normalise(clean_crop(full, 32), wmeta)).double().detach().numpy()[0]

    for covariance_images, pool, n_images in ((None, np.arange(6), 4), (4, draw_sorted(np.arange(6), 4, seed=0), 2)):
        _run(study, tmp_path, transforms, n_images=n_images, covariance_images=covariance_images)
        positions = Predictions.load(tmp_path / "rotation.npz")["positions"]
        half = held_out_halves(len(positions), seed=0)
        assert sorted(np.bincount(half)) == [n_images // 2] * 2
        for t in transforms:
            cos, dist = [], []
            for p, k in zip(positions, half):  # each image whitened without its half of the evaluated ones
                held_out = [q for q in pool if q not in positions[half == k]]
                whitener = Whitener().fit(np.stack([crop(q)[1] for q in held_out]))
                moved = transform_features(net, lambda x: normalise(x, wmeta), crop(p)[0], 32, {t: transforms[t]})[1][t]
                c, d = whitener.compare(crop(p)[1][None], moved)
                cos.append(c.mean())
                dist.append(d.mean())
            rows = read_rows([tmp_path / f"{t}.csv"]).set_index("metric")
            assert rows.loc["cosine", "value"] == pytest.approx(np.mean(cos), abs=1e-6), (t, covariance_images)
            assert rows.loc["mahalanobis", "value"] == pytest.approx(np.mean(dist), rel=1e-5), (t, covariance_images)
            assert details(rows.loc["cosine"])["covariance_images"] == len(pool)
    x = np.random.default_rng(0).normal(size=(3, 8))
    with pytest.raises(ValueError, match=r"1 image\(s\) to estimate a covariance from.*covariance_images"):
        Whitener().fit_sums(MomentSums().add(x[:1]))
    with pytest.raises(ValueError, match=r"covariance of 2 images is singular .*covariance_images"):
        Whitener().fit(x[:2])  # two rows: Ledoit-Wolf shrinks nothing


def test_an_image_in_the_whitening_sample_looks_less_invariant_than_one_held_out():
    """Why the whitening leaves each image's half out: with more dimensions than images, an image
    of the sample whitens into the sample's span and its transformed copy does not."""
    rng = np.random.default_rng(0)
    p, n = 512, 40
    x = rng.normal(size=(n + 1, p)) * np.linspace(3, 0.3, p)
    moved = x + rng.normal(size=x.shape)  # a transform of every image
    inside = Whitener().fit(x[:n]).compare(x[:1], moved[:1])[0][0]  # measured: 0.76
    held_out = Whitener().fit(x[1:]).compare(x[:1], moved[:1])[0][0]  # 0.88
    assert held_out > inside + 0.08, (inside, held_out)


def test_histogram_equalised_models_are_marked_invariant_to_monotone_maps(study, tmp_path):
    """Equalising each crop undoes a brightness or contrast change (no clipping at 0.7): cosine 1
    by construction. The rows say so; a model with plain normalisation gets no mark."""
    transforms = {"brightness": [0.7], "contrast": [0.7], "rotation": [15.0]}

    def marks(folder):
        return {t: details(read_rows([folder / f"{t}.csv"]).iloc[0]).get("invariant_by_preprocessing")
                for t in transforms}

    out = _run(study, tmp_path, transforms, weights="histeq.pt")
    assert marks(tmp_path)["brightness"].startswith("per-image histogram equalisation undoes")
    assert marks(tmp_path)["contrast"] and marks(tmp_path)["rotation"] is None
    for t in ("brightness", "contrast"):  # 1 but for pixels that float rounding moves across a histogram bin
        np.testing.assert_allclose(out[t], 1.0, atol=2e-3)
    (tmp_path / "plain").mkdir()
    plain = _run(study, tmp_path / "plain", transforms)
    assert marks(tmp_path / "plain") == dict.fromkeys(transforms)
    assert (plain["contrast"] < 0.99).all() and (plain["brightness"] < 0.99).all()


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
    # whitened on the training images only: the test pairs are held out of their own statistics
    train = (frame["split"] == "train").to_numpy()
    pairs = Predictions.load(tmp_path / "p.npz")
    first, second = pairs["positions"], np.array(details(rows.iloc[0])["second_rows"])
    expect, _ = Whitener().fit(feats[train]).compare(feats[first], feats[second])
    np.testing.assert_allclose(cos, expect, rtol=1e-9)
    assert details(rows.iloc[0])["whitening_view"].endswith(f"of {train.sum()} training images (the test pairs "
                                                            "held out), the view both images are compared in")
    with pytest.raises(ValueError, match=r"n_images=11 but dataset 'dr' has only 10 multi-view test pairs"):
        evaluate_multiview(features=tmp_path / "f.npz", index=tmp_path / "index.csv", out_rows=tmp_path / "r.csv",
                           out_predictions=tmp_path / "p.npz", dataset="dr", n_images=11)
