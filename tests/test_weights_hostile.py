"""Hostile weights files: a pickle that would run code is refused by every loader and CLI.

Each payload, unpickled, creates a marker file. Every (payload, container, protocol) file
is first shown to run under a plain unpickler (the marker appears), then passed to every
reader: ``convert_file`` (what the workflow's convert_weights script calls) with every
format, ``models.load_weights``, ``inspect.describe`` and the command line's ``inspect``
and ``convert``, and the LPIPS backbone reader. None may create the marker, and the error must
say the file was refused. The same holds for a payload inside a Lightning checkpoint's
``AttributeDict`` hyper-parameters, the one Lightning container that safe loading builds.
"""

import copyreg
import functools
import io
import logging
import operator
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import dill
import numpy as np
import pytest
import torch

from conftest import REPO
from fakes import lightning_class
from medtransfer.protocols.reconstruct.perceptual import read_features
from medtransfer.weights.__main__ import main
from medtransfer.weights.backbones import load_weights
from medtransfer.weights.base import LIGHTNING_ATTRIBUTE_DICTS
from medtransfer.weights.convert import convert_file
from medtransfer.weights.formats import FORMATS
from medtransfer.weights.inspect import describe

REFUSED = r"(could run code|refus)"


class Call:
    """Pickles as ``fn(*args)``: unpickling calls ``fn``. ``fn`` may itself be a Call."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args

    def __call__(self, *args):  # pickle checks that the first item of __reduce__ is callable
        raise AssertionError("never called while pickling")


def _payload(name: str, marker: Path) -> Call:
    m = str(marker)
    return {
        # direct: a builtin that writes a file, or runs source code
        "open": lambda: Call(open, m, "w"),
        "exec": lambda: Call(exec, f"open({m!r}, 'w').close()"),
        # copyreg's reconstructor calls base.__init__(obj, state): a FileHandler opens its file
        "copyreg": lambda: Call(copyreg._reconstructor, logging.FileHandler, logging.FileHandler, m),
        # a partial object whose func is rebuilt from state, then called
        "partial": lambda: Call(functools.partial(open, m, "w")),
        # attrgetter fetches a bound method (Path.touch), a second call runs it
        "attrgetter": lambda: Call(Call(operator.attrgetter("touch"), Path(m))),
        # dill pickles a lambda by value (its code object), then calls it
        "dill_lambda": lambda: Call(eval(f"lambda: open({m!r}, 'w').close()")),  # noqa: S307
    }[name]()


PAYLOADS = ["open", "exec", "copyreg", "partial", "attrgetter", "dill_lambda"]
CONTAINERS = ["torch_zip", "torch_legacy", "pickle", "byol_dill"]
PROTOCOLS = range(6)


def _write(container: str, payload: Call, protocol: int, path: Path, use_dill: bool) -> None:
    module = dill if use_dill or container == "byol_dill" else pickle
    if container.startswith("torch"):
        torch.save({"state_dict": payload}, path, pickle_module=module, pickle_protocol=protocol,
                   _use_new_zipfile_serialization=container == "torch_zip")
        return
    obj = ({"experiment_state": payload, "step": 0, "rng": np.zeros(2, np.uint32)}
           if container == "byol_dill" else {"state_dict": payload})
    with open(path, "wb") as handle:
        module.dump(obj, handle, protocol=protocol)


def _plain_load(container: str, path: Path) -> None:
    """What a careless reader does: torch.load(weights_only=False) or pickle.load."""
    if container.startswith("torch"):
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as handle:
            pickle.load(handle)


def _readers(path: Path, out: Path):
    """(name, call) of every way medtransfer reads a weights file."""
    for fmt in FORMATS:
        yield f"convert_file --format {fmt}", lambda fmt=fmt: convert_file(path, out, fmt=fmt)
        yield f"cli convert --format {fmt}", lambda fmt=fmt: _cli("convert", "--format", fmt, str(path), str(out))
    yield "load_weights", lambda: load_weights(path)
    yield "lpips read_features", lambda: read_features(path, "alex")
    yield "describe", lambda: describe(path)
    yield "cli inspect", lambda: _cli("inspect", str(path))


def _cli(*argv: str) -> None:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stderr", err)
        code = main(list(argv))
    if code != 0:
        raise ValueError(err.getvalue())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_pickle_is_refused_everywhere(payload, container, protocol, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "weights.bin"
    _write(container, _payload(payload, marker), protocol, path, use_dill=payload == "dill_lambda")
    _plain_load(container, path)
    assert marker.exists(), "the payload must run under a plain unpickler"
    marker.unlink()
    refused_by = []
    for name, read in _readers(path, tmp_path / "out.pt"):
        with pytest.raises((ValueError, OSError)) as caught:
            read()
        assert not marker.exists(), f"{name} ran the payload"
        if name in ("describe", "cli inspect", "load_weights", "lpips read_features"):
            assert str(path) in str(caught.value), name
            assert caught.match(REFUSED), f"{name}: {caught.value}"
        refused_by.append(re.search(REFUSED, str(caught.value)) is not None)
    assert not (tmp_path / "out.pt").exists()
    # the format that reads this container natively says why: the file was refused
    assert any(refused_by)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_pickle_in_lightning_hyper_parameters_is_refused_everywhere(payload, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    path = tmp_path / "mimic.ckpt"
    attribute_dict = lightning_class(monkeypatch, LIGHTNING_ATTRIBUTE_DICTS[0])  # as if Lightning wrote it
    checkpoint = {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.0.6", "state_dict": {},
                  "hyper_parameters": attribute_dict(arch="densenet121", lr=_payload(payload, marker))}
    torch.save(checkpoint, path, pickle_module=dill if payload == "dill_lambda" else pickle)
    torch.load(path, weights_only=False)
    assert marker.exists(), "the payload must run under a plain unpickler"
    marker.unlink()
    monkeypatch.undo()  # Lightning is gone again
    for name, read in _readers(path, tmp_path / "out.pt"):
        with pytest.raises((ValueError, OSError)) as caught:
            read()
        assert not marker.exists(), f"{name} ran the payload"
        if name in ("describe", "cli inspect", "load_weights", "lpips read_features"):
            assert str(path) in str(caught.value) and caught.match(REFUSED), f"{name}: {caught.value}"
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.slow  # two fresh interpreters importing torch; the in-process CLI is refused in _readers above
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_in_a_fresh_process_refuses(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "PIRL.pth"
    torch.save({"model": _payload("open", marker)}, path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    for argv in (["inspect", str(path)], ["convert", "--format", "pirl", str(path), str(tmp_path / "o.pt")]):
        proc = subprocess.run([sys.executable, "-m", "medtransfer.weights", *argv], capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 1 and re.search(r"names the Python global (io|builtins)\.open", proc.stderr), \
            proc.stderr
        assert "nothing from the file was run" in proc.stderr and not marker.exists()
