"""Format ``pirl``: a PIRL checkpoint as PyContrast (HobbitLong/PyContrast) saves it.

``{"model", "model_ema", "contrast", "optimizer", "opt", "epoch"}``: the encoder is
``model`` under ``module.encoder.`` (not the EMA copy); heads ``module.head*`` and the
jigsaw branch ``module.jigsaw*``. ``opt`` is an argparse Namespace and the optimizer state
holds numpy scalars (PyContrast's learning-rate schedule writes np.float64 values): both
are allow-listed for safe loading in ``base.SAFE_GLOBALS``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.weights.base import (
    Converted,
    Probe,
    detect_prefixed,
    load_torch,
    mlp_head,
    prefixed,
    split_prefix,
    tensor_mapping,
)
from medtransfer.writers import save_torch

ENTRY = "model"
KEEP = "module.encoder."
DROP = [
    ("module.head_jig", "PIRL jigsaw projection head"),
    ("module.jigsaw", "PIRL jigsaw branch"),
    ("module.head", "PIRL projection head"),
]


def convert(path: Path) -> Converted:
    state = tensor_mapping(load_torch(path, needs=f"its {ENTRY!r} entry"), ENTRY, path)
    return split_prefix(state, KEEP, DROP, path)


def write_demo(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    sd = prefixed(state, KEEP) | mlp_head(seed, "module.head.", [2048, 128])
    sd |= mlp_head(seed + 1, "module.head_jig.", [2048, 128]) | mlp_head(seed + 2, "module.jigsaw.", [128 * 9, 128])
    opt = argparse.Namespace(arch="resnet50", epochs=800, learning_rate=0.03, nce_t=0.07)
    contrast = {"memory": torch.zeros(16, 128), "params": torch.tensor([-1.0, 0.07, 0.5])}
    optimizer = {"state": {}, "param_groups": [  # numpy scalars, as PyContrast's lr schedule leaves them
        {"lr": np.float64(0.03 * 0.5), "initial_lr": np.float64(0.03), "momentum": 0.9, "params": []}]}
    save_torch(out, {ENTRY: sd, "model_ema": dict(sd), "contrast": contrast, "optimizer": optimizer,
                     "opt": opt, "epoch": np.int64(800)})


def detect(probe: Probe) -> dict[str, Any] | None:
    return detect_prefixed(probe, ENTRY, KEEP + "layer1.")
