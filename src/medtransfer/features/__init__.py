"""Pooled features of a dataset, computed once per (model, dataset) by ``features.extract`` and
read by every frozen-feature protocol: the file format and the provenance every protocol records.

Torch-free, so that jobs reading features (the probes, few-shot) pay no torchvision import.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medtransfer.data.cache import preprocessing_name
from medtransfer.data.index import class_names
from medtransfer.writers import save_npz

# Rows read at once by ``FeatureSet.rows``: 4,096 x 2,048 float32 = 32 MB.
_READ_ROWS = 4096


@dataclass
class FeatureSet:
    """Pooled features of every image of a dataset index, in index order.

    ``split`` holds ``train``/``test`` per row; ``meta`` carries provenance
    (model, dataset, weights_sha256, weights_demo, split rule, precision,
    preprocessing, seed, class names). From ``load_features``, ``features`` is a read-only
    memory map of the file: 223,414 x 2,048 floats (1.8 GB) are read only where used.
    """

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) str
    meta: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == name
        return self.rows(mask), self.labels[mask]

    def rows(self, selected: np.ndarray) -> np.ndarray:
        """A copy of the features of the ``selected`` rows (a boolean mask or sorted positions).

        From a memory-mapped file the rows are read in chunks with plain reads, so only the
        copy is held: gathering through the map would leave every page it touched mapped
        into the process as well (twice the memory at the peak).
        """
        mask = np.zeros(len(self.features), bool)
        mask[selected] = True
        if not isinstance(self.features, np.memmap):
            return self.features[mask]
        n, width = self.features.shape
        out = np.empty((int(mask.sum()), width), self.features.dtype)
        row_bytes = width * self.features.dtype.itemsize
        at = 0
        with open(self.features.filename, "rb") as handle:
            for lo in range(0, n, _READ_ROWS):
                take = mask[lo:lo + _READ_ROWS]
                if not take.any():
                    continue
                handle.seek(self.features.offset + lo * row_bytes)
                block = np.fromfile(handle, self.features.dtype, len(take) * width).reshape(len(take), width)
                out[at:at + int(take.sum())] = block[take]
                at += int(take.sum())
        return out

    @property
    def num_classes(self) -> int:
        return len(self.meta.get("classes", [])) or int(self.labels.max()) + 1


def save_features(path: str | os.PathLike, fs: FeatureSet) -> None:
    save_npz(
        path, features=fs.features.astype(np.float32, copy=False), labels=fs.labels.astype(np.int64, copy=False),
        split=fs.split.astype(str), meta=np.array(json.dumps(fs.meta, sort_keys=True)),
    )


def load_features(path: str | os.PathLike) -> FeatureSet:
    """A features file; ``features`` memory-mapped where the member is stored uncompressed
    (as ``save_features`` writes it), else read whole."""
    with np.load(path, allow_pickle=False) as data:
        labels, split, meta = data["labels"], data["split"], json.loads(str(data["meta"]))
        features = _stored_member(path, "features")
        if features is None:
            features = data["features"]
    if len(features) != len(labels):
        raise ValueError(f"{path} holds {len(features)} feature rows but {len(labels)} labels; the file is "
                         "damaged: re-run extract_features for it")
    return FeatureSet(features=features, labels=labels, split=split, meta=meta)


def _stored_member(path: str | os.PathLike, name: str) -> np.memmap | None:
    """A read-only memory map of the ``.npy`` member ``name`` of an ``.npz`` file, or None
    where it is compressed (its bytes are then not the array's)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)  # the member's local header: its name and extra field lengths at 26
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
        offset = handle.tell()
    if fortran or dtype.hasobject or len(shape) != 2:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def run_meta(
    *, model: str, dataset: str, weights_meta: Any, index: Any, precision: str, size: int, seed: int,
) -> dict[str, Any]:
    """Provenance shared by every protocol: what went into a (model, dataset) result.

    ``weights_meta`` is a :class:`medtransfer.weights.backbones.WeightsMeta`; ``index`` the dataset
    index frame. The weights hash is the *source* file's sha256 (the published file).
    """
    norm = {"cxr": "cxr_mean_std(0.5020,0.085585)", "histeq": "histeq(all_channels,256_bins,[0,255])"}.get(
        getattr(weights_meta, "normalisation", ""),
        "imagenet_mean_std" if weights_meta.mean is not None else "none([0,1])")
    return {
        "model": model, "dataset": dataset,
        "weights_sha256": weights_meta.source_sha256, "weights_demo": bool(weights_meta.demo),
        "weights_random": bool(getattr(weights_meta, "random", False)),
        "weights_format": weights_meta.source_format, "padding": weights_meta.padding,
        "split": str(index["split_rule"].iloc[0]), "precision": precision,
        "preprocessing": f"{preprocessing_name(size)}+normalise:{norm}",
        "seed": int(seed), "classes": class_names(index),
    }
