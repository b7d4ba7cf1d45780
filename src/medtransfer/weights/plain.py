"""Format ``torchvision``: a plain torchvision state dict (e.g. ``resnet50-0676ba61.pth``).

torchvision's own DenseNet files (``densenet121-a639ec97.pth``) keep the key names of old
torchvision versions, ``denselayerN.norm.1.weight`` for today's ``denselayerN.norm1.weight``
(torchvision renames them when it loads the file); the same renaming is done here, by name.
Files that old also lack BatchNorm's ``num_batches_tracked``: it is added as 0, as
BatchNorm itself does when it loads such a file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from medtransfer.weights.base import (
    Converted,
    Probe,
    detect_prefixed,
    load_torch,
    split_prefix,
    tensor_mapping,
)
from medtransfer.writers import save_torch

DROP = [
    ("fc.", "classifier head (replaced by the evaluation head)"),
    ("classifier.", "classifier head (replaced by the evaluation head)"),
]
# denselayerN.{norm,relu,conv}.{1,2}.<param> -> denselayerN.{norm,relu,conv}{1,2}.<param>
OLD_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                          r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def renamed(key: str) -> str:
    """Today's torchvision name of a (possibly old-style DenseNet) key."""
    match = OLD_DENSENET.match(key)
    return match.group(1) + match.group(2) if match else key


def convert(path: Path) -> Converted:
    state = {renamed(k): v for k, v in tensor_mapping(load_torch(path, needs="its state dict"), None, path).items()}
    for key in [k for k in state if k.endswith(".running_var")]:
        state.setdefault(key.removesuffix("running_var") + "num_batches_tracked", torch.tensor(0))
    return split_prefix(state, "", DROP, path)


def write_demo(state: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    save_torch(out, state)


def detect(probe: Probe) -> dict[str, Any] | None:
    return detect_prefixed(probe, None, "layer1.") or detect_prefixed(probe, None, "features.denseblock1.")
