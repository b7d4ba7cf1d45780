"""Finetuning step rate: the published input pipeline and fp32 against ours (fp32 and bf16),
all measured in this process on the same real JPEG/PNG files and the same model
(ResNet-50 + linear head, SGD Nesterov + per-step cosine, lr 1e-2).

    python bench/finetune.py [--images N] [--size 224] [--batch 64] [--steps K]
                             [--device auto] [--workers W] [--threads T] [--centre]

Published: each step's batch is decoded from the files with PIL, RandomResizedCrop(size,
scale 0.08-1, bicubic) + RandomHorizontalFlip + ToTensor + ImageNet Normalize, through a
shuffling torch DataLoader (W workers, pinned memory on a GPU), fp32, NCHW. Ours:
``medtransfer.protocols.finetune.train_run`` (the code the workflow runs) from the uint8 caches with
the augmentation on the device, in fp32 and in bf16 (autocast + channels_last). By default
the crops come from the whole-image cache, as the workflow's default ``full_image: true``
does; --centre crops the centre cache instead. The caches are built once per dataset and
shared by every model, so their build time is printed apart, not counted in the step rate.
Each path runs one warm-up step first (DataLoader workers, CUDA context, cuDNN autotuning).

Prints steps/s and img/s of each, and the ratios ours fp32 / published, ours bf16 / ours
fp32, ours bf16 / published. Target on a GPU (an H200, docs/performance.md): bf16 >= 1.8x
the fp32 step rate. Defaults: 224 px, batch 64, 40 steps over 1024 images on a GPU;
112 px, batch 16, 6 steps over 96 images on a CPU (about 20 s with --threads 1 on a busy
2-core CPU). Use several batches' worth of images: the published loader restarts its
workers every epoch, as the published code does, and that is timed.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _files import clock, default_workers, published_loader, random_weights, write_images
from medtransfer.data.cache import build_cache, build_full_cache, load_cache, load_full_cache
from medtransfer.protocols.finetune import Data, TrainConfig, build_model, make_optimizer, train_run
from medtransfer.runtime import resolve_device

CLASSES = 2


def published(weights: Path, index: Path, cfg: TrainConfig, size: int, device: str, workers: int) -> float:
    """Seconds for ``cfg.steps`` published steps (after one warm-up step)."""
    from torchvision import transforms as T

    model = build_model(weights, CLASSES, cfg, device)[0].train()
    opt, sched = make_optimizer(model, cfg)
    crop = T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip()])
    loader = published_loader(index, crop, batch_size=cfg.batch_size, workers=workers, device=device,
                              shuffle=True, drop_last=True)
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch, workers restarted each

    def step() -> None:
        x, y = next(batches)
        loss = F.cross_entropy(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    step()
    start = clock(device)
    for _ in range(cfg.steps):
        step()
    return clock(device) - start


def ours(weights: Path, data: Data, cfg: TrainConfig, device: str) -> float:
    """Seconds for ``cfg.steps`` steps of ``train_run`` (after a one-step run to warm up)."""
    model, wmeta = build_model(weights, CLASSES, cfg, device)
    train_run(model, data, wmeta, device, replace(cfg, steps=1, eval_every=1))
    start = clock(device)
    train_run(model, data, wmeta, device, cfg)
    return clock(device) - start


def caches(index: Path, folder: Path, size: int, centre_only: bool) -> tuple[Data, float]:
    """The training data from the caches, built here once, and the seconds that took."""
    start = clock("cpu")
    build_cache(index, folder / "cache.npy", size=size)
    if not centre_only:
        build_full_cache(index, folder / "full.npy", size=size, split=None)
    seconds = clock("cpu") - start
    images = load_cache(folder / "cache.npy")
    full = None if centre_only else load_full_cache(folder / "full.npy")
    labels = np.arange(len(images)) % CLASSES  # write_images' labels
    empty = np.empty(0, np.int64)
    return Data(images, labels, np.arange(len(images)), empty, empty, full), seconds


def line(name: str, seconds: float, cfg: TrainConfig) -> float:
    rate = cfg.steps / seconds
    print(f"  {name:<44s} {rate:8.2f} steps/s {rate * cfg.batch_size:9.1f} img/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="batch size (published: 64)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=default_workers(), help="published DataLoader workers")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--centre", action="store_true", help="ours crops the centre cache, not whole images")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    size, batch = args.size or (224 if gpu else 112), args.batch or (64 if gpu else 16)
    n, steps = args.images or (1024 if gpu else 96), args.steps or (40 if gpu else 6)
    if n < batch:
        raise SystemExit(f"--images ({n}) must be at least --batch ({batch}): the published loader drops "
                         "the last, short batch")
    torch.backends.cudnn.benchmark = True  # every path gets cuDNN autotuning
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-2, weight_decay=1e-8, early_stopping=False,
                      eval_every=steps, patience=1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        index = write_images(folder / "files", n)
        weights = random_weights(folder, 1)[0]
        data, cache_s = caches(index, folder, size, args.centre)
        pub = published(weights, index, cfg, size, device, args.workers)
        fp32 = ours(weights, data, cfg, device)
        bf16 = ours(weights, data, replace(cfg, precision="bf16"), device)
    source = "centre cache" if args.centre else "whole-image cache"
    print(f"device={device} images={n} size={size} batch={batch} steps={steps} workers={args.workers} "
          f"threads={torch.get_num_threads()}")
    print(f"  building the caches once ({source}): {cache_s:.2f} s, {n / cache_s:.1f} img/s (not in the rates)")
    p = line("published (PIL + DataLoader, fp32, NCHW)", pub, cfg)
    f = line(f"ours fp32 ({source}, device augment)", fp32, cfg)
    b = line(f"ours bf16 + channels_last ({source})", bf16, cfg)
    print(f"  ratio ours fp32 / published: {f / p:.2f}x")
    print(f"  ratio ours bf16 / ours fp32: {b / f:.2f}x  (GPU target >= 1.8x)")
    print(f"  ratio ours bf16 / published: {b / p:.2f}x")


if __name__ == "__main__":
    main()
