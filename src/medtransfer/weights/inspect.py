"""What a weights source holds and which format it likely is: each format's ``detect``,
tried in ``FORMATS`` order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medtransfer.weights.base import Probe, describe_top
from medtransfer.weights.formats import FORMATS


def detect(path: str | os.PathLike | Probe) -> tuple[str | None, dict[str, Any]]:
    """(format name, summary) of the first format that recognises ``path``; (None, {}) if none."""
    probe = path if isinstance(path, Probe) else Probe(path)
    for record in FORMATS.values():
        info = record.detect(probe)
        if info is not None:
            return record.name, info
    return None, {}


def _exists(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".index").is_file()


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """A summary dict of ``path``: its likely ``format`` and what it holds (ValueError for
    files that are not even a container medtransfer reads)."""
    path = Path(path)
    if not _exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    probe = Probe(path)
    name, info = detect(probe)
    if name is not None:
        return {"format": name, **info}
    if probe.unsafe is not None:
        raise probe.unsafe
    if probe.torch_object is not None:
        return {"format": "unknown", "container": "torch pickle", "top_level": describe_top(probe.torch_object)}
    raise ValueError(f"{path}: not a file format medtransfer knows ({probe.torch_error or 'not a file'}); "
                     f"formats: {sorted(FORMATS)}")
