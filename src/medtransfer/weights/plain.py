"""Format ``torchvision``: a plain torchvision state dict (e.g. ``resnet50-0676ba61.pth``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medtransfer.weights.base import (
    Converted, Probe, detect_prefixed, load_torch, save_torch, split_prefix, tensor_mapping,
)

DROP = [("fc.", "classifier head (replaced by the evaluation head)")]


def convert(path: Path) -> Converted:
    state = tensor_mapping(load_torch(path, needs="its state dict"), None, path)
    return split_prefix(state, "", DROP, path)


def write_demo(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    save_torch(state, out)


def detect(probe: Probe) -> dict[str, Any] | None:
    return detect_prefixed(probe, None, "layer1.")
