"""Format ``moco``: a MoCo (v1/v2) training checkpoint as facebookresearch/moco writes it.

``{"epoch", "arch", "state_dict", "optimizer"}``; the query encoder is under
``module.encoder_q.`` (its MLP head at ``module.encoder_q.fc.*``), the momentum encoder under
``module.encoder_k.`` and the negative-key queue at ``module.queue``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medtransfer.weights.base import (
    Converted, Probe, detect_prefixed, load_torch, mlp_head, prefixed, save_torch, seeded_normal, split_prefix,
    tensor_mapping,
)

ENTRY = "state_dict"
KEEP = "module.encoder_q."
DROP = [
    ("module.encoder_q.fc.", "MoCo MLP projection head"),
    ("module.encoder_k.", "MoCo momentum (key) encoder"),
    ("module.queue", "MoCo negative-key queue"),
]


def convert(path: Path) -> Converted:
    state = tensor_mapping(load_torch(path, needs=f"its {ENTRY!r} entry"), ENTRY, path)
    return split_prefix(state, KEEP, DROP, path)


def write_demo(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    sd = prefixed(state, KEEP) | mlp_head(seed, "module.encoder_q.fc.", [2048, 2048, 128])
    sd |= prefixed(state, "module.encoder_k.") | mlp_head(seed + 1, "module.encoder_k.fc.", [2048, 2048, 128])
    sd["module.queue"] = seeded_normal(seed + 2, 128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": []}]}
    save_torch({"epoch": 800, "arch": "resnet50", ENTRY: sd, "optimizer": optimizer}, out)


def detect(probe: Probe) -> dict[str, Any] | None:
    return detect_prefixed(probe, ENTRY, KEEP + "layer1.")
