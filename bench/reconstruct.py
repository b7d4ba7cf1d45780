"""Feature-inversion throughput: N images optimised together (one grouped generator)
against one image at a time, ResNet-50 + the published generator, same process.

    python bench/reconstruct.py [--images 8] [--size S] [--steps K] [--precision fp32|bf16]
                                [--device auto|cpu|cuda] [--threads T]

Prints image-steps/s of each and the ratio, for the CPU and, when present, CUDA (with
--device auto). Defaults: 64 px and 4 steps on the CPU, 224 px and 40 steps on a GPU,
each after one warm-up step. Target on a GPU: batched >= 10x one at a time
(docs/performance.md). On a CPU shared with other jobs, use --threads 1: OpenMP threads
that wait for a descheduled partner made a step ~15x slower on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from medtransfer.protocols.reconstruct.inversion import FeatureTap, image_seeds, invert_batch
from medtransfer.weights.backbones import WeightsMeta, build_backbone, normalise


def _rate(tap: FeatureTap, meta: WeightsMeta, images: torch.Tensor, steps: int, device: str, precision: str) -> float:
    """Image-steps per second of one invert_batch call over ``images`` (after a warm-up)."""
    seeds = image_seeds(0, range(len(images)))
    norm = lambda x: normalise(x, meta)  # noqa: E731
    invert_batch(tap, norm, images, seeds, steps=1, lr=1e-3, device=device, precision=precision)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    invert_batch(tap, norm, images, seeds, steps=steps, lr=1e-3, device=device, precision=precision)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(images) * steps / (time.perf_counter() - start)


def bench(device: str, n: int, size: int, steps: int, precision: str) -> None:
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = build_backbone("resnet50").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fmt = torch.channels_last if precision == "bf16" and device.startswith("cuda") else torch.contiguous_format
    tap = FeatureTap(net.to(device, memory_format=fmt), "layer4")
    meta = WeightsMeta()
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    single = np.mean([_rate(tap, meta, images[i:i + 1], steps, device, precision) for i in range(min(n, 2))])
    batched = _rate(tap, meta, images, steps, device, precision)
    print(f"device={device} size={size} steps={steps} precision={precision} threads={torch.get_num_threads()}")
    print(f"  one image at a time: {single:8.2f} image-steps/s")
    print(f"  {n} images batched:  {batched:8.2f} image-steps/s")
    print(f"  ratio batched / one: {batched / single:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" else [args.device]
    for device in devices:
        gpu = device.startswith("cuda")
        bench(device, args.images, args.size or (224 if gpu else 64), args.steps or (40 if gpu else 4),
              args.precision)


if __name__ == "__main__":
    main()
