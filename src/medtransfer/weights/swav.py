"""Format ``swav``: a SwAV checkpoint (facebookresearch/swav): ``module.<torchvision name>``
plus ``module.projection_head.*`` and ``module.prototypes.*``, at the top level or under
``state_dict``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medtransfer.weights.base import (
    Converted,
    Probe,
    detect_prefixed,
    load_torch,
    mlp_head,
    prefixed,
    seeded_normal,
    split_prefix,
    tensor_mapping,
)
from medtransfer.writers import save_torch

KEEP = "module."
DROP = [
    ("module.projection_head.", "SwAV projection head"),
    ("module.prototypes.", "SwAV prototypes"),
]


def convert(path: Path) -> Converted:
    obj = load_torch(path, needs="its state dict")
    entry = "state_dict" if isinstance(obj, dict) and "state_dict" in obj else None
    return split_prefix(tensor_mapping(obj, entry, path), KEEP, DROP, path)


def write_demo(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    sd = prefixed(state, KEEP) | mlp_head(seed, "module.projection_head.", [2048, 2048, 128])
    sd["module.prototypes.weight"] = seeded_normal(seed + 1, 3000, 128, scale=0.01)
    save_torch(out, sd)


def detect(probe: Probe) -> dict[str, Any] | None:
    marker = KEEP + "layer1."
    return detect_prefixed(probe, None, marker) or detect_prefixed(probe, "state_dict", marker)
