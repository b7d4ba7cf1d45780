"""Feature extraction end to end, from image files: the published pipeline against ours,
both measured in this process on the same real JPEG/PNG files (these machines are shared
and noisy, so only the ratio means much).

    python bench/features.py [--images N] [--size 224] [--models 6] [--device auto]
                             [--workers W] [--threads T] [--compile]

Published: for EVERY model, each file is decoded with PIL, resized (short side, bicubic)
and centre-cropped, ToTensor + ImageNet Normalize, through a torch DataLoader (W workers,
pinned memory on a GPU), fp32, NCHW, batch 64. Ours: the uint8 cache is built ONCE
(``data.cache.build_cache``, W decoding threads), then ``features.extract`` per model with bf16 autocast +
channels_last at its default batch size. Both get cuDNN autotuning and one warm-up run on
the first few files; each model's weights are loaded from its file inside the timing.

Prints, for 1 model and for --models models (copies of one random ResNet-50), images/s
(model-images per second), total seconds and the ratio ours / published (1 model: the
first model of the run, with the whole cache build charged to ours; the cache build is
also printed alone); then the GPU anchor, extraction from the cache alone: fp32, batch 64,
NCHW against ours. ``extract`` also writes each feature file; the published run keeps them
in memory.

Targets on an H200 (docs/performance.md): from the cache >= 15,000 img/s (>= 20,000 with
torch.compile); the whole 6-model extraction from files >= 5x the published pipeline.
Defaults: 4096 images on a GPU, 32 on a CPU (about 40 s with --threads 1 on a busy 2-core CPU).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from _files import clock, default_workers, head_index, published_loader, random_weights, write_images
from medtransfer.data.cache import build_cache
from medtransfer.features.extract import extract
from medtransfer.runtime import resolve_device
from medtransfer.weights.backbones import load_weights

PUBLISHED_BATCH = 64


def published(weights: list[Path], index: Path, size: int, device: str, workers: int) -> list[float]:
    """Seconds per model of the published pipeline: every model decodes every file again."""
    from torchvision import transforms as T

    crop = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
    seconds = []
    for path in weights:
        start = clock(device)
        net = load_weights(path)[0].eval().to(device)
        loader = published_loader(index, crop, batch_size=PUBLISHED_BATCH, workers=workers, device=device)
        with torch.no_grad():
            feats = [net(x.to(device, non_blocking=True)).cpu().numpy() for x, _ in loader]
        np.concatenate(feats)
        seconds.append(clock(device) - start)
    return seconds


def ours(weights: list[Path], index: Path, cache: Path, size: int, device: str, workers: int,
         compile_model: bool = False) -> tuple[float, list[float]]:
    """(seconds to build the cache once with ``workers`` decoding threads, seconds per model of
    ``extract`` from it)."""
    start = clock(device)
    build_cache(index, cache, size=size, workers=workers)
    cache_s = clock(device) - start
    return cache_s, [_extract(path, cache, index, device, precision="bf16", compile_model=compile_model)
                     for path in weights]


def _extract(weights: Path, cache: Path, index: Path, device: str, **kw) -> float:
    start = clock(device)
    extract(weights=weights, cache=cache, index=index, out=cache.with_name("features.npz"), model="m",
            dataset="d", device=device, **kw)
    return clock(device) - start


def warm_up(weights: Path, index: Path, folder: Path, rows: int, size: int, device: str, workers: int) -> None:
    """Both pipelines once on the first ``rows`` files (CUDA context, cuDNN autotuning, allocator)."""
    sub = head_index(index, rows, folder / "warm.csv")
    published([weights], sub, size, device, workers)
    ours([weights], sub, folder / "warm.npy", size, device, workers)
    _extract(weights, folder / "warm.npy", sub, device, precision="fp32", batch_size=PUBLISHED_BATCH)


def row(name: str, images: int, seconds: float) -> None:
    print(f"  {name:<50s} {images / seconds:9.1f} img/s {seconds:8.2f} s")


def report(n: int, models: int, pub: list[float], cache_s: float, our: list[float]) -> None:
    print(f"-- {models} model(s) x {n} files")
    p, o = sum(pub[:models]), cache_s + sum(our[:models])
    row("published (files per model, fp32, NCHW, batch 64)", models * n, p)
    row("ours (cache once + extract bf16 + channels_last)", models * n, o)
    print(f"  ratio ours / published: {p / o:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="decoding workers of both: the published DataLoader's, our cache build's threads")
    parser.add_argument("--compile", action="store_true", help="ours with torch.compile (its compile time included)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    n = args.images or (4096 if gpu else 32)
    torch.backends.cudnn.benchmark = True  # extract() turns it on; the published run gets it too
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        index = write_images(folder / "files", n)
        weights = random_weights(folder, args.models)
        warm_up(weights[0], index, folder, min(n, 256 if gpu else 10), args.size, device, args.workers)
        pub = published(weights, index, args.size, device, args.workers)
        cache = folder / "cache.npy"
        cache_s, our = ours(weights, index, cache, args.size, device, args.workers, args.compile)
        ref = _extract(weights[0], cache, index, device, precision="fp32", batch_size=PUBLISHED_BATCH)
        anchor = _extract(weights[0], cache, index, device, precision="bf16")
    print(f"device={device} images={n} size={args.size} workers={args.workers} threads={torch.get_num_threads()}")
    row("building the cache once (in ours below)", n, cache_s)
    for models in sorted({1, args.models}):
        report(n, models, pub, cache_s, our)
    print("-- from the cache alone, 1 model (the GPU anchor)")
    row("published setting (fp32, NCHW, batch 64)", n, ref)
    row("ours (bf16 + channels_last, default batch)", n, anchor)
    print(f"  ratio ours / published: {ref / anchor:.2f}x")


if __name__ == "__main__":
    main()
