"""Demo weights: seeded random ResNet-50s written in each published model's own file layout.

They let the embedded demo study run the real download -> convert -> load path with
no network. They are RANDOM: results computed from them say nothing about the
published models, and every result row carries ``weights_demo=True``.
"""

from __future__ import annotations

import argparse
import os
import zlib
from pathlib import Path

import torch
import torchvision

from medtransfer.common import atomic_path


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


def _head(seed: int, prefix: str, dims: list[int]) -> dict[str, torch.Tensor]:
    """An MLP head ``prefix{0,2,...}`` (Linear, ReLU, Linear...) as in MoCo/SwAV files."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        out[f"{prefix}{2 * i}.weight"] = torch.randn(b, a, generator=gen) * 0.01
        out[f"{prefix}{2 * i}.bias"] = torch.zeros(b)
    return out


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items() if not k.startswith("fc.")}


def _save(obj: object, out: Path) -> None:
    with atomic_path(out) as tmp:
        torch.save(obj, tmp)


def _write_torchvision(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    _save(state, out)


def _write_moco(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    sd = _prefixed(state, "module.encoder_q.") | _head(seed, "module.encoder_q.fc.", [2048, 2048, 128])
    sd |= _prefixed(state, "module.encoder_k.") | _head(seed + 1, "module.encoder_k.fc.", [2048, 2048, 128])
    sd["module.queue"] = torch.randn(128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": []}]}
    _save({"epoch": 800, "arch": "resnet50", "state_dict": sd, "optimizer": optimizer}, out)


def _write_swav(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    sd = _prefixed(state, "module.") | _head(seed, "module.projection_head.", [2048, 2048, 128])
    sd["module.prototypes.weight"] = torch.randn(3000, 128) * 0.01
    _save(sd, out)


def _write_pirl(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    sd = _prefixed(state, "module.encoder.") | _head(seed, "module.head.", [2048, 128])
    sd |= _head(seed + 1, "module.head_jig.", [2048, 128]) | _head(seed + 2, "module.jigsaw.", [128 * 9, 128])
    opt = argparse.Namespace(arch="resnet50", epochs=800, learning_rate=0.03, nce_t=0.07)
    _save({"model": sd, "model_ema": dict(sd), "opt": opt, "epoch": 800}, out)


def _write_byol(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    from medtransfer.weights import byol

    byol.write_native(state, out)


def _write_simclr(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    from medtransfer.weights import simclr

    simclr.write_native(state, out)


WRITERS = {
    "torchvision": _write_torchvision, "moco": _write_moco, "swav": _write_swav, "pirl": _write_pirl,
    "byol": _write_byol, "simclr_tf": _write_simclr,
}


def write_demo_weights(out: str | os.PathLike, *, fmt: str, model: str, seed: int = 0) -> None:
    """Write a random ResNet-50 for ``model`` in file format ``fmt`` (seeded per model name)."""
    if fmt not in WRITERS:
        raise ValueError(f"no demo writer for format {fmt!r}; expected one of {sorted(WRITERS)}")
    model_seed = seed + zlib.crc32(model.encode())  # a different net per model, stable across runs
    WRITERS[fmt](random_resnet50(model_seed), Path(out), model_seed)
