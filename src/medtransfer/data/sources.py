"""Images that are not image files: a CT volume's middle slice (STOIC) and one image of a
CIFAR-10 python batch. ``cache.decode`` reads them through here; the adapters name them.

- ``*.mha`` (MetaImage, read with SimpleITK): the middle axial slice (index ``depth // 2``
  of the volume's z axis) in the published code's orientation, Hounsfield units clipped to
  the window [-1000, 250] and mapped linearly to 0..255 (rounded), grey. The published code
  read the volumes with medpy, whose arrays are (x, y, z): its slice is the (x, y) array, a
  row per x. SimpleITK's arrays are (z, y, x), so the slice is transposed to match.
- ``<folder>/data_batch_N#i`` or ``<folder>/test_batch#i``: row ``i`` of that CIFAR-10 python
  batch (a pickle of ``{b"data": uint8 (10000, 3072), b"labels": [...], ...}``; each row is
  the red, green and blue 32x32 planes). The pickle is read with an unpickler that allows
  only numpy's array reconstruction, so a hostile file cannot run code; the last batch read
  is kept in memory (the index lists each batch's images together).
"""

from __future__ import annotations

import io
import os
import pickle
import re
from functools import lru_cache
from typing import Any

import numpy as np

HU_WINDOW = (-1000.0, 250.0)
CIFAR_MEMBER = re.compile(r"^(?P<batch>.*(?:data_batch_[1-5]|test_batch))#(?P<row>\d+)$")
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

# What the official batches (written by Python 2's cPickle from numpy arrays) name; numpy 2
# moved numpy.core to numpy._core, files written under either name are accepted.
# Protocol-2 pickles written by Python 3 spell raw bytes as _codecs.encode(str, "latin1"): a
# pure data conversion, allowed too.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        if module == "_codecs":
            import codecs  # only a pickle that names it needs it

            return codecs.encode
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # numpy 2's home of a pickle's global
            except ImportError:  # numpy 1.x
                from numpy.core.multiarray import _reconstruct  # numpy 1's home of it
            return _reconstruct
        return getattr(np, name)


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """``{"data": uint8 (n, 3072), "labels": int64 (n,)}`` of one CIFAR-10 python batch.

    Anything else (a truncated file, a pickle naming other globals, missing entries) raises
    an error naming the file.
    """
    try:
        with open(path, "rb") as handle:
            raw = _ArraysOnly(io.BytesIO(handle.read()), encoding="bytes").load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(err).__name__}: {err}); "
                         "re-download cifar-10-python.tar.gz and extract it") from err
    entries = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()} \
        if isinstance(raw, dict) else {}
    data, labels = entries.get("data"), entries.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels is None or len(labels) != len(data):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (expected 'data' uint8 (n, 3072) and n "
                         f"'labels'; found entries {sorted(entries)[:8]})")
    return {"data": data, "labels": np.asarray(labels, dtype=np.int64)}


@lru_cache(maxsize=1)
def _batch(path: str) -> np.ndarray:
    return read_cifar_batch(path)["data"]


def cifar_image(batch: str | os.PathLike, row: int) -> np.ndarray:
    """Image ``row`` of a CIFAR-10 batch as uint8 (32, 32, 3)."""
    data = _batch(str(batch))
    if not 0 <= row < len(data):
        raise ValueError(f"{batch}: has {len(data)} images, no image {row}; re-run the index rule")
    return data[row].reshape(3, 32, 32).transpose(1, 2, 0)


def ct_middle_slice(path: str | os.PathLike) -> np.ndarray:
    """The middle axial slice of a CT volume, HU window [-1000, 250] -> uint8 (x, y): the
    volume's x axis down the rows, y across, as medpy (the published code's reader) gives it."""
    import SimpleITK as sitk  # only STOIC's volumes need it (a large library)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"CT volume {path} not found")
    try:
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # (z, y, x)
    except RuntimeError as err:
        raise ValueError(f"CT volume {path} cannot be read ({str(err).strip().splitlines()[-1][:200]}); "
                         "replace it from the original download") from err
    if volume.ndim != 3:
        raise ValueError(f"CT volume {path} has {volume.ndim} dimensions, expected a 3-D volume (z, y, x)")
    return window_hu(volume[volume.shape[0] // 2].T)  # (y, x) -> medpy's (x, y)


def window_hu(hu: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """Hounsfield units clipped to ``window`` and mapped linearly to 0..255 (rounded) as uint8."""
    lo, hi = window
    scaled = (np.clip(hu.astype(np.float64), lo, hi) - lo) / (hi - lo) * 255.0
    return np.round(scaled).astype(np.uint8)
