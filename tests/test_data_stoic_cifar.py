"""STOIC (CT volumes read with SimpleITK) and CIFAR-10 (the official python batches) on tiny
files written in their real formats: indexes, decoding, layout errors, hostile pickles."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from fakes import make_cifar, make_stoic
from medtransfer.data.adapters import ADAPTERS, build_index
from medtransfer.data.cache import build_cache, decode
from medtransfer.data.index import read_index
from medtransfer.data.sources import read_cifar_batch, window_hu

# --- STOIC ----------------------------------------------------------------------------------


def test_hu_window_maps_minus_1000_and_250_to_0_and_255():
    hu = np.array([-2000, -1000, -375, 0, 250, 3000])
    assert window_hu(hu).tolist() == [0, 0, 128, 204, 255, 255]  # -375 -> 127.5 -> 128 (half to even)


def test_stoic_index_and_middle_slices(tmp_path):
    volumes = make_stoic(tmp_path)
    frame = build_index("stoic", tmp_path, split="published")
    assert len(frame) == 10 and set(frame["split"]) == {"train", "test"} and (frame["split"] == "train").sum() == 8
    assert frame["label_name"].tolist()[:2] == ["no_covid", "covid"]
    assert frame["patient"].tolist() == list(volumes)
    image = np.asarray(decode(frame["path"].iloc[3]))
    expected = window_hu(volumes[frame["patient"].iloc[3]][2].T)  # depth 5: the middle slice is z = 2
    assert image.shape == (10, 12, 3) and np.array_equal(image[..., 0], expected)  # (x, y), as medpy
    assert np.array_equal(image[..., 0], image[..., 2])
    assert not ADAPTERS["stoic"].colour  # one grey slice, replicated to RGB
    assert not ADAPTERS["stoic"].multiview and "view" not in frame.columns
    build_cache_path = tmp_path / "cache.npy"
    index = tmp_path / "index.csv"
    frame.to_csv(index, index=False)
    build_cache(index, build_cache_path, size=8)
    assert np.load(build_cache_path).shape == (10, 8, 8, 3)


def test_stoic_slice_has_the_published_orientation(tmp_path):
    """The published code read volumes with medpy, whose array is SimpleITK's transposed, (x, y, z),
    and took ``[:, :, floor(depth * 0.5)]``: element (i, j) is the voxel at x = i, y = j. A
    non-square volume whose every voxel encodes its own (x, y, z) pins it."""
    depth, height, width = 5, 4, 7
    z, y, x = np.meshgrid(np.arange(depth), np.arange(height), np.arange(width), indexing="ij")
    hu = (-1000 + 40 * x + 150 * y + 3 * z).astype(np.int16)  # all inside the window, all distinct
    sitk.WriteImage(sitk.GetImageFromArray(hu), str(tmp_path / "v.mha"))  # array (z, y, x)
    volume = sitk.ReadImage(str(tmp_path / "v.mha"))
    assert volume.GetSize() == (width, height, depth)  # SimpleITK indexes (x, y, z)
    image = np.asarray(decode(tmp_path / "v.mha"))[..., 0]
    assert image.shape == (width, height)
    middle = depth // 2  # floor(depth * 0.5), the published index
    expected = [[volume.GetPixel(i, j, middle) for j in range(height)] for i in range(width)]
    assert np.array_equal(image, window_hu(np.array(expected)))
    # by hand: x = 6, y = 0, z = 2 is -754 HU -> 246 / 1250 * 255 = 50.2; x = 0, y = 3 is -544 HU -> 93.0
    assert image[6, 0] == 50 and image[0, 3] == 93


def test_stoic_layout_errors_are_clear(tmp_path):
    make_stoic(tmp_path)
    os.remove(tmp_path / "data" / "mha" / "107.mha")
    with pytest.raises(FileNotFoundError, match=r"stoic: 1 of 10 images listed in metadata/reference.csv"):
        build_index("stoic", tmp_path, split="random")
    reference = pd.read_csv(tmp_path / "metadata" / "reference.csv", dtype=str)
    reference.loc[0, "probCOVID"] = "0.5"
    reference.to_csv(tmp_path / "metadata" / "reference.csv", index=False)
    with pytest.raises(ValueError, match=r"stoic: unknown label value\(s\) \['0.5'\] in the probCOVID column"):
        build_index("stoic", tmp_path)
    os.remove(tmp_path / "metadata" / "reference.csv")
    with pytest.raises(FileNotFoundError, match=r"stoic: expected file .*metadata/reference.csv does not exist"):
        build_index("stoic", tmp_path)


def test_a_corrupt_volume_is_named(tmp_path):
    (tmp_path / "bad.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n")
    with pytest.raises(ValueError, match=r"CT volume .*bad\.mha cannot be read"):
        decode(tmp_path / "bad.mha")


# --- CIFAR-10 -------------------------------------------------------------------------------


def test_cifar_index_official_split_and_pixels(tmp_path):
    data = make_cifar(tmp_path)
    frame = build_index("cifar10", tmp_path, split="published")
    assert len(frame) == 60 and (frame["split"] == "test").sum() == 10
    assert frame["split_rule"].iloc[0] == "published:official_train_test"
    assert frame["label_name"].iloc[:10].tolist() == ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                      "frog", "horse", "ship", "truck"]
    row = frame.iloc[23]  # data_batch_3, image 3
    assert row["path"].endswith("data_batch_3#3")
    image = np.asarray(decode(row["path"]))
    assert np.array_equal(image, data["data_batch_3"][3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert ADAPTERS["cifar10"].colour and not ADAPTERS["cifar10"].multiview and "view" not in frame.columns
    assert build_index("cifar10", tmp_path, split="given")["split"].tolist() == frame["split"].tolist()


def test_cifar_layout_errors_and_hostile_pickles(tmp_path):
    make_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_4")
    with pytest.raises(FileNotFoundError, match=r"cifar10: expected file .*data_batch_4 does not exist"):
        build_index("cifar10", tmp_path)

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "cifar-10-batches-py" / "data_batch_4").write_bytes(pickle.dumps({b"data": Boom()}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_4: not a CIFAR-10 python batch .*global .*system is not allowed"):
        build_index("cifar10", tmp_path)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match=r"not a CIFAR-10 python batch \(expected 'data' uint8"):
        read_cifar_batch(tmp_path / "cifar-10-batches-py" / "data_batch_4")
    with pytest.raises(ValueError, match=r"has 10 images, no image 12"):
        decode(str(tmp_path / "cifar-10-batches-py" / "test_batch") + "#12")


def test_cifar_cache(tmp_path):
    make_cifar(tmp_path)
    build_index("cifar10", tmp_path).to_csv(tmp_path / "index.csv", index=False)
    build_cache(tmp_path / "index.csv", tmp_path / "cache.npy", size=16)
    assert np.load(tmp_path / "cache.npy").shape == (60, 16, 16, 3) and len(read_index(tmp_path / "index.csv")) == 60
