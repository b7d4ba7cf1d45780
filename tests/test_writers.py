"""Every artefact writer is atomic: a failure mid-write leaves the old file (or none) and no
temporary file; and no module writes a result file except through ``medtransfer.writers``."""

import errno
import os
import re

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from medtransfer import writers

# Direct writes allowed outside writers.py, each for a reason.
ALLOWED = {
    "weights/download.py": "the download goes to <out>.part (resumable across runs), renamed when verified",
    "weights/tfbundle.py": "data and index written inside atomic_path blocks, the index renamed last",
    "weights/simclr.py": "extracts zip members into a temporary folder, never to a result path",
}
WRITE_CALLS = re.compile(r"np\.savez|np\.save\(|torch\.save\(|\.to_csv\(|\.savefig\(|open_memmap|\.dump\(|"
                         r"\.write_text\(|\.write_bytes\(|open\([^)]*['\"][wa]b?\+?['\"]")


def test_only_the_writers_module_writes_files():
    src = REPO / "src" / "medtransfer"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        name = path.relative_to(src).as_posix()
        if name == "writers.py" or name in ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = re.sub(r"``[^`]*(``|$)", "", line.split("#")[0])  # code quoted in docstrings is no call
            if WRITE_CALLS.search(code):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == [], "write through medtransfer.writers:\n" + "\n".join(offenders)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


WRITES = {
    "save_npz": (lambda p: writers.save_npz(p, a=np.arange(10)), "numpy.lib.format.write_array"),
    "save_npy": (lambda p: writers.save_npy(p, np.arange(10)), "numpy.save"),
    "write_csv": (lambda p: writers.write_csv(p, pd.DataFrame({"a": [1]})), "pandas.DataFrame.to_csv"),
    "write_zip": (lambda p: writers.write_zip(p, [("a", b"x" * 100)]), "zipfile.ZipFile.writestr"),
    "save_torch": (lambda p: writers.save_torch(p, {"a": 1}), "medtransfer.writers.torch_bytes"),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(name, tmp_path, monkeypatch):
    write, target = WRITES[name]
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    monkeypatch.setattr(target, _disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        write(out)
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    monkeypatch.undo()
    write(out)
    assert out.read_bytes() != b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_an_interrupted_memmap_leaves_nothing(tmp_path):
    out = tmp_path / "cache.npy"
    with pytest.raises(KeyboardInterrupt):
        with writers.npy_memmap(out, np.uint8, (4, 2)) as array:
            array[0] = 1
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with writers.npy_memmap(out, np.uint8, (4, 2)) as array:
        array[:] = 7
    assert (np.load(out) == 7).all()
