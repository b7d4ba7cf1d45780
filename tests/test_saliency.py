"""Occlusion saliency: known maps from hand-made features, batched == per-window loop, the stage's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fakes import toy_index, toy_weights
from medtransfer.protocols.checks import check_saliency
from medtransfer.protocols.saliency import evaluate_saliency, occlusion_map, window_starts
from medtransfer.protocols.saliency_maps import attentive_diffusion, centre_crop, load_maps, plot_saliency_figures
from medtransfer.results import Predictions, details, read_rows
from medtransfer.weights.backbones import build_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_map(features, x, window, stride):
    """The published loop: one occluded copy at a time, each pixel's mean over covering windows."""
    ref = features(x[None])[0].double()
    size = x.shape[-1]
    total, count = torch.zeros(size, size, dtype=torch.float64), torch.zeros(size, size, dtype=torch.float64)
    for r in window_starts(size, window, stride):
        for c in window_starts(size, window, stride):
            occluded = x.clone()
            occluded[:, r:r + window, c:c + window] = 0
            score = (features(occluded[None])[0].double() - ref).norm() / ref.norm()
            total[r:r + window, c:c + window] += score
            count[r:r + window, c:c + window] += 1
    return total / count


def corner_pixel(batch):
    """A feature that is the top-left pixel of channel 0 only."""
    return batch[:, 0, 0, 0:1]


def test_hand_made_feature_gives_the_known_map():
    x = torch.ones(3, 6, 6)
    saliency = occlusion_map(corner_pixel, x, window=2, stride=1, batch_size=7)
    expected = np.zeros((6, 6))
    # only the window at (0, 0) changes the feature (score 1); a pixel's value is 1 / (windows covering it)
    expected[0, 0], expected[0, 1], expected[1, 0], expected[1, 1] = 1.0, 0.5, 0.5, 0.25
    np.testing.assert_allclose(saliency.numpy(), expected)
    assert attentive_diffusion(saliency) == pytest.approx(4 / 36)


def test_a_feature_of_every_pixel_alike_has_a_flat_map():
    x = torch.ones(3, 8, 8)
    saliency = occlusion_map(lambda b: b.flatten(1), x, window=4, stride=2)
    np.testing.assert_allclose(saliency.numpy(), np.sqrt(16 / 64))
    assert attentive_diffusion(saliency) == 0.0


def test_batched_map_equals_the_per_window_loop():
    torch.manual_seed(0)
    net = build_backbone("resnet18").eval().double()
    x = torch.randn(3, 20, 20, dtype=torch.float64)
    batched = occlusion_map(net, x, window=4, stride=2, batch_size=13)
    naive = naive_map(net, x, window=4, stride=2)
    torch.testing.assert_close(batched, naive, rtol=1e-10, atol=1e-12)
    assert centre_crop(batched, 16).shape == (16, 16)


def test_settings_that_leave_pixels_uncovered_are_refused():
    ok = dict(input_size=64, crop_size=56, window=8, stride=4, n_images=2, batch_size=64)
    check_saliency(**ok)
    with pytest.raises(ValueError, match=r"stride \(3\).*allowed strides here: \[1, 2, 4, 7, 8\]"):
        check_saliency(**{**ok, "stride": 3})
    with pytest.raises(ValueError, match=r"crop_size \(80\) must be at most input_size"):
        check_saliency(**{**ok, "crop_size": 80})
    with pytest.raises(ValueError, match=r"protocols.saliency.n_images must be a positive integer"):
        check_saliency(**{**ok, "n_images": 0})


@pytest.fixture(scope="module")
def data(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("saliency")
    toy_weights(root / "weights.pt", demo=True)
    rng = np.random.default_rng(0)
    np.save(root / "cache.npy", rng.integers(0, 255, (8, 32, 32, 3)).astype(np.uint8))
    toy_index(root / "index.csv", np.arange(8) % 2, n_train=5)
    return root


def _run(data, tmp_path, **kwargs):
    args = dict(weights=data / "weights.pt", cache=data / "cache.npy", index=data / "index.csv",
                out_rows=tmp_path / "rows.csv", out_predictions=tmp_path / "p.npz", out_maps=tmp_path / "maps.npz",
                model="toy", dataset="d", n_images=2, input_size=32, crop_size=24, window=8, stride=4,
                batch_size=16, n_bootstrap=20, seed=1, device="cpu")
    return evaluate_saliency(**{**args, **kwargs})


def test_stage_writes_rows_predictions_maps_and_figures(data, tmp_path):
    values = _run(data, tmp_path)
    rows = read_rows([tmp_path / "rows.csv"])
    assert list(rows["metric"]) == ["attentive_diffusion"] and rows["setting"].iloc[0] == "occlusion"
    assert rows["value"].iloc[0] == pytest.approx(values.mean()) and 0 < values.mean() < 1
    assert details(rows.iloc[0])["window"] == 8 and rows["n"].iloc[0] == 2
    pred = Predictions.load(tmp_path / "p.npz")
    assert pred.pairing == "values" and (pred["positions"] >= 5).all()  # test images only
    maps = load_maps(tmp_path / "maps.npz")
    assert maps["maps"].shape == (2, 24, 24) and maps["inputs"].shape == (2, 24, 24, 3)
    plot_saliency_figures(maps=[tmp_path / "maps.npz"], heatmaps=[tmp_path / "h.png"], overlays=[tmp_path / "o.png"])
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "o.png").exists()


def test_too_many_images_are_refused_before_any_work(data, tmp_path):
    with pytest.raises(ValueError, match=r"protocols.saliency.n_images=5 but .* only 3 test images"):
        _run(data, tmp_path, n_images=5)
