"""What a weights source is on disk, and its sha256.

A source is one file (a ``.pth``, ``.pkl`` or the SimCLR zip) or a TensorFlow checkpoint,
which is several files: ``<prefix>.index`` and ``<prefix>.data-NNNNN-of-MMMMM``. A
checkpoint may be named by its prefix (``.../model.ckpt-225206``, a path that is no file),
its ``.index``, one of its data shards, or the folder that holds it.

This module imports no torch: the workflow can list a source's files while it builds the DAG.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from medtransfer.runtime import sha256_file
from medtransfer.weights.tfbundle import checkpoint_prefix

_CHECKPOINT_PART = re.compile(r"\.(?:index|data-\d{5}-of-\d{5})$")


def _is_checkpoint_part(path: Path) -> bool:
    return _CHECKPOINT_PART.search(path.name) is not None


def source_files(path: str | os.PathLike) -> list[Path]:
    """The files that make up the source at ``path``, sorted by name.

    A plain file is itself; a TensorFlow checkpoint is its ``.index`` and data shards. A path
    that is neither (a missing file) comes back as given, so a caller that lists inputs
    reports it missing under the name the user wrote.
    """
    path = Path(path)
    if path.is_file() and not _is_checkpoint_part(path):
        return [path]
    if not path.is_dir() and not path.is_file() and not path.with_name(path.name + ".index").is_file():
        return [path]
    prefix = checkpoint_prefix(path)  # a folder must hold exactly one *.index
    index = prefix.with_name(prefix.name + ".index")
    shards = sorted(prefix.parent.glob(prefix.name + ".data-*"))
    return sorted([index, *shards]) if index.is_file() else [path]


def source_sha256(path: str | os.PathLike) -> str:
    """sha256 of a source: of the file itself, or for a multi-file checkpoint of the lines
    ``<sha256 of file>  <file name>\\n`` over its files in name order (``sha256sum``'s
    output), so the value does not depend on where the checkpoint lies."""
    files = source_files(path)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"weights source {path} not found: expected a file, a folder holding one TensorFlow checkpoint, "
            f"or a checkpoint prefix with {Path(path).name}.index beside it"
        )
    if files == [Path(path)]:
        return sha256_file(files[0])
    listing = "".join(f"{sha256_file(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()
