"""Shared by bench/features.py and bench/finetune.py: real image files, random weights and
the published input pipeline (PIL decode + torchvision transforms through a DataLoader).

Not a benchmark. Importable from the bench scripts because ``python bench/x.py`` puts
bench/ first on sys.path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from medtransfer.data.index import write_index
from medtransfer.weights.backbones import WeightsMeta, build_backbone, save_weights
from medtransfer.weights.formats import IMAGENET_MEAN, IMAGENET_STD


def write_images(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` real image files (JPEG and PNG, RGB and grey, ~512 x 400, both orientations)
    under ``folder``, and their dataset index (absolute paths, two classes, every fifth image
    in test, so any first 10 rows form a valid index too); returns the index path."""
    if n < 10:
        raise ValueError(f"write at least 10 images (both classes in both splits), got {n}")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(448, 577)), int(rng.integers(352, 449))
        if i % 5 == 4:
            w, h = h, w  # portrait
        grey = i % 3 == 0  # X-ray-like single-channel files
        img = _picture(rng, w, h, 1 if grey else 3)
        path = folder / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
        img.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        paths.append(str(path))
    labels = np.arange(n) % 2
    split = np.where(np.arange(n) % 5 == 4, "test", "train")
    index = folder / "index.csv"
    write_index(pd.DataFrame({"path": paths, "label": labels, "label_name": labels.astype(str),
                              "split": split, "patient": "", "split_rule": "given"}), index)
    return index


def head_index(index: Path, rows: int, out: Path) -> Path:
    """The first ``rows`` (>= 10) rows of ``index`` as an index of their own (for warm-up runs)."""
    from medtransfer.data.index import read_index

    write_index(read_index(index).iloc[:rows], out)
    return out


def _picture(rng: np.random.Generator, w: int, h: int, channels: int) -> Image.Image:
    """Smooth structure plus grain: compresses and decodes like a photograph or scan, not like noise."""
    coarse = rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, channels), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    base = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse, mode).resize((w, h), Image.BICUBIC)
    grain = rng.normal(0.0, 8.0, (h, w) if channels == 1 else (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(base, np.float64) + grain, 0, 255).astype(np.uint8), mode)


def random_weights(folder: Path, copies: int) -> list[Path]:
    """``copies`` files of one random torchvision ResNet-50 in medtransfer's weights format."""
    torch.manual_seed(0)
    state = build_backbone().state_dict()
    paths = [folder / f"model{i}.pt" for i in range(copies)]
    for path in paths:
        save_weights(path, state, WeightsMeta())
    return paths


class FileDataset(torch.utils.data.Dataset):
    """The published dataset class: open each file with PIL, make it RGB, apply ``transform``."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), int(self.labels[i])


def published_loader(index: Path, transform, *, batch_size: int, workers: int, device: str,
                     shuffle: bool = False, drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A torch DataLoader over the files of ``index`` as the published code builds it
    (ToTensor + ImageNet Normalize come after ``transform``; pinned memory on a GPU)."""
    from torchvision import transforms as T

    frame = pd.read_csv(index, keep_default_na=False)
    full = T.Compose([transform, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return torch.utils.data.DataLoader(
        FileDataset(frame["path"].tolist(), frame["label"].to_numpy(), full), batch_size=batch_size,
        shuffle=shuffle, drop_last=drop_last, num_workers=workers, pin_memory=device.startswith("cuda"))


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def clock(device: str) -> float:
    """``time.perf_counter()`` after the device has finished its queued work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()
