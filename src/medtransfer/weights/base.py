"""What the format modules share: the ``Converted`` result, safe loading of torch pickles,
prefix-based key mapping, the ``Probe`` that detection reads, demo-writing helpers.

This module imports no other part of ``medtransfer.weights``: format modules build on it
and nothing here knows any particular format.
"""

from __future__ import annotations

import argparse
import pickle
import pickletools
import re
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

EXAMPLES = 8  # how many keys an error or a summary shows


@dataclass
class Converted:
    """A converter's result: the backbone under torchvision names and what was dropped
    (source key -> reason). Padding and normalisation belong to the format's record."""

    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, str] = field(default_factory=dict)


def sample_keys(keys: Iterable[Any], n: int = EXAMPLES) -> list[str]:
    """Up to ``n`` keys that show the file's layout: the first key under each two-level
    prefix (``module.encoder_q``, ``module.queue``...) in file order, then the next keys."""
    keys = list(map(str, keys))
    firsts: dict[str, str] = {}
    for key in keys:
        firsts.setdefault(".".join(key.split(".")[:2]), key)
    picked = list(firsts.values())[:n]
    chosen = set(picked)
    return picked + [k for k in keys if k not in chosen][: n - len(picked)]


def few(keys: Iterable[Any], n: int = EXAMPLES) -> str:
    """'<count> keys, e.g. [...]': a bounded listing for messages (``sample_keys``)."""
    keys = list(keys)
    return f"{len(keys)} keys, e.g. {sample_keys(keys, n)}"


# --- safe loading of torch pickles ---------------------------------------------------------

def _numpy_scalar_globals() -> list[Any]:
    """numpy scalars as torch.save pickles them: ``multiarray.scalar(dtype, bytes)`` with a
    ``numpy.dtype`` (whose class is ``numpy.dtypes.Float64DType`` etc. since numpy 1.25).
    Files written under numpy 1 name ``numpy.core.multiarray``, under numpy 2
    ``numpy._core.multiarray``: both names are mapped to this numpy's function."""
    try:
        from numpy._core.multiarray import scalar  # numpy 2's home of a pickle's global
    except ImportError:  # numpy 1.x without numpy._core
        from numpy.core.multiarray import scalar  # numpy 1's home of it
    numeric = np.typecodes["AllInteger"] + np.typecodes["AllFloat"] + "?"
    dtype_classes = sorted({type(np.dtype(code)) for code in numeric}, key=str)
    names = [(scalar, f"numpy.{core}.multiarray.scalar") for core in ("core", "_core")]
    return [*names, np.dtype, *dtype_classes]


# PyContrast's PIRL file holds an argparse Namespace ('opt') and numpy scalars (its lr
# schedule writes np.float64 learning rates into the optimizer state): plain data, allowed.
# Older Lightning checkpoints hold their hyper-parameters as a Namespace too.


class LightningName:
    """Stands in for a PyTorch Lightning class that a Lightning checkpoint names as plain data.

    Lightning 1.x keys the ``callbacks`` entry of a checkpoint by the callback's class
    (``{ModelCheckpoint: {"best_model_score": ...}}``); conversion does not read it, but safe
    loading must get past it. Each class name below unpickles to a subclass of this, used
    only as a key: nothing of Lightning is imported or run.
    """


def _lightning_globals() -> list[Any]:
    names = [
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
        "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    ]
    # each stand-in carries the Lightning name (safe loading checks the name of what it builds)
    return [(type(name.rpartition(".")[2], (LightningName,), {"__module__": name.rpartition(".")[0]}), name)
            for name in names]


# Lightning writes `hyper_parameters` as its AttributeDict, a dict subclass that only adds
# attribute access (its home moved over the releases; a file names the one that wrote it).
# A protocol-2 pickle builds it as NEWOBJ(class) then SETITEMS; torch's weights-only
# unpickler runs SETITEMS only on an exact dict (not on a subclass, even an allowed one), so
# each name maps to `dict` itself: the hyper-parameters load as a plain dict and nothing of
# Lightning is imported or run.
LIGHTNING_ATTRIBUTE_DICTS = (
    "pytorch_lightning.utilities.parsing.AttributeDict",  # Lightning 1.0 - 2.1
    "lightning.pytorch.utilities.parsing.AttributeDict",  # 2.0 - 2.1, package `lightning`
    "lightning_fabric.utilities.data.AttributeDict",  # 2.2 on
    "lightning.fabric.utilities.data.AttributeDict",  # 2.2 on, package `lightning`
)

SAFE_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_scalar_globals(), *_lightning_globals(),
                           *((dict, name) for name in LIGHTNING_ATTRIBUTE_DICTS)]
_REFUSED = (
    re.compile(r"GLOBAL ([\w.]+) (?:was not an allowed global|whose module)"),
    re.compile(r"but got <class '([\w.]+)'>"),
    re.compile(r"unrecognized function (.+?)(?: which belongs|$)", re.M),
)


_OPCODES = {ord(op.code.encode("latin-1")): op.name for op in pickletools.opcodes}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """Safe loading refused the file because unpickling it could run code; nothing from it ran."""


def _refused_name(err: Exception) -> str | None:
    """The global that weights-only unpickling refused, from torch's message."""
    text = str(err)
    if "Weights only load failed" not in text:
        return None
    return next((m.group(1) for pattern in _REFUSED if (m := pattern.search(text))), None)


def load_torch(path: Path, needs: str = "its state dict") -> object:
    """Load a torch pickle without running code (``weights_only`` plus ``SAFE_GLOBALS``).

    ``needs`` says what conversion reads (for the error when the file holds other objects).
    """
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, pickle.UnpicklingError) as err:
        if "Weights only load failed" in str(err):
            raise _unsafe(path, err, needs) from err
        raise ValueError(
            f"{path}: cannot read this as a PyTorch weights file ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}). The file may be "
            "truncated or corrupt: delete it and download again, or check its `format`."
        ) from err


def _unsafe(path: Path, err: Exception, needs: str) -> UnsafePickleError:
    """The refusal of weights-only loading, in words: what was refused and what to do."""
    refused = _refused_name(err)
    if refused is None:
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        what = found.group(1).strip() if found else "an instruction it does not allow"
        if opcode := re.fullmatch(r"Unsupported operand (\d+)", what):
            what += f", the pickle opcode {_OPCODES.get(int(opcode.group(1)), '?')}"
        return UnsafePickleError(
            f"{path}: safe (weights-only) loading refuses this pickle ({what}): it holds pickle "
            "instructions that a weights file written by torch.save never needs and that could run "
            "code; nothing from the file was run. Do not load it with weights_only=False unless you "
            f"trust its source; if you do, save just {needs} again with torch.save's defaults."
        )
    return UnsafePickleError(
        f"{path}: names the Python global {refused}, which safe (weights-only) loading refuses "
        "because unpickling it could run code; nothing from the file was run. The file is not "
        f"corrupt: downloading it again will not help. Conversion reads only {needs}: if you trust "
        "the file, load it once with torch.load(..., weights_only=False), torch.save just that part "
        f"to a new file, and set the model's `path:` to it; if {refused} is plain data, add it to "
        "SAFE_GLOBALS in medtransfer/weights/base.py."
    )


def tensor_mapping(obj: object, entry: str | None, path: Path) -> dict[str, torch.Tensor]:
    """``obj[entry]`` (or ``obj`` itself) as a state dict of tensors."""
    if entry is not None:
        if not isinstance(obj, dict) or entry not in obj:
            found = few(obj) if isinstance(obj, dict) else f"a {type(obj).__name__}"
            raise ValueError(f"{path}: expected a dict with a {entry!r} entry, found {found}")
        obj = obj[entry]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, found a {type(obj).__name__}"
                         + (f" with {few(obj)}" if isinstance(obj, dict) else ""))
    return obj


def split_prefix(
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
            f"{few(unmatched)}. Is the `format` right for this file?"
        )
    return Converted(state_dict=kept, dropped=dropped)


# --- detection ------------------------------------------------------------------------------

class Probe:
    """A weights source as detection sees it; each view is read once, when first asked for.

    ``path`` may be a file, a folder or a TensorFlow checkpoint prefix (no such file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.torch_error: str = ""
        self.unsafe: UnsafePickleError | None = None  # set when safe loading refused the file

    @cached_property
    def head(self) -> bytes:
        """The first 256 bytes (empty for anything but a file)."""
        if not self.path.is_file():
            return b""
        with open(self.path, "rb") as handle:
            return handle.read(256)

    @cached_property
    def zip_names(self) -> list[str] | None:
        """Member names when the file is a zip (torch.save writes zips too), else None."""
        if not self.path.is_file() or not zipfile.is_zipfile(self.path):
            return None
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.namelist()
        except zipfile.BadZipFile:
            return None

    @cached_property
    def torch_object(self) -> object | None:
        """The safely loaded torch pickle, or None (the reason in ``torch_error``)."""
        if not self.path.is_file():
            return None
        try:
            return load_torch(self.path)
        except Exception as err:  # a probe: whatever fails, the answer is "not a torch pickle"
            self.torch_error = f"{type(err).__name__}: {err}"
            if isinstance(err, UnsafePickleError):
                self.unsafe = err
            return None


def describe_top(obj: object) -> dict[str, str] | str:
    """Top-level entries and their types (a state dict is summarised by its size)."""
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): type(v).__name__ for k, v in obj.items()}
    if isinstance(obj, dict):
        return f"state dict of {len(obj)} tensors"
    return type(obj).__name__


def prefix_counts(keys: Iterable[str], depth: int = 2) -> dict[str, int]:
    return dict(Counter(".".join(k.split(".")[:depth]) for k in keys).most_common(12))


def detect_prefixed(probe: Probe, entry: str | None, marker: str) -> dict[str, Any] | None:
    """Summary of a torch file whose ``entry`` (or top level) has keys starting with ``marker``."""
    obj = probe.torch_object
    state = obj.get(entry) if entry is not None and isinstance(obj, dict) else obj
    if entry is None and isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None  # a top-level state dict holds tensors only
    if not isinstance(state, dict) or not any(str(k).startswith(marker) for k in state):
        return None
    keys = list(map(str, state))
    return {"container": "torch pickle", "top_level": describe_top(obj), "entry": entry,
            "count": len(keys), "keys": sample_keys(keys), "prefixes": prefix_counts(keys)}


# --- demo writing ---------------------------------------------------------------------------

def seeded_normal(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """Normal draws from numpy's seeded generator: the same bytes on every machine (torch's
    own ``randn`` differs in the last bits between CPUs with and without AVX2)."""
    draws = np.random.RandomState(seed % 2**32).standard_normal(shape) * scale
    return torch.from_numpy(draws.astype(np.float32))


def mlp_head(seed: int, prefix: str, dims: list[int]) -> dict[str, torch.Tensor]:
    """An MLP head ``prefix{0,2,...}`` (Linear, ReLU, Linear...) as in MoCo/SwAV files."""
    out = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        out[f"{prefix}{2 * i}.weight"] = seeded_normal(seed + i, b, a, scale=0.01)
        out[f"{prefix}{2 * i}.bias"] = torch.zeros(b)
    return out


HEADS = ("fc.", "classifier.")  # the ImageNet classifier of a ResNet / a DenseNet


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The backbone (its classifier ``fc.*`` / ``classifier.*`` left out) under ``prefix``."""
    return {prefix + k: v for k, v in state.items() if not k.startswith(HEADS)}


def head_of(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """The classifier name of a full torchvision state dict (``fc`` or ``classifier``) and the
    width of the pooled features that feed it (what a demo's projection head takes)."""
    for head in HEADS:
        if head + "weight" in state:
            return head.rstrip("."), int(state[head + "weight"].shape[1])
    raise ValueError(f"no classifier ({', '.join(h + 'weight' for h in HEADS)}) in the state dict")
