"""Occlusion-saliency throughput: occluded copies in large batches against one at a time
(the published code's batch-1 loop), ResNet-50 in eval mode, same process.

    python bench/saliency.py [--size S] [--window W] [--stride K] [--batch B] [--single N]
                             [--precision fp32|bf16] [--device auto|cpu|cuda] [--threads T]

Prints windows/s of each and the ratio, for the CPU and, when present, CUDA (with
--device auto). Defaults: the demo's 64 px, window 8, stride 4 (225 windows) on a CPU;
the published 242 px, window 10, stride 1 (54,289 windows; 2,048 of them timed) on a GPU.
Batch-1 is timed over the first --single windows. Target on a GPU: batched >= 20x one at a
time (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time

import torch

from medtransfer.runtime import autocast
from medtransfer.weights.backbones import build_backbone


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(net, x: torch.Tensor, window: int, stride: int, batch: int, device: str, limit: int) -> float:
    """Windows per second scoring the first whole window rows holding ``limit`` windows (after a warm-up)."""
    n = (x.shape[-1] - window) // stride + 1
    rows = max(1, min(n, -(-limit // n)))
    ref = net(x[None])[0]
    _band_scores(net, x, window, stride, batch, 1, ref)  # warm-up
    _sync(device)
    start = time.perf_counter()
    count = _band_scores(net, x, window, stride, batch, rows, ref)
    _sync(device)
    return count / (time.perf_counter() - start)


def _band_scores(net, x, window, stride, batch, rows, ref) -> int:
    """Score the windows of the first ``rows`` window rows of ``x``; returns how many."""
    import medtransfer.protocols.saliency as sal

    size = x.shape[-1]
    starts = torch.as_tensor(sal.window_starts(size, window, stride))
    n = len(starts)
    count = rows * n
    with torch.inference_mode():
        for lo in range(0, count, batch):
            k = torch.arange(lo, min(lo + batch, count))
            r = sal._coverage(size, window, starts[k // n].to(x.device))
            c = sal._coverage(size, window, starts[k % n].to(x.device))
            keep = ~(r[:, :, None] & c[:, None, :])
            (net(x[None] * keep[:, None]) - ref).norm(dim=1)
    return count


def bench(device: str, size: int, window: int, stride: int, batch: int, single: int, precision: str) -> None:
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    fmt = torch.channels_last if precision == "bf16" and device.startswith("cuda") else torch.contiguous_format
    net = build_backbone("resnet50").eval().to(device, memory_format=fmt)
    x = torch.randn(3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    n = ((size - window) // stride + 1) ** 2
    with autocast(device, precision), torch.inference_mode():
        one = _rate(net, x, window, stride, 1, device, single)
        many = _rate(net, x, window, stride, batch, device, max(single, 8 * batch))
    print(f"device={device} size={size} window={window} stride={stride} ({n} windows per image) "
          f"precision={precision} threads={torch.get_num_threads()}")
    print(f"  one occluded copy at a time: {one:9.1f} windows/s")
    print(f"  batches of {batch:<5d}           {many:9.1f} windows/s")
    print(f"  ratio batched / one:         {many / one:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--single", type=int, default=None, help="windows timed one at a time")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" else [args.device]
    for device in devices:
        gpu = device.startswith("cuda")
        bench(device, args.size or (242 if gpu else 64), args.window or (10 if gpu else 8),
              args.stride or (1 if gpu else 4), args.batch or (256 if gpu else 75),
              args.single or (512 if gpu else 30), args.precision)


if __name__ == "__main__":
    main()
