"""The decoded image cache: every image decoded, made RGB and resized once per size.

One uint8 array ``(N, S, S, 3)`` per (dataset, size), in index row order, saved as
``.npy`` so every model and protocol memory-maps it instead of decoding JPEGs again
(decoding is the bottleneck at GPU speed: docs/performance.md).
Preprocessing (the one definition every protocol uses): resize the short side to
``S`` with bicubic interpolation, centre-crop ``S x S``.

Finetuning crops RandomResizedCrop boxes from the whole image, borders included, so it
reads a second cache (``build_full_cache``): each training image with its short side
resized to ``round(scale * S)`` (default 256 for S = 224), aspect ratio kept, the long
side centre-cropped to at most ``max_aspect`` times the short one; one uint8 array
padded to a common (H, W), plus a sidecar ``<name>.hw.npy`` with each image's (h, w).
Images are stored lying (h <= w; portrait ones transposed), so (H, W) is at most
(short side, longest long side) whatever the mix of orientations (CheXpert, the NLM TB
sets have both); ``augment.full_batch`` stands them up again.
"""

from __future__ import annotations

import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from medtransfer import paths
from medtransfer.data.adapters import COLOUR_FLAG_KINDS, describe
from medtransfer.data.index import read_index
from medtransfer.data.sources import CIFAR_MEMBER, cifar_image, ct_middle_slice
from medtransfer.writers import npy_memmap, save_npy

ORIENTATION = 0x0112  # the EXIF tag
TURNED = (5, 6, 7, 8)  # orientations that swap width and height


def preprocessing_name(size: int) -> str:
    return f"resize_short{size}_bicubic+center_crop{size}"


def decode(path: str | os.PathLike) -> Image.Image:
    """The one decoder of dataset images: RGB, stood up by its EXIF orientation, fully read.

    Handles 8/16-bit grey, palette, CMYK, alpha and EXIF-rotated files, CT volumes (``.mha``:
    the middle axial slice, HU window [-1000, 250]) and CIFAR-10 batch rows
    (``.../data_batch_N#i``; ``medtransfer.data.sources``). A missing, empty,
    truncated or undecodable file, or one larger than PIL's decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS`` x 2), raises an error naming it: nothing is skipped.
    """
    text = str(path)
    if text.lower().endswith(".mha") or CIFAR_MEMBER.match(text):  # a CT volume, a CIFAR-10 batch row
        with _decoding(path):
            member = CIFAR_MEMBER.match(text)
            if member:
                return Image.fromarray(cifar_image(member["batch"], int(member["row"])), "RGB")
            return Image.fromarray(ct_middle_slice(path), "L").convert("RGB")
    with _decoding(path), Image.open(path) as img:
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright image
        return _to_rgb(img)


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image to RGB uint8 (size, size, 3), short side resized then centre crop."""
    img = decode(path)
    with _decoding(path):
        new = _resized(img.size, size)
        img = img.resize(new, Image.Resampling.BICUBIC)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _resized(wh: tuple[int, int], short: int) -> tuple[int, int]:
    """(w, h) with the short side ``short`` and the aspect ratio kept (to the nearest pixel)."""
    w, h = wh
    scale = short / min(w, h)
    return max(short, round(w * scale)), max(short, round(h * scale))


@contextmanager
def _decoding(path: str | os.PathLike) -> Iterator[None]:
    """Turn a missing or undecodable image into an error that names it and says what to do."""
    try:
        yield
    except FileNotFoundError as err:
        raise FileNotFoundError(f"image {path} listed in the dataset index does not exist; "
                                "re-run the index rule or check the dataset root") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"image {path} is refused as a possible decompression bomb ({err}); if it is a real "
                         "image that large, downscale it first (or raise PIL.Image.MAX_IMAGE_PIXELS)") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"image {path} cannot be decoded ({err}); the file is corrupt or not an "
                         "image: replace it from the original download or remove it") from err


def _to_rgb(img: Image.Image) -> Image.Image:
    """Grey-scale (8 or 16 bit, each image stretched to its own range), palette, CMYK and
    alpha images become 3-channel RGB (alpha dropped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        img = Image.fromarray(arr.round().astype(np.uint8))
    return img.convert("RGB")


def decoded(load: Callable[[Any], np.ndarray], items: Sequence[Any], workers: int = 1) -> Iterator[np.ndarray]:
    """``load(item)`` for each item, in order, decoded by ``workers`` threads (Pillow lets go
    of the GIL while it decodes and resizes, so threads decode in parallel); at most
    ``4 * workers`` images wait in memory."""
    if workers <= 1:
        yield from map(load, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(load, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# An image is colour when the mean over its pixels of (largest - smallest channel) exceeds this
# many grey levels: lossy compression leaves a grey image's channels a level or two apart.
COLOUR_CHROMA = 4.0


def chroma(image: np.ndarray) -> float:
    """Mean of (largest - smallest channel) over every 4th row and column of a uint8 (h, w, 3) image."""
    pixels = image[::4, ::4].astype(np.int16)
    return float((pixels.max(-1) - pixels.min(-1)).mean())


class ColourCheck:
    """Whether the decoded images are colour, against what the config says (``expected``; None: no check).

    ``add`` each image as it is decoded; ``check`` raises when the images disagree with the
    config: a dataset said to be colour whose every image is grey, or one said to be grey
    with a colour image (the dataset is colour when any image is).
    """

    def __init__(self, expected: bool | None, dataset: str = "", kind: str | None = None) -> None:
        self.expected, self.dataset, self.kind = expected, dataset, kind
        self.seen, self.colour, self.example, self.most = 0, 0, "", 0.0

    def add(self, path: str, image: np.ndarray) -> None:
        if self.expected is None:
            return
        value = chroma(image)
        self.seen += 1
        self.most = max(self.most, value)
        if value > COLOUR_CHROMA:
            self.colour += 1
            self.example = self.example or f"{path} (mean chroma {value:.1f})"

    def check(self) -> None:
        if self.expected is None or self.seen == 0 or (self.colour > 0) == self.expected:
            return
        name = f"dataset {self.dataset!r} (kind {self.kind})"
        if self.expected:
            found = (f"it is set or recorded as colour, but all {self.seen} images decoded are grey (mean chroma "
                     f"at most {self.most:.1f} grey levels; colour is above {COLOUR_CHROMA:g})")
        else:
            found = (f"it is set or recorded as grey, but {self.colour} of {self.seen} images decoded are colour, "
                     f"e.g. {self.example}")
        if self.kind in COLOUR_FLAG_KINDS:
            todo = f"set datasets.{self.dataset}.colour: {str(not self.expected).lower()} in the config"
        else:
            todo = f"kind {self.kind} is {'colour' if self.expected else 'grey'}: check that the root holds its images"
        raise ValueError(f"{name}: {found}; {todo}")


def build_cache(index: str | os.PathLike, out: str | os.PathLike, *, size: int, kind: str | None = None,
                workers: int = 1, colour: bool | None = None, dataset: str = "") -> None:
    """Decode every image of ``index`` into ``out`` (.npy, uint8 N x size x size x 3), with
    ``workers`` decoding threads (the same bytes for any number).

    ``kind`` (the dataset adapter) only improves the error for a bad image: it adds
    where the dataset is downloaded and the layout expected. ``colour``: whether the config
    says the dataset ``dataset`` is colour, checked against the images (``ColourCheck``;
    None: not checked); on a mismatch nothing is written.
    """
    frame = read_index(index)
    colours = ColourCheck(colour, dataset, kind)
    with _with_source(kind), npy_memmap(out, np.uint8, (len(frame), size, size, 3)) as cache:
        for i, image in enumerate(decoded(lambda path: load_image(path, size), list(frame["path"]), workers)):
            cache[i] = image
            colours.add(frame["path"].iat[i], image)
        colours.check()


@contextmanager
def _with_source(kind: str | None) -> Iterator[None]:
    """Add where ``kind`` is downloaded and its layout to an image error (nothing without a kind)."""
    try:
        yield
    except (OSError, ValueError) as err:
        if kind is None:
            raise
        raise type(err)(f"{err}\n\n{_describe(kind)}") from err


def _describe(kind: str | None) -> str:
    return describe(kind)


def read_rows(array: np.ndarray, rows: slice | Sequence[int] | np.ndarray) -> np.ndarray:
    """``array[rows]`` (a slice, or integer positions) as an array of its own.

    From a memory-mapped file (the caches, the features) the rows are read with plain file
    reads, a run of consecutive rows at a time: gathering through the map leaves every page
    it touched mapped into the job, so the job's resident memory, what a cluster's
    accounting and ``benchmark:`` files report, grows to the size of the file read (34 GB
    for CheXpert's 224 px cache), although the kernel may drop those pages at any time.
    """
    if not (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap)):
        return np.array(array[rows])  # in memory (or a view of a map): plain indexing
    positions = np.arange(len(array))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
    out = np.empty((len(positions), *array.shape[1:]), array.dtype)
    per_row = int(np.prod(array.shape[1:], dtype=np.int64))
    starts = np.flatnonzero(np.r_[True, np.diff(positions) != 1]) if len(positions) else []
    with open(array.filename, "rb") as handle:
        for first, last in zip(starts, [*starts[1:], len(positions)]):
            handle.seek(array.offset + int(positions[first]) * per_row * array.itemsize)
            count = (last - first) * per_row
            out[first:last] = np.fromfile(handle, array.dtype, count).reshape(last - first, *array.shape[1:])
    return out


def load_cache(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a cache written by ``build_cache`` (read-only)."""
    arr = np.load(Path(path), mmap_mode="r")
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{path} is not an image cache (uint8 N x S x S x 3), got {arr.dtype} {arr.shape}")
    return arr


def load_indexed_cache(cache: str | os.PathLike, index: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """The index and its image cache (memory-mapped), checked to hold one image per index row."""
    frame, images = read_index(index), load_cache(cache)
    if len(frame) != len(images):
        raise ValueError(
            f"the image cache {cache} holds {len(images)} images but the index {index} lists {len(frame)}; "
            "rebuild the cache: it was built from another index. Re-run the cache_images rule for this "
            "dataset (snakemake --forcerun cache_images) to rebuild it from this index"
        )
    return frame, images


# ---------------------------------------------------------------- the finetune cache of whole images

FULL_SCALE = 256 / 224  # short side 256 for 224 crops, the usual resize-256-crop-224 margin
FULL_MAX_ASPECT = 2.0  # longer sides are centre-cropped to twice the short one


def full_sides(size: int, scale: float = FULL_SCALE, max_aspect: float = FULL_MAX_ASPECT) -> tuple[int, int]:
    """(short side, longest long side) of the full cache for crops of ``size``."""
    if not (scale >= 1.0 and max_aspect >= 1.0 and size >= 1):
        raise ValueError(f"full cache needs size >= 1, scale >= 1 and max_aspect >= 1, got size={size}, "
                         f"scale={scale}, max_aspect={max_aspect}; e.g. scale {FULL_SCALE:.4f} (256/224) "
                         f"and max_aspect {FULL_MAX_ASPECT}")
    short = round(scale * size)
    return short, round(max_aspect * short)


def full_preprocessing_name(size: int, scale: float = FULL_SCALE, max_aspect: float = FULL_MAX_ASPECT) -> str:
    short, longest = full_sides(size, scale, max_aspect)
    return f"resize_short{short}_bicubic+center_crop_long_max{longest}"


def load_full_image(path: str | os.PathLike, short: int, longest: int) -> np.ndarray:
    """Decode one image to RGB uint8 (h, w, 3): short side ``short``, long side at most ``longest``."""
    img = decode(path)
    with _decoding(path):
        new = _resized(img.size, short)
        img = img.resize(new, Image.Resampling.BICUBIC)  # PIL antialiases when it shrinks
        w, h = min(new[0], longest), min(new[1], longest)
        left, top = (new[0] - w) // 2, (new[1] - h) // 2
        return np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.uint8)


def _full_hw(path: str, short: int, longest: int) -> tuple[int, int]:
    """(h, w) that ``load_full_image`` will return, from the image header only."""
    with _decoding(path), Image.open(path) as img:
        size = img.size[::-1] if img.getexif().get(ORIENTATION) in TURNED else img.size
    w, h = _resized(size, short)
    return min(h, longest), min(w, longest)


def build_full_cache(index: str | os.PathLike, out: str | os.PathLike, *, size: int, scale: float = FULL_SCALE,
                     max_aspect: float = FULL_MAX_ASPECT, split: str | None = "train",
                     kind: str | None = None, workers: int = 1, colour: bool | None = None,
                     dataset: str = "") -> None:
    """Decode the images of ``index`` whole into ``out`` (.npy) and their sizes into ``paths.full_hw(out)``.

    ``out``: uint8 (N, H, W, 3) in index order, image ``i`` in ``[i, :h_i, :w_i]``, zeros
    beyond, transposed when ``h_i > w_i`` (so it lies in ``[i, :w_i, :h_i]``); the
    sidecar: int32 (N, 2) ``(h_i, w_i)`` as the image stands. Only rows of ``split`` are decoded
    (``None``: all); the others keep ``(0, 0)`` and zeros (sparse on disk), since
    finetuning crops only training images. Two passes: image headers fix (H, W), then
    the images are decoded into a memory map, by ``workers`` threads. ``kind`` only improves
    the error for a bad image, and ``colour`` is checked against the decoded images, as in
    ``build_cache``.
    """
    short, longest = full_sides(size, scale, max_aspect)
    frame = read_index(index)
    rows = np.arange(len(frame)) if split is None else np.flatnonzero(frame["split"].to_numpy() == split)
    hw = np.zeros((len(frame), 2), dtype=np.int32)
    with _with_source(kind):
        for i in rows:
            hw[i] = _full_hw(frame["path"].iat[i], short, longest)
        lying = np.sort(hw, axis=1)  # (short, long) as stored
        shape = (len(frame), *(int(v) for v in np.maximum(lying.max(0), 1)), 3)
        colours = ColourCheck(colour, dataset, kind)
        with npy_memmap(out, np.uint8, shape) as cache:
            images = decoded(lambda i: load_full_image(frame["path"].iat[i], short, longest), rows, workers)
            for i, img in zip(rows, images):
                cache[i, :lying[i, 0], :lying[i, 1]] = img.transpose(1, 0, 2) if hw[i, 0] > hw[i, 1] else img
                colours.add(frame["path"].iat[i], img)
            colours.check()
            save_npy(paths.full_hw(out), hw)


def load_full_cache(path: str | os.PathLike, *, frame: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map a cache written by ``build_full_cache``: (uint8 N x H x W x 3, int32 N x 2 sizes).

    Read batches through ``augment.full_batch``, which stands the transposed images up.
    With ``frame`` (the dataset index), check it has one row per image and every training
    image.
    """
    images = np.load(Path(path), mmap_mode="r")
    sidecar = paths.full_hw(path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar} (the image sizes of {path}) does not exist; rebuild the full cache")
    hw = np.load(sidecar)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path} is not a full image cache (uint8 N x H x W x 3), got {images.dtype} "
                         f"{images.shape}; rebuild the full cache")
    if hw.shape != (len(images), 2) or (hw < 0).any() or (np.sort(hw, axis=1) > images.shape[1:3]).any():
        raise ValueError(f"{sidecar} holds sizes {hw.shape} that do not fit {path} {images.shape}; the two "
                         f"files come from different builds: rebuild the full cache")
    if frame is not None:
        _check_full_rows(path, hw, frame)
    return images, hw


def _check_full_rows(path: str | os.PathLike, hw: np.ndarray, frame: pd.DataFrame) -> None:
    if len(hw) != len(frame):
        raise ValueError(f"{path} holds {len(hw)} images but the index lists {len(frame)}; rebuild the full cache")
    lacking = np.flatnonzero((frame["split"].to_numpy() == "train") & (hw.min(1) == 0))
    if len(lacking):
        raise ValueError(f"{path} lacks {len(lacking)} training images (rows {lacking[:5].tolist()}...); "
                         f"rebuild the full cache from this index")
