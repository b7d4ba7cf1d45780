"""Every file the package writes goes through here: atomic and byte-reproducible.

Atomic: the bytes go to a temporary file in the target's folder, which is renamed into
place only when it is complete (``atomic_path``), so a crash, a full disk or a
killed job never leaves a truncated file under the final name.

Reproducible: the same content gives the same bytes on every run and machine (same
library versions), so a file made from a seed hashes the same wherever it is made.
What varies by default and is fixed here:

- zip members written with ``ZipFile.writestr`` or ``ZipFile.write`` carry the time (or
  the file's modification time) and the writing platform: every member here is dated
  1980-01-01 00:00:00 with fixed permissions (``np.savez`` happens to do so on Python
  3.11, but that is not promised);
- ``torch.save`` to a path names the zip's root folder after the (temporary) file
  name: it is saved to a buffer instead, whose root folder is always ``archive``;
- PDF figures carry a creation date: none is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only on success.

    A crash or exception leaves ``target`` untouched (and no partial file that looks
    finished), because the rename is the last step and is atomic on one filesystem.
    The temporary name keeps the target's suffix so libraries that pick a format by
    extension (numpy, torch, PIL) behave.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".partial{''.join(target.suffixes)}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; finished files get normal modes
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def zip_info(name: str) -> zipfile.ZipInfo:
    """A zip member header that does not depend on when or where it is written."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.create_system = 3  # unix, whatever the writing platform
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED
    return info


def write_zip(target: str | os.PathLike, members: Iterable[tuple[str, bytes]]) -> None:
    """A stored (uncompressed) zip of ``(name, bytes)`` members, in the order given."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name, data in members:
            archive.writestr(zip_info(name), data)


def save_npz(target: str | os.PathLike, **arrays: Any) -> None:
    """``np.savez`` with fixed member dates (no pickles); streamed, so large arrays are not copied."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(zip_info(f"{name}.npy"), "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(value), allow_pickle=False)


def save_npy(target: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:  # a handle: np.save adds .npy to names
        np.save(handle, array, allow_pickle=False)


@contextlib.contextmanager
def npy_memmap(target: str | os.PathLike, dtype: Any, shape: tuple[int, ...]) -> Iterator[np.memmap]:
    """A new ``.npy`` file as a writable memory map (filled by the caller, so a large array
    never needs to fit in memory), moved into place only when the block finishes."""
    with atomic_path(target) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        array.flush()
        del array


def torch_bytes(obj: object, **kwargs: Any) -> bytes:
    """``torch.save(obj)`` as bytes; the same object gives the same bytes (see the module doc)."""
    import torch  # torch-free jobs (the report, the index) write through this module too

    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def save_torch(target: str | os.PathLike, obj: object) -> None:
    """``torch.save(obj)`` to ``target`` atomically, the same object giving the same bytes."""
    write_bytes(target, torch_bytes(obj))


def write_csv(target: str | os.PathLike, frame: Any) -> None:
    """A pandas frame as CSV, without its index."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on the Agg backend: no display needed, the same pixels everywhere."""
    import matplotlib  # here, not at the top: keeps matplotlib out of the jobs that draw nothing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): the backend is fixed when pyplot loads

    return plt


def save_figure(fig: Any, target: str | os.PathLike, fmt: str = "png", dpi: int = 120) -> None:
    """A matplotlib figure; PDFs without a creation date."""
    metadata: Mapping[str, Any] | None = {"CreationDate": None} if fmt == "pdf" else None
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, metadata=metadata)


def save_image(target: str | os.PathLike, pixels: np.ndarray, fmt: str, **options: Any) -> None:
    """A uint8 image array as a PNG or JPEG file (PIL writes no dates into either)."""
    from PIL import Image  # only the demo's generated images need it

    with atomic_path(target) as tmp:
        Image.fromarray(pixels).save(tmp, format=fmt, **options)
