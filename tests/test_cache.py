import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data.cache import (
    build_cache,
    build_full_cache,
    full_preprocessing_name,
    full_sides,
    load_cache,
    load_full_cache,
    load_full_image,
    load_image,
)
from medtransfer.data.index import write_index
from medtransfer.paths import full_hw


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


# ---------------------------------------------------------------- the finetune cache of whole images


def _bordered(path, h, w, border=4):
    """A mid-grey image with a white frame ``border`` pixels wide: the centre crop cuts it off."""
    img = np.full((h, w, 3), 100, dtype=np.uint8)
    img[:border], img[-border:], img[:, :border], img[:, -border:] = 255, 255, 255, 255
    Image.fromarray(img).save(path)
    return path


def test_full_cache_keeps_the_whole_image_at_bounded_size(tmp_path):
    paths = [_bordered(tmp_path / "wide.png", 40, 80), _bordered(tmp_path / "tall.png", 90, 30),
             _bordered(tmp_path / "square.png", 30, 30)]
    index = _index(tmp_path, paths + [tmp_path / "wide.png"])  # rows 0, 2 train; 1, 3 test
    build_full_cache(index, tmp_path / "full.npy", size=8, scale=1.25, max_aspect=2.0, split=None)
    images, hw = load_full_cache(tmp_path / "full.npy")
    # short side round(1.25 * 8) = 10; tall 90x30 -> 30x10, long side cropped to 20
    assert hw.tolist() == [[10, 20], [20, 10], [10, 10], [10, 20]] and hw.dtype == np.int32
    assert images.shape == (4, 10, 20, 3) and images.dtype == np.uint8  # the tall image lies transposed
    assert (images[2, :, 10:] == 0).all()  # padding
    wide, tall = images[0], images[1, :, :20].transpose(1, 0, 2)
    assert wide[:, 0].min() > 200 and wide[0].min() > 200 and wide[5, 5:15].max() < 130  # frame kept
    assert tall[:, 0].min() > 200 and tall[0, 4].max() < 130  # side frame kept, top cut off
    np.testing.assert_array_equal(tall, load_full_image(paths[1], 10, 20))
    ref = np.asarray(Image.open(paths[0]).resize((20, 10), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(wide, ref)
    assert full_preprocessing_name(8, 1.25, 2.0) == "resize_short10_bicubic+center_crop_long_max20"


def test_full_cache_stores_only_the_training_images_by_default(tmp_path):
    paths = [_bordered(tmp_path / f"{i}.png", 24 + 8 * i, 24) for i in range(4)]
    build_full_cache(_index(tmp_path, paths), tmp_path / "full.npy", size=8)
    images, hw = load_full_cache(tmp_path / "full.npy")
    assert full_sides(8) == (9, 18)  # round(8 * 256 / 224), twice that
    assert hw.tolist() == [[9, 9], [0, 0], [15, 9], [0, 0]]  # rows 1 and 3 are test
    assert images.shape == (4, 9, 15, 3) and not images[[1, 3]].any() and images[[0, 2]].all(-1).any()


def test_full_cache_errors_name_the_file_and_what_to_do(tmp_path):
    ok = _bordered(tmp_path / "ok.png", 12, 12)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    index = _index(tmp_path, [ok, tmp_path / "bad.png"], labels=[0, 0])
    with pytest.raises(ValueError, match=r"(?s)bad\.png cannot be decoded.*download:.*zenodo"):
        build_full_cache(index, tmp_path / "full.npy", size=8, split=None, kind="bach")
    assert list(tmp_path.glob("full*")) == [] and list(tmp_path.glob(".full*")) == []
    with pytest.raises(ValueError, match=r"scale >= 1.*got size=8, scale=0.5.*e\.g\. scale 1\.1429"):
        build_full_cache(index, tmp_path / "full.npy", size=8, scale=0.5)
    build_full_cache(_index(tmp_path, [ok, ok]), tmp_path / "full.npy", size=8)
    np.save(tmp_path / "full.hw.npy", np.array([[9, 9]], np.int32))
    with pytest.raises(ValueError, match=r"full\.hw\.npy holds sizes \(1, 2\) that do not fit .*rebuild"):
        load_full_cache(tmp_path / "full.npy")
    (tmp_path / "full.hw.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"full\.hw\.npy \(the image sizes of .*full\.npy\) does not exist"):
        load_full_cache(tmp_path / "full.npy")
    assert full_hw(tmp_path / "full.npy") == tmp_path / "full.hw.npy"


def test_decoding_threads_write_the_same_bytes_in_index_order(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(14):
        h, w = (30 + 3 * i, 40) if i % 3 else (40, 28)  # landscape and portrait
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    index = _index(tmp_path, paths)
    build_cache(index, tmp_path / "one.npy", size=16)
    build_cache(index, tmp_path / "four.npy", size=16, workers=4)
    assert (tmp_path / "one.npy").read_bytes() == (tmp_path / "four.npy").read_bytes()
    build_full_cache(index, tmp_path / "full1.npy", size=16, split=None)
    build_full_cache(index, tmp_path / "full4.npy", size=16, split=None, workers=4)
    assert (tmp_path / "full1.npy").read_bytes() == (tmp_path / "full4.npy").read_bytes()
    assert np.array_equal(np.load(full_hw(tmp_path / "full1.npy")), np.load(full_hw(tmp_path / "full4.npy")))


def test_a_bad_image_among_threads_names_the_file_and_leaves_no_cache(tmp_path):
    paths = []
    for i in range(9):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    (tmp_path / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match=r"5\.png cannot be decoded"):
        build_cache(_index(tmp_path, paths[:8]), tmp_path / "c.npy", size=8, workers=3)
    assert list(tmp_path.glob("c*.npy")) == []


def test_read_rows_equals_indexing_and_leaves_no_pages_mapped(tmp_path):
    """Positions in any order, runs and slices read as indexing does; streaming a 256 MB cache
    batch by batch keeps the job's resident memory flat (through the map it grows by 256 MB)."""
    import subprocess
    import sys

    from medtransfer.data.cache import read_rows

    np.save(tmp_path / "small.npy", np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3))
    small = load_cache(tmp_path / "small.npy")
    for rows in ([0, 1, 2], [5, 0, 3, 4], [], slice(2, 6), np.array([4])):
        np.testing.assert_array_equal(read_rows(small, rows), np.asarray(small)[rows])
    np.testing.assert_array_equal(read_rows(small[1:], [0]), np.asarray(small)[[1]])  # a view: indexed
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(4096, 128, 128, 4))
    big[:] = 1  # every page written (the holes of a sparse file are never mapped)
    big[::97, 0, 0, 0] = 7
    del big
    script = f"""
import sys
import numpy as np
from medtransfer.data.cache import read_rows
images = np.load({str(tmp_path / 'big.npy')!r}, mmap_mode="r")
def peak_kb():  # VmHWM: this process's own peak (ru_maxrss starts from the parent's)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
before = peak_kb()
total = 0
for start in range(0, len(images), 64):
    batch = read_rows(images, slice(start, start + 64)) if sys.argv[1] == "read" else np.array(images[start:start + 64])
    total += int(batch[:, 0, 0, 0].sum())
print((peak_kb() - before) // 1024, total)
"""
    grown = {}
    for how in ("read", "map"):
        out = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, check=True,
                             timeout=300).stdout.split()
        grown[how] = int(out[0])
        sevens = len(range(0, 4096, 97))
        assert int(out[1]) == 7 * sevens + 4096 - sevens, how  # the bytes came through
    assert grown["read"] < 40 and grown["map"] > 150, grown


def _photos(tmp_path, colour_rows=()):
    """Four JPEGs (lossy: a grey one's channels come back a level or so apart): grey gradients,
    and a colour photograph at each of ``colour_rows``."""
    paths = []
    ramp = np.add.outer(np.arange(24), np.arange(24)).astype(np.uint8) * 5
    for i in range(4):
        rgb = np.stack([ramp, ramp, ramp], -1)
        if i in colour_rows:
            rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 40)], -1)
        Image.fromarray(rgb).save(tmp_path / f"p{i}.jpg", quality=70)
        paths.append(tmp_path / f"p{i}.jpg")
    return _index(tmp_path, paths)


def test_the_cache_checks_the_colour_flag_against_the_images(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "m").mkdir()
    grey = _photos(tmp_path / "g")
    mixed = _photos(tmp_path / "m", colour_rows=(2,))
    with pytest.raises(ValueError, match=r"dataset 'mine' \(kind csv\): it is set or recorded as colour, but all 4 "
                                         r"images decoded are grey .*; set datasets.mine.colour: false in the config"):
        build_cache(grey, tmp_path / "c.npy", size=16, kind="csv", colour=True, dataset="mine")
    assert not (tmp_path / "c.npy").exists()  # nothing written on a mismatch
    with pytest.raises(ValueError, match=r"set or recorded as grey, but 1 of 4 images decoded are colour, "
                                         r"e.g. .*p2.jpg \(mean chroma .*set datasets.mine.colour: true"):
        build_cache(mixed, tmp_path / "c.npy", size=16, kind="csv", colour=False, dataset="mine")
    with pytest.raises(ValueError, match=r"dataset 'cx' \(kind chexpert\).*1 of 2 images.*kind chexpert is grey: "
                                         r"check that the root holds its images"):
        build_full_cache(mixed, tmp_path / "f.npy", size=16, kind="chexpert", colour=False, dataset="cx")
    build_cache(grey, tmp_path / "c.npy", size=16, kind="csv", colour=False, dataset="mine")
    build_cache(mixed, tmp_path / "c.npy", size=16, kind="csv", colour=True, dataset="mine")
    build_full_cache(grey, tmp_path / "f.npy", size=16, colour=False, dataset="mine")
    build_cache(mixed, tmp_path / "unchecked.npy", size=16)  # no flag: no check (library use)
