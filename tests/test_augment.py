"""Finetuning crops of whole images: boxes inside each real image, torchvision's resampling."""

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2.functional import resized_crop

from medtransfer.data.augment import crop_params, full_batch, random_resized_crop_full, resize_weights


def _padded(sizes, pad_value=0, seed=0):
    """Smooth random uint8 images of ``sizes`` (h, w), padded to one (B, 3, H, W) tensor."""
    gen = torch.Generator().manual_seed(seed)
    height, width = np.max(sizes, axis=0)
    images = torch.full((len(sizes), 3, height, width), pad_value, dtype=torch.uint8)
    for i, (h, w) in enumerate(sizes):
        coarse = torch.rand(1, 3, 6, 6, generator=gen)
        images[i, :, :h, :w] = (torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0] * 255).round()
    return images, np.array(sizes)


SIZES = [(40, 60), (60, 30), (24, 24), (30, 48), (18, 36), (48, 40)]


def test_crop_params_take_one_size_per_image_and_stay_inside():
    rng = np.random.default_rng(0)
    hw = np.stack([rng.integers(8, 80, 400), rng.integers(8, 80, 400)], axis=1)
    top, left, h, w = crop_params(np.random.default_rng(1), 400, hw[:, 0], hw[:, 1]).T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= hw[:, 0]).all() and (left + w <= hw[:, 1]).all()
    # one size for all draws the same boxes as that size given per image
    same = crop_params(np.random.default_rng(2), 50, np.full(50, 32), np.full(50, 40))
    np.testing.assert_array_equal(same, crop_params(np.random.default_rng(2), 50, 32, 40))
    # per-image fallback: very wide and very tall images get torchvision's centred box
    fallback = crop_params(np.random.default_rng(0), 2, np.array([10, 200]), np.array([200, 10]), scale=(1.0, 1.0))
    assert fallback.tolist() == [[0, 93, 10, 13], [93, 0, 13, 10]]


@pytest.mark.parametrize("antialias", [True, False])
def test_crop_equals_torchvision_resized_crop_of_the_unpadded_image(antialias):
    images, hw = _padded(SIZES)
    out = random_resized_crop_full(images, hw, 20, np.random.default_rng(3), antialias=antialias)
    assert out.shape == (6, 3, 20, 20) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    rng = np.random.default_rng(3)
    boxes, flips = crop_params(rng, 6, hw[:, 0], hw[:, 1]), rng.random(6) < 0.5
    assert flips.any() and not flips.all() and (boxes[:, 2:].max(1) > 20).any()  # flips and downscales
    for img, (h, w), got, (top, left, bh, bw), flip in zip(images, hw, out, boxes.tolist(), flips):
        real = img[:, :h, :w].float()
        ref = resized_crop(real, top, left, bh, bw, [20, 20], interpolation=InterpolationMode.BICUBIC,
                           antialias=antialias).clamp(0, 255) / 255
        ref = ref.flip(-1) if flip else ref
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)  # everywhere, edges included


def test_padding_is_never_read_and_boxes_stay_in_the_real_image():
    zeros, hw = _padded(SIZES, pad_value=0)
    full, _ = _padded(SIZES, pad_value=255)
    for seed in range(5):
        a = random_resized_crop_full(zeros, hw, 16, np.random.default_rng(seed), scale=(0.5, 1.0))
        b = random_resized_crop_full(full, hw, 16, np.random.default_rng(seed), scale=(0.5, 1.0))
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    top = torch.tensor([0, 5])
    weights = resize_weights(top, torch.tensor([10, 20]), 40, 7)
    assert weights.shape == (2, 7, 40)
    assert not weights[0, :, :0].any() and not weights[0, :, 10:].any() and not weights[1, :, 25:].any()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 7))


def test_seeded_and_flip_mirrors_the_same_crop():
    images, hw = _padded(SIZES)
    a = random_resized_crop_full(images, hw, 12, np.random.default_rng(7))
    torch.testing.assert_close(a, random_resized_crop_full(images, hw, 12, np.random.default_rng(7)))
    plain = random_resized_crop_full(images, hw, 12, np.random.default_rng(7), flip=False)
    rng = np.random.default_rng(7)
    crop_params(rng, 6, hw[:, 0], hw[:, 1])
    flips = torch.from_numpy(rng.random(6) < 0.5)
    torch.testing.assert_close(a, torch.where(flips[:, None, None, None], plain.flip(-1), plain))


def test_full_batch_stands_images_up_and_pads_to_the_batch(tmp_path):
    from PIL import Image

    from medtransfer.data.cache import build_full_cache, load_full_cache, load_full_image
    from medtransfer.data.index import write_index

    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    for path, (h, w) in zip(paths, [(20, 30), (50, 16), (16, 16), (40, 20)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": [0, 1, 0, 1], "label_name": list("abab"),
                          "split": ["train", "train", "test", "train"], "patient": "", "split_rule": "given"})
    write_index(frame, tmp_path / "index.csv")
    build_full_cache(tmp_path / "index.csv", tmp_path / "full.npy", size=14, scale=8 / 7, max_aspect=2.5)
    images, hw = load_full_cache(tmp_path / "full.npy")
    assert hw.tolist() == [[16, 24], [40, 16], [0, 0], [32, 16]] and images.shape == (4, 16, 40, 3)
    x, sizes = full_batch(images, hw, np.array([1, 0, 3]), "cpu")
    assert x.shape == (3, 3, 40, 24) and x.dtype == torch.uint8 and sizes.tolist() == [[40, 16], [16, 24], [32, 16]]
    for got, path, (h, w) in zip(x, [paths[1], paths[0], paths[3]], sizes):
        np.testing.assert_array_equal(got.permute(1, 2, 0)[:h, :w].numpy(), load_full_image(path, 16, 40))
        assert not got[:, h:].any() and not got[:, :, w:].any()
    with pytest.raises(ValueError, match=r"image sizes \[\[20, 30\], \[0, 0\]\].*must be positive.*rebuild"):
        random_resized_crop_full(torch.zeros(2, 3, 50, 70, dtype=torch.uint8), np.array([[20, 30], [0, 0]]), 8,
                                 np.random.default_rng(0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    images, hw = _padded(SIZES)
    cpu = random_resized_crop_full(images, hw, 20, np.random.default_rng(4))
    gpu = random_resized_crop_full(images.cuda(), hw, 20, np.random.default_rng(4))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
