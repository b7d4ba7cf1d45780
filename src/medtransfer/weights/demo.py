"""Demo weights: seeded random backbones (ResNet-50, ResNet-18, DenseNet-121) written in each
published model's own file layout.

They let the embedded demo study run the real download -> convert -> load path with
no network. They are RANDOM: results computed from them say nothing about the
published models, and every result row carries ``weights_demo=True``. The layout of each
format is written by its record's ``write_demo`` (``formats.FORMATS``).
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch
import torchvision

from medtransfer.weights.backbones import arch_record
from medtransfer.weights.formats import get_format

# Mantissa bits kept of the calibrated BatchNorm statistics (see random_resnet50).
CALIBRATION_BITS = 12


def seeded_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Initialise ``model`` in place from numpy's seeded generator, as torchvision's ResNets
    are initialised (convolutions He-normal over fan-out, BatchNorm 1/0, linear layers
    uniform in +-1/sqrt(fan-in)).

    Why not torch's own initialisation: torch draws normals with a vectorised routine on
    CPUs with AVX2 and a scalar one elsewhere, which differ in the last bits, so the same
    seed gave different weights files on different machines. numpy's legacy generator
    draws the same numbers everywhere; they are drawn in float64 and rounded once.
    """
    rng = np.random.RandomState(seed)

    def fill(tensor: torch.Tensor, values: np.ndarray) -> None:
        tensor.copy_(torch.from_numpy(values.astype(np.float32).reshape(tensor.shape)))

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_out = module.out_channels * module.weight[0, 0].numel()
                fill(module.weight, rng.standard_normal(module.weight.shape) * math.sqrt(2.0 / fan_out))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                fill(module.weight, rng.uniform(-bound, bound, module.weight.shape))
                if module.bias is not None:
                    fill(module.bias, rng.uniform(-bound, bound, module.bias.shape))
            elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()  # weight 1, bias 0, running mean 0, var 1: exact
    return model


def _round_bits(tensor: torch.Tensor, bits: int = CALIBRATION_BITS) -> torch.Tensor:
    """``tensor`` with its mantissa rounded to ``bits`` bits (float32 out)."""
    mantissa, exponent = np.frexp(tensor.numpy())
    return torch.from_numpy(np.ldexp(np.round(mantissa * 2.0**bits) / 2.0**bits, exponent).astype(np.float32))


def random_model(arch: str, seed: int, calibrate: bool = True) -> dict[str, torch.Tensor]:
    """A seeded torchvision ``arch`` state dict (with its 1000-class classifier), the same
    bytes on every machine (``seeded_init``).

    ``calibrate`` runs two training-mode passes over seeded noise so the BatchNorm
    running statistics match the activations (a random net with the default 0/1
    statistics gives badly scaled features). The passes run in float64 and the
    statistics are rounded to ``CALIBRATION_BITS`` mantissa bits: kernels differ between
    CPUs in the order they sum, which moves float64 results by about 1e-13, far below
    that rounding, so every machine keeps the same statistics.
    """
    model = seeded_init(getattr(torchvision.models, arch_record(arch).builder)(weights=None), seed)
    if calibrate:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration passes
        model.double().train()
        noise = np.random.RandomState(seed).uniform(0.0, 1.0, (2, 8, 3, 64, 64))
        with torch.no_grad():
            for batch in noise:
                model(torch.from_numpy(batch))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(_round_bits(module.running_mean))
                module.running_var.copy_(_round_bits(module.running_var))
        model.float()  # exact: the rounded statistics fit float32
    return {k: v.clone() for k, v in model.state_dict().items()}


def random_resnet50(seed: int, calibrate: bool = True) -> dict[str, torch.Tensor]:
    """``random_model("resnet50", ...)``: the stand-in of the six ImageNet ResNet-50s."""
    return random_model("resnet50", seed, calibrate)


def write_demo_weights(out: str | os.PathLike, *, fmt: str, model: str, seed: int = 0,
                       arch: str = "resnet50", random: bool = False) -> None:
    """Write a random ``arch`` for ``model`` in file format ``fmt`` (seeded per model name).

    ``random``: the untrained baseline, torchvision's initialisation as it is (BatchNorm
    statistics 0/1, no calibration), rather than a demo stand-in.
    """
    record = get_format(fmt)
    if arch not in record.archs:
        raise ValueError(f"format `{fmt}` cannot hold a {arch}; it holds {record.archs}")
    model_seed = seed + zlib.crc32(model.encode())  # a different net per model, stable across runs
    state = random_model(arch, model_seed, calibrate=False) if random else random_model(arch, model_seed)
    record.write_demo(state, Path(out), model_seed)
