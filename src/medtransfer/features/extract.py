"""Frozen-backbone feature extraction, computed once per (model, dataset) and cached."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch

from medtransfer.data.batches import DeviceBatches
from medtransfer.data.cache import load_indexed_cache, read_rows
from medtransfer.features import FeatureSet, run_meta, save_features
from medtransfer.progress import Progress
from medtransfer.runtime import PRECISIONS, autocast, resolve_device, seed_everything
from medtransfer.weights.backbones import load_weights, normalise

log = logging.getLogger(__name__)


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
