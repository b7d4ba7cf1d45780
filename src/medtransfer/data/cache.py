"""The decoded image cache: every image decoded, made RGB and resized once per size.

One uint8 array ``(N, S, S, 3)`` per (dataset, size), in index row order, saved as
``.npy`` so every model and protocol memory-maps it instead of decoding JPEGs again
(decoding is the bottleneck at GPU speed: docs/performance.md).
Preprocessing (the one definition every protocol uses): resize the short side to
``S`` with bicubic interpolation, centre-crop ``S x S``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtransfer.common import atomic_path
from medtransfer.data.index import read_index


def preprocessing_name(size: int) -> str:
    return f"resize_short{size}_bicubic+center_crop{size}"


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image to RGB uint8 (size, size, 3), short side resized then centre crop."""
    try:
        with Image.open(path) as img:
            img = _to_rgb(img)
            w, h = img.size
            scale = size / min(w, h)
            new = (max(size, round(w * scale)), max(size, round(h * scale)))
            img = img.resize(new, Image.Resampling.BICUBIC)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image {path} listed in the dataset index does not exist; "
                                "re-run the index rule or check the dataset root") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"image {path} cannot be decoded ({err}); the file is corrupt or not an "
                         "image: replace it from the original download or remove it") from err


def _to_rgb(img: Image.Image) -> Image.Image:
    """Grey-scale (8 or 16 bit) and palette images become 3-channel RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        img = Image.fromarray(arr.round().astype(np.uint8))
    return img.convert("RGB")


def build_cache(index: str | os.PathLike, out: str | os.PathLike, *, size: int, kind: str | None = None) -> None:
    """Decode every image of ``index`` into ``out`` (.npy, uint8 N x size x size x 3).

    ``kind`` (the dataset adapter) only improves the error for a bad image: it adds
    where the dataset is downloaded and the layout expected.
    """
    frame = read_index(index)
    with atomic_path(out) as tmp:
        cache = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(frame), size, size, 3))
        try:
            for i, path in enumerate(frame["path"]):
                cache[i] = load_image(path, size)
        except (OSError, ValueError) as err:
            if kind is None:
                raise
            raise type(err)(f"{err}\n\n{_describe(kind)}") from err
        cache.flush()
        del cache


def _describe(kind: str | None) -> str:
    from medtransfer.data.adapters import describe

    return describe(kind)


def load_cache(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a cache written by ``build_cache`` (read-only)."""
    arr = np.load(Path(path), mmap_mode="r")
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{path} is not an image cache (uint8 N x S x S x 3), got {arr.dtype} {arr.shape}")
    return arr
