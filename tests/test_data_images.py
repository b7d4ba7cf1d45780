"""Hostile and odd image files: each is read correctly or refused with an error naming it.

All go through ``cache.decode``, the one function that decodes dataset images (the centre-crop
cache and the whole-image finetune cache both call it).
"""

import io
import logging
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.data.adapters import build_index
from medtransfer.data.cache import _full_hw, build_cache, decode, load_full_image, load_image
from medtransfer.data.index import index_from_csv, write_index

RNG = np.random.RandomState(0)
RGB = (RNG.rand(24, 32, 3) * 255).astype(np.uint8)


def _png_bytes(img: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _jpeg_bytes(img: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb() -> bytes:
    """A 400-byte PNG whose header claims 60000 x 60000 grey pixels (3.6 gigapixels)."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * 60001 * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _truncated(data: bytes) -> bytes:
    """The first 60% of a file: the header reads, the pixels run out (a broken download)."""
    return data[: len(data) * 6 // 10]


BROKEN = {
    "truncated.jpg": lambda: _truncated(_jpeg_bytes(Image.fromarray(RGB))),
    "truncated.png": lambda: _truncated(_png_bytes(Image.fromarray(RGB))),
    "empty.png": lambda: b"",
    "text.jpg": lambda: b"<html>not an image</html>",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_are_refused_by_name(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(BROKEN[name]())
    with pytest.raises(ValueError, match=rf"image .*{name} cannot be decoded .*replace it"):
        load_image(path, 16)
    with pytest.raises(ValueError, match=rf"image .*{name} cannot be decoded"):
        load_full_image(path, 16, 32)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb())
    assert path.stat().st_size < 1000
    for read in (lambda: load_image(path, 16), lambda: _full_hw(str(path), 16, 32)):
        with pytest.raises(ValueError, match=r"image .*bomb\.png is refused as a possible decompression bomb"):
            read()


def test_16_bit_grey_png_keeps_its_contrast(tmp_path):
    ramp = np.tile(np.linspace(1000, 60000, 32).astype(np.uint16), (24, 1))
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    img = np.asarray(decode(path))
    assert img.shape == (24, 32, 3) and (img[..., 0] == img[..., 2]).all()
    assert img[0, 0, 0] == 0 and img[0, -1, 0] == 255 and (np.diff(img[0, :, 0].astype(int)) >= 0).all()


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    flat = np.zeros((24, 32, 3), np.uint8) + np.array([200, 40, 90], np.uint8)
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(_jpeg_bytes(Image.fromarray(flat).convert("CMYK")))
    assert Image.open(path).mode == "CMYK"
    img = np.asarray(decode(path)).astype(int)
    assert img.shape == (24, 32, 3) and np.abs(img - flat).max() <= 6


def test_palette_png_and_alpha_read_exactly(tmp_path):
    blocks = np.kron(RNG.randint(0, 4, (3, 4)), np.ones((8, 8), int))
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [250, 250, 250]], np.uint8)
    rgb = colours[blocks]
    palette = Image.fromarray(rgb).quantize(colors=4, dither=Image.Dither.NONE)
    (tmp_path / "palette.png").write_bytes(_png_bytes(palette))
    Image.fromarray(np.dstack([rgb, np.full(blocks.shape, 128, np.uint8)])).save(tmp_path / "alpha.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    for name in ("palette.png", "alpha.png"):
        assert np.array_equal(np.asarray(decode(tmp_path / name)), rgb), name


@pytest.mark.parametrize("orientation, expected", [(1, "as stored"), (6, "turned"), (3, "upside down")])
def test_exif_orientation_stands_the_image_up(orientation, expected, tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:10, :10] = 255  # a white block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    path.write_bytes(_png_bytes(Image.fromarray(stored), exif=exif.tobytes()))
    img = np.asarray(decode(path))
    white = np.argwhere(img[..., 0] == 255)
    if expected == "turned":  # orientation 6: shown rotated 90 degrees clockwise
        assert img.shape == (40, 20, 3) and white.min(0).tolist() == [0, 10] and white.max(0).tolist() == [9, 19]
    elif expected == "upside down":
        assert img.shape == (20, 40, 3) and white.min(0).tolist() == [10, 30]
    else:
        assert img.shape == (20, 40, 3) and white.max(0).tolist() == [9, 9]
    # the whole-image cache reads the header for the size: it must agree with the decoded image
    assert _full_hw(str(path), 16, 64) == load_full_image(path, 16, 64).shape[:2]


def test_csv_paths_may_not_climb_out_of_the_root(tmp_path):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    Image.fromarray(RGB).save(root / "img" / "a.png")
    csv = root / "labels.csv"
    csv.write_text("path,label\nimg/a.png,cat\nimg/../img/a.png,dog\n../../etc/passwd,dog\n")
    with pytest.raises(ValueError, match=r"labels\.csv: 1 relative image path\(s\) climb out of the dataset root "
                                         r".*data \(line 4: '\.\./\.\./etc/passwd'\)"):
        index_from_csv(csv)
    with pytest.raises(ValueError, match=r"climb out of the dataset root"):
        build_index("csv", None, csv=csv, split="random")


def test_a_bad_image_stops_the_cache_naming_it(tmp_path):
    """Never a silent skip: the cache has one row per index row, or the build fails."""
    rows = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(RGB).save(path)
        rows.append({"path": str(path), "label": i % 2, "label_name": str(i % 2),
                     "split": ["train", "test", "train"][i], "patient": "", "split_rule": "given"})
    (tmp_path / "1.png").write_bytes(_truncated(_png_bytes(Image.fromarray(RGB))))
    write_index(pd.DataFrame(rows), tmp_path / "index.csv")
    with pytest.raises(ValueError, match=r"image .*1\.png cannot be decoded"):
        build_cache(tmp_path / "index.csv", tmp_path / "cache.npy", size=8)
    assert not (tmp_path / "cache.npy").exists()


def test_non_image_files_left_out_of_a_folder_are_logged(tmp_path, caplog):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(RGB).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="medtransfer.data.adapters"):
        frame = build_index("imagefolder", tmp_path, split="random")
    assert len(frame) == 6
    assert "1 file(s) in" in caplog.text and "notes.txt" in caplog.text
