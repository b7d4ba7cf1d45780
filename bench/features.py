"""Feature extraction throughput: ours (bf16 autocast + channels_last, large batch) against
the published setting (fp32, NCHW, batch 64), end to end from the decoded uint8 cache,
both measured in this process on the same data (these machines are shared and noisy).

    python bench/features.py [--images N] [--size 224] [--device auto]

Prints images/s of each and the ratio. Target on an H200: >= 15,000 img/s and >= 2x the
published setting (docs/performance.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.common import resolve_device
from medtransfer.data.index import write_index
from medtransfer.features import extract
from medtransfer.models import WeightsMeta, build_backbone, save_weights


def _fixture(folder: Path, n: int, size: int) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    np.save(folder / "cache.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    labels = np.arange(n) % 2
    write_index(pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": labels,
                              "label_name": labels.astype(str), "split": np.where(labels, "train", "test"),
                              "patient": "", "split_rule": "given"}), folder / "index.csv")
    save_weights(folder / "w.pt", build_backbone().state_dict(), WeightsMeta())
    return folder / "w.pt", folder / "cache.npy", folder / "index.csv"


def _rate(paths, n: int, **kw) -> float:
    weights, cache, index = paths
    extract(weights=weights, cache=cache, index=index, out=cache.with_name("f.npz"), model="m",
            dataset="d", **kw)  # warm-up (cudnn autotune, allocator)
    start = time.perf_counter()
    extract(weights=weights, cache=cache, index=index, out=cache.with_name("f.npz"), model="m", dataset="d", **kw)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    n = args.images or (8192 if device.startswith("cuda") else 96)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _fixture(Path(tmp), n, args.size)
        ref = _rate(paths, n, precision="fp32", batch_size=64, device=device)
        ours = _rate(paths, n, precision="bf16", batch_size=256, device=device)
    print(f"device={device} images={n} size={args.size}")
    print(f"published setting (fp32, NCHW, batch 64): {ref:10.1f} img/s")
    print(f"medtransfer (bf16 + channels_last, 256):  {ours:10.1f} img/s")
    print(f"ratio: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
