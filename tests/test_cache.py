import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data.cache import build_cache, load_cache, load_image
from medtransfer.data.index import write_index


def _index(tmp_path, paths, labels=None):
    labels = labels or [i % 2 for i in range(len(paths))]
    frame = pd.DataFrame({
        "path": [str(p) for p in paths], "label": labels, "label_name": [str(v) for v in labels],
        "split": ["train", "test"] * (len(paths) // 2), "patient": "", "split_rule": "given",
    })
    write_index(frame, tmp_path / "index.csv")
    return tmp_path / "index.csv"


def test_short_side_resize_and_centre_crop(tmp_path):
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[:, 20:60] = 255  # a white centre band exactly as wide as the crop
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out[:, 2:-2].min() > 200  # the crop is centred on the band


def test_grey_and_16bit_images_become_rgb(tmp_path):
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(tmp_path / "g.png")
    Image.fromarray((np.arange(256, dtype=np.uint16).reshape(16, 16) * 200)).save(tmp_path / "g16.png")
    for name in ("g.png", "g16.png"):
        out = load_image(tmp_path / name, 16)
        assert out.shape == (16, 16, 3) and np.array_equal(out[..., 0], out[..., 2])
    assert load_image(tmp_path / "g16.png", 16).max() == 255  # stretched to the full range


def test_cache_matches_index_order(tmp_path):
    paths = []
    for i in range(4):
        Image.fromarray(np.full((10, 10, 3), i * 60, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    build_cache(_index(tmp_path, paths), tmp_path / "c.npy", size=8)
    cache = load_cache(tmp_path / "c.npy")
    assert cache.shape == (4, 8, 8, 3)
    assert [int(c.mean()) for c in cache] == [0, 60, 120, 180]


def test_corrupt_image_names_the_file_and_leaves_no_cache(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    index = _index(tmp_path, [tmp_path / "ok.png", tmp_path / "bad.png"])
    with pytest.raises(ValueError, match=r"bad\.png cannot be decoded.*corrupt"):
        build_cache(index, tmp_path / "c.npy", size=8)
    assert list(tmp_path.glob("c*.npy")) == []


def test_missing_image_names_the_file(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    index = _index(tmp_path, [tmp_path / "ok.png", tmp_path / "gone.png"])
    with pytest.raises(FileNotFoundError, match=r"gone\.png listed in the dataset index does not exist"):
        build_cache(index, tmp_path / "c.npy", size=8)


def test_bad_image_error_says_where_the_dataset_comes_from(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    index = _index(tmp_path, [tmp_path / "ok.png", tmp_path / "bad.png"])
    with pytest.raises(ValueError, match=r"(?s)bad\.png cannot be decoded.*download:.*zenodo.*ICIAR2018"):
        build_cache(index, tmp_path / "c.npy", size=8, kind="bach")
