"""The per-model input normalisations against reference computations: histogram equalisation
(CovidPrognosis' MIMIC-CheXpert models) against numpy's histogram and interpolation as their
training transform applies them to a whole (3, H, W) image, and MoCo-CXR's chest X-ray mean/std."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.weights.backbones import WeightsMeta, equalise_histogram, normalise
from medtransfer.weights.formats import CXR_MEAN, CXR_STD

# Largest difference to the numpy reference, in [0, 255] units, measured on these images.
TOLERANCE = 1e-9


def reference_equalise(image: np.ndarray, bins: int = 256) -> np.ndarray:
    """What CovidPrognosis' ``HistogramNormalize`` computes on one image tensor, whatever its
    shape ((3, H, W) in their pipeline): numpy's density histogram of all its values, the
    cumulative sum scaled to 255, interpolated at every value from the left bin edges, reshaped
    back (channels kept)."""
    histogram, edges = np.histogram(image.ravel(), bins, density=True)
    cdf = histogram.cumsum()
    cdf = 255 * cdf / cdf[-1]
    return np.interp(image.ravel(), edges[:-1], cdf).reshape(image.shape)


def channel_mean_equalise(rgb: np.ndarray) -> np.ndarray:
    """The former transform: the reference on the channel mean, copied to three channels."""
    return np.repeat(reference_equalise(rgb.mean(axis=0))[None], 3, axis=0)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.random((17, 23)),  # continuous values
        rng.integers(0, 256, (32, 32)) / 255.0,  # a uint8 image: many ties, values on bin edges
        (rng.integers(40, 90, (16, 20)) / 255.0),  # a narrow range
        np.clip(rng.normal(0.5, 0.2, (24, 24)), 0, 1),  # clipped: mass at both ends
        np.full((8, 8), 0.3),  # constant
    ]


@pytest.mark.parametrize("i", range(5))
def test_histogram_equalisation_matches_the_reference(i):
    grey = _images()[i]
    x = torch.from_numpy(np.repeat(grey[None, None], 3, axis=1))
    out = equalise_histogram(x).numpy()
    assert out.shape == x.shape and np.array_equal(out[:, 0], out[:, 2])
    expected = reference_equalise(grey)
    assert np.abs(out[0, 0] - expected).max() <= TOLERANCE
    assert out.max() == pytest.approx(255.0) and out.min() >= 0.0


def test_a_batch_is_equalised_image_by_image_in_float32():
    images = _images()[:2]
    size = (16, 16)
    batch = np.stack([img[: size[0], : size[1]] for img in images])
    x = torch.from_numpy(np.repeat(batch[:, None], 3, axis=1)).float()
    out = equalise_histogram(x)
    assert out.dtype == torch.float32
    for j in range(2):
        expected = reference_equalise(x[j, 0].double().numpy())
        assert np.abs(out[j, 0].double().numpy() - expected).max() < 1e-4  # float32 output


def _colour_images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    red = rng.random((12, 14))
    return [
        rng.random((3, 12, 14)),  # continuous values
        rng.integers(0, 256, (3, 16, 16)) / 255.0,  # a uint8 image: ties across channels
        np.stack([red, 0.5 * red, np.zeros_like(red)]),  # channels of different ranges
    ]


@pytest.mark.parametrize("i", range(3))
def test_colour_images_are_equalised_as_published_one_histogram_colour_kept(i):
    rgb = _colour_images()[i]
    out = equalise_histogram(torch.from_numpy(rgb[None])).numpy()[0]
    expected = reference_equalise(rgb)
    assert np.abs(out - expected).max() <= TOLERANCE
    assert not np.allclose(out[0], out[1])  # colour kept: the channels stay apart
    assert np.abs(out - channel_mean_equalise(rgb)).max() > 1.0  # not the former channel-mean result


@pytest.mark.parametrize("i", range(5))
def test_grey_images_equalise_as_before(i):
    """On equal channels one histogram of all values is the channel's histogram with every
    count tripled: the same result as the former channel-mean transform."""
    grey = np.repeat(_images()[i][None], 3, axis=0)
    out = equalise_histogram(torch.from_numpy(grey[None])).numpy()[0]
    assert np.abs(out - channel_mean_equalise(grey)).max() <= TOLERANCE
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])


def test_equalisation_is_differentiable_for_reconstruction():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    equalise_histogram(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad.abs().sum() > 0)


def test_normalise_applies_each_models_own_normalisation():
    x = torch.rand(2, 3, 8, 8)
    cxr = normalise(x, WeightsMeta(mean=CXR_MEAN, std=CXR_STD, normalisation="cxr"))
    assert torch.allclose(cxr, (x - 0.5020) / 0.085585)
    eq = normalise(x, WeightsMeta(mean=None, std=None, normalisation="histeq"))
    assert torch.equal(eq, equalise_histogram(x)) and eq.max() == pytest.approx(255.0)
    assert torch.equal(normalise(x, WeightsMeta(mean=None, std=None, normalisation="none")), x)


def test_converted_files_carry_their_normalisation(tmp_path):
    import pandas as pd

    from medtransfer.features import run_meta
    from medtransfer.weights.backbones import load_weights
    from medtransfer.weights.convert import convert_file
    from medtransfer.weights.demo import write_demo_weights

    write_demo_weights(tmp_path / "mimic.pt", fmt="lightning_moco", model="m", arch="densenet121")
    meta_histeq = convert_file(tmp_path / "mimic.pt", tmp_path / "a.pt", fmt="lightning_moco", arch="densenet121")
    assert meta_histeq.normalisation == "histeq" and meta_histeq.mean is None
    assert load_weights(tmp_path / "a.pt")[1].normalisation == "histeq"
    write_demo_weights(tmp_path / "cxr.pth.tar", fmt="moco", model="c", arch="resnet18")
    convert_file(tmp_path / "cxr.pth.tar", tmp_path / "b.pt", fmt="moco", arch="resnet18", normalisation="cxr")
    loaded = load_weights(tmp_path / "b.pt")[1]
    assert loaded.mean == CXR_MEAN and loaded.std == CXR_STD and loaded.normalisation == "cxr"
    index = pd.DataFrame({"split_rule": ["given"], "label": [0], "label_name": ["a"]})
    row = run_meta(model="c", dataset="d", weights_meta=loaded, index=index, precision="fp32", size=32, seed=0)
    assert row["preprocessing"].endswith("normalise:cxr_mean_std(0.5020,0.085585)")
    row = run_meta(model="m", dataset="d", weights_meta=meta_histeq, index=index, precision="fp32", size=32, seed=0)
    assert row["preprocessing"].endswith("normalise:histeq(all_channels,256_bins,[0,255])")  # not the former grey
