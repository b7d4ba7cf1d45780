"""Frozen-backbone feature extraction, computed once per (model, dataset) and cached."""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medtransfer.data.batches import DeviceBatches
from medtransfer.data.cache import load_indexed_cache, preprocessing_name, read_rows
from medtransfer.data.index import class_names
from medtransfer.progress import Progress
from medtransfer.runtime import PRECISIONS, autocast, resolve_device, seed_everything
from medtransfer.weights.backbones import load_weights, normalise
from medtransfer.writers import save_npz

log = logging.getLogger(__name__)


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
    norm = {"cxr": "cxr_mean_std(0.5020,0.085585)", "histeq": "histeq(grey,256_bins,[0,255])"}.get(
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


def to_model_input(batch_uint8: Any, weights_meta: Any, channels_last: bool):
    """uint8 NHWC tensor (already on its device) -> normalised float NCHW on the same device."""
    x = normalise(batch_uint8.permute(0, 3, 1, 2).float().div_(255.0), weights_meta)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def batches_to_model_input(batch_uint8: "np.ndarray", weights_meta: Any, device: str, channels_last: bool):
    """uint8 NHWC images (numpy) -> normalised float NCHW tensor on ``device``."""
    x = torch.from_numpy(np.array(batch_uint8)).to(device, non_blocking=True)  # copy: the cache is read-only
    return to_model_input(x, weights_meta, channels_last)


def extract(
    *, weights: str | os.PathLike, cache: str | os.PathLike, index: str | os.PathLike,
    out: str | os.PathLike, model: str, dataset: str, precision: str = "fp32",
    batch_size: int | None = None, device: str = "auto", seed: int = 0, deterministic: bool = False,
    compile_model: bool = False,
) -> FeatureSet:
    """Pooled features of every cached image, backbone in eval mode, written to ``out``.

    ``precision``: ``fp32`` or ``bf16`` (autocast); bf16 also switches to channels_last,
    which is what makes it fast (docs/performance.md). Precision changes results, so it is
    recorded in the provenance. ``batch_size`` defaults to 256 on a GPU (where large
    batches pay) and 32 on a CPU; eval-mode BatchNorm makes every image's features
    independent of its batch, so it changes them only within float rounding.

    Reproducibility: on a CPU the features are bit-identical for the same config, seed,
    thread count and machine. On a GPU they are only with ``deterministic=True``
    (deterministic kernels, no cuDNN autotuning; slower, see
    :func:`medtransfer.runtime.seed_everything`); otherwise cuDNN autotuning is on and the
    last bits may differ between runs. ``deterministic`` is recorded in ``meta``. Either
    way, ``fp32`` on a recent NVIDIA GPU runs convolutions in TF32 (torch's default,
    ``torch.backends.cudnn.allow_tf32``), so GPU and CPU features agree to TF32 precision
    (10-bit mantissa), not to fp32 rounding.

    ``compile_model``: ``torch.compile`` the backbone first (worth it on a GPU for large
    datasets: about 1.5x the images/s for a compile of about 16 s on an H200,
    docs/performance.md). Its seconds are logged and kept in ``meta["compile_s"]``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected 'fp32' or 'bf16'")
    device = resolve_device(device)
    seed_everything(seed, deterministic=deterministic)
    if device.startswith("cuda") and not deterministic:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    frame, images = load_indexed_cache(cache, index)
    net, wmeta = load_weights(weights)
    feats, compile_s = _forward_all(net, images, wmeta, device, precision,
                                    batch_size or (256 if device.startswith("cuda") else 32), compile_model)
    meta = run_meta(model=model, dataset=dataset, weights_meta=wmeta, index=frame,
                    precision=precision, size=images.shape[1], seed=seed)
    meta["deterministic"] = bool(deterministic)
    if compile_model:
        meta["compile_s"] = round(compile_s, 2)
    fs = FeatureSet(features=feats, labels=frame["label"].to_numpy(np.int64),
                    split=frame["split"].to_numpy(str), meta=meta)
    save_features(out, fs)
    return fs


def _forward_all(net: Any, images: np.ndarray, wmeta: Any, device: str, precision: str,
                 batch_size: int, compile_model: bool = False) -> tuple[np.ndarray, float]:
    """(N, D) float32 features of uint8 NHWC ``images`` through ``net`` in eval mode, and the
    seconds ``torch.compile`` took (0 without it).

    The GPU data path (docs/performance.md): batches come through pinned buffers and a side
    stream (:class:`medtransfer.data.batches.DeviceBatches`), are normalised on the device,
    and the features stay on the device until one copy back at the end.
    """
    channels_last = precision == "bf16"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.eval().to(device, memory_format=fmt)  # eval: BatchNorm uses its running statistics
    compile_s = 0.0
    if compile_model:
        net, compile_s = _compiled(net, images, wmeta, device, precision, batch_size)
    width = feature_width(net, images, wmeta, device)
    out = torch.empty((len(images), width), dtype=torch.float32, device=device)
    progress = Progress("extract_features", len(images), unit="images")
    starts = range(0, len(images), batch_size)
    batches = DeviceBatches(lambda start: read_rows(images, slice(start, start + batch_size)), starts, device,
                            max_bytes=batch_size * int(np.prod(images.shape[1:])))
    with torch.inference_mode(), autocast(device, precision):
        for start, batch in batches:
            out[start:start + len(batch)] = net(to_model_input(batch, wmeta, channels_last)).float()
            progress.update(len(batch))
    return out.cpu().numpy(), compile_s


def feature_width(net: Any, images: np.ndarray, wmeta: Any, device: str) -> int:
    """The pooled feature width of ``net`` (from its last BatchNorm, else one forward pass)."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if norms:
        return norms[-1].num_features
    with torch.inference_mode():
        return int(net(batches_to_model_input(images[:1], wmeta, device, False)).shape[1])


def _compiled(net: Any, images: np.ndarray, wmeta: Any, device: str, precision: str,
              batch_size: int) -> tuple[Any, float]:
    """``torch.compile(net)``, warmed up on one full batch (and the last, shorter one) so the
    compile time is measured here, not inside the first batches."""
    start = time.perf_counter()
    compiled = torch.compile(net, dynamic=False)
    channels_last = precision == "bf16"
    sizes = {min(batch_size, len(images)), len(images) % batch_size or batch_size}
    with torch.inference_mode(), autocast(device, precision):
        for size in sorted(sizes):
            compiled(batches_to_model_input(images[:size], wmeta, device, channels_last))
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    log.info("torch.compile of the backbone took %.1f s (batch sizes %s)", seconds, sorted(sizes))
    return compiled, seconds
