"""Format ``moco``: a MoCo (v1/v2) training checkpoint as facebookresearch/moco writes it.

``{"epoch", "arch", "state_dict", "optimizer"}``; the query encoder is under
``module.encoder_q.`` (its MLP head at ``module.encoder_q.fc.*``), the momentum encoder under
``module.encoder_k.`` and the negative-key queue at ``module.queue``. MoCo-CXR's files
(ResNet-18 and DenseNet-121) have the same layout; their MLP head sits where the
architecture's classifier was: ``fc.0``/``fc.2`` for a ResNet, ``classifier.0``/``classifier.2``
for a DenseNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medtransfer.weights.base import (
    Converted,
    Probe,
    detect_prefixed,
    head_of,
    load_torch,
    mlp_head,
    prefixed,
    seeded_normal,
    split_prefix,
    tensor_mapping,
)
from medtransfer.writers import save_torch

ENTRY = "state_dict"
KEEP = "module.encoder_q."
DROP = [
    ("module.encoder_q.fc.", "MoCo MLP projection head"),
    ("module.encoder_q.classifier.", "MoCo MLP projection head (DenseNet)"),
    ("module.encoder_k.", "MoCo momentum (key) encoder"),
    ("module.queue", "MoCo negative-key queue"),
]


def convert(path: Path) -> Converted:
    state = tensor_mapping(load_torch(path, needs=f"its {ENTRY!r} entry"), ENTRY, path)
    return split_prefix(state, KEEP, DROP, path)


def write_demo(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    head, width = head_of(state)
    arch = {("fc", 2048): "resnet50", ("fc", 512): "resnet18"}.get((head, width), "densenet121")
    sd = prefixed(state, KEEP) | mlp_head(seed, f"module.encoder_q.{head}.", [width, width, 128])
    sd |= prefixed(state, "module.encoder_k.") | mlp_head(seed + 1, f"module.encoder_k.{head}.", [width, width, 128])
    sd["module.queue"] = seeded_normal(seed + 2, 128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": []}]}
    save_torch(out, {"epoch": 800, "arch": arch, ENTRY: sd, "optimizer": optimizer})


def detect(probe: Probe) -> dict[str, Any] | None:
    return detect_prefixed(probe, ENTRY, KEEP)
