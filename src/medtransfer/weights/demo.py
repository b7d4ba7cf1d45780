"""Demo weights: seeded random ResNet-50s written in each published model's own file layout.

They let the embedded demo study run the real download -> convert -> load path with
no network. They are RANDOM: results computed from them say nothing about the
published models, and every result row carries ``weights_demo=True``. The layout of each
format is written by its record's ``write_demo`` (``formats.FORMATS``).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import torch
import torchvision

from medtransfer.weights.formats import get_format


def random_resnet50(seed: int, calibrate: bool = True) -> dict[str, torch.Tensor]:
    """A seeded torchvision ResNet-50 state dict (with its 1000-class ``fc``).

    ``calibrate`` runs two training-mode passes over seeded noise so the BatchNorm
    running statistics match the activations (a random net with the default 0/1
    statistics gives badly scaled features).
    """
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None)
    if calibrate:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration passes
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.rand(8, 3, 64, 64))
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_demo_weights(out: str | os.PathLike, *, fmt: str, model: str, seed: int = 0) -> None:
    """Write a random ResNet-50 for ``model`` in file format ``fmt`` (seeded per model name)."""
    record = get_format(fmt)
    model_seed = seed + zlib.crc32(model.encode())  # a different net per model, stable across runs
    record.write_demo(random_resnet50(model_seed), Path(out), model_seed)
