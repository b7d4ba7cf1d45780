"""Frozen-backbone feature extraction, computed once per (model, dataset) and cached."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medtransfer.progress import Progress
from medtransfer.writers import save_npz


@dataclass
class FeatureSet:
    """Pooled features of every image of a dataset index, in index order.

    ``split`` holds ``train``/``test`` per row; ``meta`` carries provenance
    (model, dataset, weights_sha256, weights_demo, split rule, precision,
    preprocessing, seed, class names).
    """

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) str
    meta: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == name
        return self.features[mask], self.labels[mask]

    @property
    def num_classes(self) -> int:
        return len(self.meta.get("classes", [])) or int(self.labels.max()) + 1


def save_features(path: str | os.PathLike, fs: FeatureSet) -> None:
    save_npz(
        path, features=fs.features.astype(np.float32), labels=fs.labels.astype(np.int64),
        split=fs.split.astype(str), meta=np.array(json.dumps(fs.meta, sort_keys=True)),
    )


def load_features(path: str | os.PathLike) -> FeatureSet:
    with np.load(path, allow_pickle=False) as data:
        return FeatureSet(
            features=data["features"], labels=data["labels"], split=data["split"],
            meta=json.loads(str(data["meta"])),
        )


def run_meta(
    *, model: str, dataset: str, weights_meta: Any, index: Any, precision: str, size: int, seed: int,
) -> dict[str, Any]:
    """Provenance shared by every protocol: what went into a (model, dataset) result.

    ``weights_meta`` is a :class:`medtransfer.models.WeightsMeta`; ``index`` the dataset
    index frame. The weights hash is the *source* file's sha256 (the published file).
    """
    from medtransfer.data.cache import preprocessing_name
    from medtransfer.data.index import class_names

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


def batches_to_model_input(batch_uint8: "np.ndarray", weights_meta: Any, device: str, channels_last: bool):
    """uint8 NHWC images -> normalised float NCHW tensor on ``device``."""
    import torch

    from medtransfer.models import normalise

    x = torch.from_numpy(np.array(batch_uint8)).to(device, non_blocking=True)  # copy: the cache is read-only
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    x = normalise(x, weights_meta)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def extract(
    *, weights: str | os.PathLike, cache: str | os.PathLike, index: str | os.PathLike,
    out: str | os.PathLike, model: str, dataset: str, precision: str = "fp32",
    batch_size: int | None = None, device: str = "auto", seed: int = 0, deterministic: bool = False,
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
    :func:`medtransfer.common.seed_everything`); otherwise cuDNN autotuning is on and the
    last bits may differ between runs. ``deterministic`` is recorded in ``meta``. Either
    way, ``fp32`` on a recent NVIDIA GPU runs convolutions in TF32 (torch's default,
    ``torch.backends.cudnn.allow_tf32``), so GPU and CPU features agree to TF32 precision
    (10-bit mantissa), not to fp32 rounding.
    """
    import torch

    from medtransfer.common import resolve_device, seed_everything
    from medtransfer.data.cache import load_cache
    from medtransfer.data.index import read_index
    from medtransfer.models import load_weights

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; expected 'fp32' or 'bf16'")
    device = resolve_device(device)
    seed_everything(seed, deterministic=deterministic)
    if device.startswith("cuda") and not deterministic:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    frame, images = read_index(index), load_cache(cache)
    if len(frame) != len(images):
        raise ValueError(
            f"the image cache {cache} holds {len(images)} images but the index {index} lists "
            f"{len(frame)}; the cache was built from another index. Re-run the cache_images rule "
            "for this dataset (snakemake --forcerun cache_images) to rebuild it from this index"
        )
    net, wmeta = load_weights(weights)
    feats = _forward_all(net, images, wmeta, device, precision,
                         batch_size or (256 if device.startswith("cuda") else 32))
    meta = run_meta(model=model, dataset=dataset, weights_meta=wmeta, index=frame,
                    precision=precision, size=images.shape[1], seed=seed)
    meta["deterministic"] = bool(deterministic)
    fs = FeatureSet(features=feats, labels=frame["label"].to_numpy(np.int64),
                    split=frame["split"].to_numpy(str), meta=meta)
    save_features(out, fs)
    return fs


def _forward_all(net: Any, images: np.ndarray, wmeta: Any, device: str, precision: str,
                 batch_size: int) -> np.ndarray:
    """(N, D) float32 features of uint8 NHWC ``images`` through ``net`` in eval mode."""
    import torch

    channels_last = precision == "bf16"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.eval().to(device, memory_format=fmt)  # eval: BatchNorm uses its running statistics
    chunks = []
    autocast = torch.autocast(device.split(":")[0], torch.bfloat16, enabled=channels_last)
    progress = Progress("extract_features", len(images), unit="images")
    with torch.inference_mode(), autocast:
        for start in range(0, len(images), batch_size):
            x = batches_to_model_input(images[start:start + batch_size], wmeta, device, channels_last)
            chunks.append(net(x).float().cpu().numpy())
            progress.update(len(x))
    return np.concatenate(chunks)
