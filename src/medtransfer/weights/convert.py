"""Conversion of published weight files to one canonical torchvision-layout file.

Every converter maps keys *by name*, lists what it drops and why, and returns a
``Converted``; ``convert_file`` then checks every key and shape against the target
architecture (strict) and writes the canonical file atomically.
"""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medtransfer.common import sha256_file
from medtransfer.models import IMAGENET_MEAN, IMAGENET_STD, WeightsMeta, check_state_dict, save_weights


@dataclass
class Converted:
    """A converter's result: torchvision names, what was dropped (key -> reason), padding."""

    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, str] = field(default_factory=dict)
    padding: str = "torch"
    arch: str = "resnet50"


def _torch_load(path: Path) -> object:
    """Load a torch pickle without running arbitrary code (weights_only).

    PIRL's file holds an argparse Namespace; it is allow-listed as a plain record.
    """
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(
            f"{path}: cannot read this as a PyTorch weights file ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300]}). The file may be truncated or corrupt: "
            "delete it and download again, or check its `format`."
        ) from err


def _split_prefix(
    state: dict[str, torch.Tensor], keep: str, drop_rules: list[tuple[str, str]], path: Path
) -> Converted:
    """Keep keys under ``keep`` (prefix stripped); every other key must match a drop rule."""
    kept: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unmatched: list[str] = []
    for key, value in state.items():
        reason = next((why for prefix, why in drop_rules if key.startswith(prefix)), None)
        if reason is not None:
            dropped[key] = reason
        elif key.startswith(keep):
            kept[key[len(keep):]] = value
        else:
            unmatched.append(key)
    if unmatched:
        raise ValueError(
            f"{path}: unexpected keys for this format (neither '{keep}*' nor a known head): "
            f"{sorted(unmatched)[:20]}. Is the `format` right for this file?"
        )
    return Converted(state_dict=kept, dropped=dropped)


def _mapping(obj: object, key: str | None, path: Path) -> dict[str, torch.Tensor]:
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = sorted(obj.keys()) if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{path}: expected a dict with a {key!r} entry, found {found}")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return obj


def convert_torchvision(path: Path) -> Converted:
    state = _mapping(_torch_load(path), None, path)
    return _split_prefix(state, "", [("fc.", "classifier head (replaced by the evaluation head)")], path)


def convert_moco(path: Path) -> Converted:
    state = _mapping(_torch_load(path), "state_dict", path)
    return _split_prefix(state, "module.encoder_q.", [
        ("module.encoder_q.fc.", "MoCo MLP projection head"),
        ("module.encoder_k.", "MoCo momentum (key) encoder"),
        ("module.queue", "MoCo negative-key queue"),
    ], path)


def convert_swav(path: Path) -> Converted:
    obj = _torch_load(path)
    state = _mapping(obj, "state_dict" if isinstance(obj, dict) and "state_dict" in obj else None, path)
    return _split_prefix(state, "module.", [
        ("module.projection_head.", "SwAV projection head"),
        ("module.prototypes.", "SwAV prototypes"),
    ], path)


def convert_pirl(path: Path) -> Converted:
    state = _mapping(_torch_load(path), "model", path)
    return _split_prefix(state, "module.encoder.", [
        ("module.head_jig", "PIRL jigsaw projection head"),
        ("module.jigsaw", "PIRL jigsaw branch"),
        ("module.head", "PIRL projection head"),
    ], path)


def _convert_byol(path: Path) -> Converted:
    from medtransfer.weights import byol

    return byol.convert(path)


def _convert_simclr(path: Path) -> Converted:
    from medtransfer.weights import simclr

    return simclr.convert(path)


FORMATS: dict[str, Callable[[Path], Converted]] = {
    "torchvision": convert_torchvision,
    "moco": convert_moco,
    "swav": convert_swav,
    "pirl": convert_pirl,
    "byol": _convert_byol,
    "simclr_tf": _convert_simclr,
}
NORMALISATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": (None, None)}


def convert_file(
    src: str | os.PathLike, out: str | os.PathLike, *, fmt: str, model: str = "",
    normalisation: str = "imagenet", arch: str = "resnet50", demo: bool = False,
) -> WeightsMeta:
    """Convert ``src`` (in format ``fmt``) to the canonical weights file ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown weights format {fmt!r}; expected one of {sorted(FORMATS)}")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {sorted(NORMALISATIONS)}")
    src = Path(src)
    converted = FORMATS[fmt](src)
    check_state_dict(converted.state_dict, arch, str(src))
    mean, std = NORMALISATIONS[normalisation]
    meta = WeightsMeta(
        arch=arch, padding=converted.padding, mean=mean, std=std, source_format=fmt,
        source_sha256=sha256_file(src), model=model, dropped=converted.dropped, demo=demo,
    )
    save_weights(out, converted.state_dict, meta)
    return meta
