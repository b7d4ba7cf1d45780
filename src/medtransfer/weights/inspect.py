"""What a weights file holds: container, top-level entries, key prefixes, likely format."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from medtransfer.weights.convert import FORMATS, _torch_load

# Key prefixes that identify each torch format (checked in order).
_SIGNATURES = [
    ("moco", "state_dict", "module.encoder_q."),
    ("pirl", "model", "module.encoder."),
    ("swav", None, "module."),
    ("torchvision", None, "layer1."),
]


def _prefix_counts(keys: list[str], depth: int = 2) -> dict[str, int]:
    return dict(Counter(".".join(k.split(".")[:depth]) for k in keys).most_common(12))


def _torch_summary(path: Path) -> dict[str, Any]:
    obj = _torch_load(path)
    info: dict[str, Any] = {"container": "torch pickle", "top_level": _describe_top(obj)}
    for fmt, entry, prefix in _SIGNATURES:
        state = obj.get(entry) if entry and isinstance(obj, dict) else obj
        if isinstance(state, dict) and any(str(k).startswith(prefix) for k in state):
            keys = [str(k) for k in state]
            info.update(format=fmt, tensors=len(keys), prefixes=_prefix_counts(keys))
            return info
    info["format"] = "unknown"
    return info


def _describe_top(obj: object) -> dict[str, str] | str:
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): type(v).__name__ for k, v in obj.items()}
    if isinstance(obj, dict):
        return f"state dict of {len(obj)} tensors"
    return type(obj).__name__


def describe(path: str | Path) -> dict[str, Any]:
    """A summary dict of ``path`` (raises ValueError for files no format recognises)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    head = path.read_bytes()[:8]
    if zipfile.is_zipfile(path):
        names = zipfile.ZipFile(path).namelist()
        if any(n.endswith(".index") for n in names):
            return {"container": "zip of a TensorFlow checkpoint", "format": "simclr_tf", "members": names}
        return _torch_summary(path)
    if path.suffix == ".index":
        return {"container": "TensorFlow checkpoint index", "format": "simclr_tf"}
    if head[:2] == b"\x80\x02":
        try:
            return _torch_summary(path)
        except ValueError:
            return {"container": "pickle (protocol 2)", "format": "byol"}
    raise ValueError(f"{path}: not a file format medtransfer knows; formats: {sorted(FORMATS)}")
