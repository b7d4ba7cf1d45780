"""Format ``lightning_moco``: a PyTorch Lightning checkpoint of a MoCo module, as
CovidPrognosis writes its MIMIC-CheXpert models.

``{"epoch", "global_step", "pytorch-lightning_version", "state_dict", "callbacks",
"optimizer_states", "lr_schedulers", "hyper_parameters"}``; the LightningModule keeps the
MoCo model as ``model``, so the query encoder (a torchvision DenseNet-121) is under
``model.encoder_q.`` (``features.*`` and its 128-d projection ``classifier.*``, a Linear or,
with an MLP head, ``classifier.0``/``classifier.2``), the momentum encoder under
``model.encoder_k.`` and the queue at ``model.queue`` / ``model.queue_ptr``. Files written
by Lightning 1.0.0 - 1.0.6 also keep the module's accuracy metrics' counters
(``train_acc.correct``, ``train_acc.total``, ``val_acc.*``): dropped, and logged.
``hyper_parameters`` (Lightning's ``AttributeDict`` or an ``argparse.Namespace``) loads as
plain data (``base.SAFE_GLOBALS``) and is not read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from medtransfer.weights.base import (
    Converted,
    Probe,
    detect_prefixed,
    head_of,
    load_torch,
    prefixed,
    seeded_normal,
    split_prefix,
    tensor_mapping,
)
from medtransfer.writers import save_torch

ENTRY = "state_dict"
KEEP = "model.encoder_q."
# Lightning 1.0.0 - 1.0.6 saved a Metric's states with the module by default (1.0.7 stopped)
METRIC_STATE = "Lightning metric state (pl.metrics.Accuracy's correct/total counters), not a weight"
DROP = [
    ("model.encoder_q.classifier.", "MoCo projection head (DenseNet classifier slot)"),
    ("model.encoder_q.fc.", "MoCo projection head (ResNet fc slot)"),
    ("model.encoder_k.", "MoCo momentum (key) encoder"),
    ("model.queue", "MoCo negative-key queue and its pointer"),
    ("train_acc.", METRIC_STATE),
    ("val_acc.", METRIC_STATE),
]
log = logging.getLogger(__name__)


def convert(path: Path) -> Converted:
    state = tensor_mapping(load_torch(path, needs=f"its {ENTRY!r} entry"), ENTRY, path)
    converted = split_prefix(state, KEEP, DROP, path)
    if metrics := [key for key, why in converted.dropped.items() if why == METRIC_STATE]:
        log.info("%s: dropped %d keys %s: %s", path, len(metrics), metrics, METRIC_STATE)
    return converted


def write_demo(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    head, width = head_of(state)
    sd: dict[str, torch.Tensor] = {}
    for i, encoder in enumerate(("model.encoder_q.", "model.encoder_k.")):
        sd |= prefixed(state, encoder)
        sd[f"{encoder}{head}.weight"] = seeded_normal(seed + i, 128, width, scale=0.01)
        sd[f"{encoder}{head}.bias"] = torch.zeros(128)
    queue = seeded_normal(seed + 2, 128, 16)
    sd["model.queue"] = queue / queue.norm(dim=0, keepdim=True)
    sd["model.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    save_torch(out, {
        "epoch": 50, "global_step": 1000, "pytorch-lightning_version": "1.1.8", ENTRY: sd,
        "callbacks": {}, "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": []}]}],
        "lr_schedulers": [], "hparams_name": "kwargs",
        "hyper_parameters": {"arch": "densenet121", "feature_dim": 128, "queue_size": 65536, "use_mlp": False},
    })


def detect(probe: Probe) -> dict[str, Any] | None:
    return detect_prefixed(probe, ENTRY, KEEP)
