"""The format records: one registry from which convert, demo, inspect and the model registry
derive; no import cycles; no torch for the registry; wrong formats and PIRL's numpy scalars
explained; multi-file sources hashed."""

from __future__ import annotations

import ast
import datetime
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from conftest import REPO
from medtransfer.config import load_schema
from medtransfer.weights import tfbundle
from medtransfer.weights.backbones import load_weights
from medtransfer.weights.convert import convert_file
from medtransfer.weights.demo import random_resnet50
from medtransfer.weights.formats import ARCHITECTURES, BACKBONES, FORMATS, NORMALISATIONS, PADDINGS, get_format
from medtransfer.weights.inspect import describe, detect
from medtransfer.weights.sources import source_files, source_sha256

WEIGHTS = REPO / "src" / "medtransfer" / "weights"
MODULES = sorted(f"medtransfer.weights.{p.stem}" for p in WEIGHTS.glob("*.py") if p.stem != "__main__")


# --- the registry ---------------------------------------------------------------------------

def test_every_record_names_a_module_with_the_three_functions() -> None:
    for name, record in FORMATS.items():
        module = record.implementation()
        assert record.name == name
        assert all(callable(getattr(module, fn, None)) for fn in ("convert", "write_demo", "detect")), name


def test_registry_values_match_the_models_and_the_config_schema() -> None:
    assert all(set(record.paddings) <= set(PADDINGS) for record in BACKBONES.values())
    assert all((n.mean is None) == (n.std is None) for n in NORMALISATIONS.values())
    props = load_schema()["properties"]
    model = props["models"]["additionalProperties"]["properties"]
    assert model["format"]["enum"] == list(FORMATS)
    assert set(model["arch"]["enum"]) == set(ARCHITECTURES)
    assert set(model["normalisation"]["enum"]) == set(NORMALISATIONS)


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown weights format 'keras'; expected one of \['byol', 'lightning_moco', 'moco'"):
        get_format("keras")


def test_format_defaults_reach_models_and_converted_files(tmp_path: Path) -> None:
    from medtransfer.weights.registry import resolve_model

    own = resolve_model("mine", {"format": "simclr_tf", "path": "w/model.ckpt-1"})
    assert own.normalisation == "none"  # the format's default
    assert resolve_model("simclr-v1", {"format": "moco"}).normalisation == "imagenet"
    with pytest.raises(ValueError, match=r"format 'byol' holds only \('resnet50',\), not arch 'resnet18'"):
        resolve_model("byol", {"arch": "resnet18"})
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    meta = convert_file(tmp_path / "r18.pth", tmp_path / "out.pt", fmt="torchvision", arch="resnet18")
    assert meta.padding == "torch" and meta.mean == NORMALISATIONS["imagenet"].mean


# --- imports --------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    """medtransfer.weights modules imported anywhere in ``path`` (functions included, so a
    lazy import cannot hide a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found


def test_weights_modules_import_no_cycle_not_even_lazily() -> None:
    graph = {m: _imports(WEIGHTS / f"{m.rpartition('.')[2]}.py") for m in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module not in done:
            for dep in graph[module]:
                visit(dep, path + (module,))
            done.add(module)

    for module in MODULES:
        visit(module, ())
    derived = {"medtransfer.weights.formats", "medtransfer.weights.convert", "medtransfer.weights.demo",
               "medtransfer.weights.inspect", "medtransfer.weights.registry"}
    for record in FORMATS.values():  # a format module never reaches back to what is derived from it
        assert not graph[record.module] & derived, record.module


def test_each_module_imports_first_in_any_order() -> None:
    """Every module imported first into an interpreter without medtransfer, then the rest in
    forward and reverse order (torch stays loaded between rounds: it is not ours)."""
    script = textwrap.dedent(f"""
        import importlib, sys
        modules = {MODULES!r}
        for first in modules:
            rest = [m for m in modules if m != first]
            for order in (rest, rest[::-1]):
                for name in [n for n in sys.modules if n == "medtransfer" or n.startswith("medtransfer.")]:
                    del sys.modules[name]
                for module in [first, *order]:
                    importlib.import_module(module)
        print("ok", len(modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"ok {len(MODULES)}"


def test_registry_and_formats_do_not_import_torch() -> None:
    """``snakemake -n`` resolves the models through the registry; it must not pay for torch."""
    script = textwrap.dedent("""
        import sys
        from medtransfer.weights.registry import REGISTRY, resolve_model
        from medtransfer.weights.formats import FORMATS
        for name in REGISTRY:
            resolve_model(name, {"path": "x"})
        resolve_model("mine", {"format": "simclr_tf", "path": "w/model.ckpt-1"})
        print(sorted(m for m in ("torch", "torchvision", "tensorflow") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


# --- detection and wrong formats --------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per format, written by its record's demo writer (same random ResNet-50)."""
    folder = tmp_path_factory.mktemp("demo")
    state = random_resnet50(seed=5, calibrate=False)
    files = {}
    for name, record in FORMATS.items():
        files[name] = folder / f"{name}.weights"
        record.write_demo(state, files[name], seed=5)
    return files


def test_inspect_recognises_every_demo_file(demo_files: dict[str, Path]) -> None:
    for name, path in demo_files.items():
        found, info = detect(path)
        assert found == name, (name, info)
        assert info["count"] > 0 and 0 < len(info["keys"]) <= 8, name
    assert describe(demo_files["simclr_tf"])["checkpoint"] == "ResNet50_1x/model.ckpt-225206"


@pytest.mark.parametrize("actual, given", [
    ("moco", "byol"), ("moco", "torchvision"), ("simclr_tf", "pirl"), ("byol", "moco"), ("pirl", "simclr_tf"),
])
def test_wrong_format_names_the_right_one_briefly(demo_files: dict[str, Path], tmp_path: Path,
                                                  actual: str, given: str) -> None:
    with pytest.raises(ValueError) as caught:
        convert_file(demo_files[actual], tmp_path / "out.pt", fmt=given)
    message = str(caught.value)
    assert f"cannot convert it as format `{given}`" in message
    assert f"looks like format `{actual}`" in message and f"Set `format: {actual}`" in message
    shown = message.split("It looks like", 1)[1].split("e.g. ", 1)[1]
    assert shown.count("', '") <= 7  # at most 8 example keys
    assert len(message) < 1200, message
    assert not (tmp_path / "out.pt").exists()


def test_right_format_with_wrong_contents_keeps_its_own_error(tmp_path: Path) -> None:
    state = {"module.encoder_q.layer1.0.conv1.weight": torch.zeros(1), "module.encoder_q.extra": torch.zeros(1)}
    torch.save({"state_dict": state}, tmp_path / "moco.pth")
    with pytest.raises(ValueError, match=r"moco\.pth: the weights do not fit a resnet50 backbone"):
        convert_file(tmp_path / "moco.pth", tmp_path / "out.pt", fmt="moco")


# --- PIRL: numpy scalars in the optimizer state ---------------------------------------------------

def _pirl_checkpoint(path: Path, **extra: object) -> dict[str, torch.Tensor]:
    """PyContrast's layout: model (used), model_ema, contrast, optimizer with numpy scalars,
    opt (a Namespace in the real file), epoch."""
    backbone = torchvision.models.resnet18().state_dict()
    model = {f"module.encoder.{k}": v for k, v in backbone.items() if not k.startswith("fc.")}
    model["module.head.0.weight"] = torch.zeros(128, 512)
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [
        {"lr": np.float64(0.0125), "initial_lr": np.float64(0.03), "step": np.int64(120),
         "momentum": 0.9, "weight_decay": 1e-4, "params": [0]}]}
    torch.save({"model": model, "model_ema": model, "contrast": {"memory": torch.zeros(4, 128)},
                "optimizer": optimizer, "epoch": np.int64(800), **extra}, path)
    return backbone


def test_pirl_with_numpy_scalars_converts(tmp_path: Path) -> None:
    backbone = _pirl_checkpoint(tmp_path / "PIRL.pth")
    names = torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "PIRL.pth")
    assert "numpy._core.multiarray.scalar" in names or "numpy.core.multiarray.scalar" in names
    meta = convert_file(tmp_path / "PIRL.pth", tmp_path / "out.pt", fmt="pirl", arch="resnet18")
    net, _ = load_weights(tmp_path / "out.pt")
    assert torch.equal(net.state_dict()["layer4.1.conv2.weight"], backbone["layer4.1.conv2.weight"])
    assert meta.dropped == {"module.head.0.weight": "PIRL projection head"}


def test_pirl_written_under_numpy_1_converts(tmp_path: Path) -> None:
    """numpy 1 pickles its scalars as numpy.core.multiarray.scalar (numpy 2: numpy._core)."""
    _pirl_checkpoint(tmp_path / "new.pth")
    legacy = tmp_path / "legacy.pth"
    torch.save(torch.load(tmp_path / "new.pth", weights_only=False), legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    assert data.count(b"numpy._core.multiarray\nscalar") == 1
    legacy.write_bytes(data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    convert_file(legacy, tmp_path / "out.pt", fmt="pirl", arch="resnet18")


def test_other_objects_are_refused_by_full_name_and_not_blamed_on_the_download(tmp_path: Path) -> None:
    _pirl_checkpoint(tmp_path / "PIRL.pth", saved_on=datetime.date(2020, 3, 1))
    with pytest.raises(ValueError, match=r"PIRL\.pth: names the Python global datetime\.date, which safe "
                                         r"\(weights-only\) loading refuses.*not corrupt.*reads only its 'model' "
                                         r"entry.*torch\.save just that part.*`path:`") as caught:
        convert_file(tmp_path / "PIRL.pth", tmp_path / "out.pt", fmt="pirl", arch="resnet18")
    assert "download it again" not in str(caught.value) and "delete it" not in str(caught.value)


# --- sources: one file or a checkpoint's files -----------------------------------------------

def test_single_file_hash_is_the_file_hash(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(b"weights")
    assert source_files(tmp_path / "w.pth") == [tmp_path / "w.pth"]
    assert source_sha256(tmp_path / "w.pth") == hashlib.sha256(b"weights").hexdigest()


def test_checkpoint_hash_covers_its_files_wherever_it_lies(tmp_path: Path) -> None:
    tensors = {"a": np.arange(3, dtype=np.float32), "b": np.ones((2, 2), np.float32)}
    for folder in ("one", "two"):
        tfbundle.write_checkpoint(tmp_path / folder / "model.ckpt-7", tensors)
    prefix = tmp_path / "one" / "model.ckpt-7"
    index, data = prefix.with_name("model.ckpt-7.index"), prefix.with_name("model.ckpt-7.data-00000-of-00001")
    assert source_files(prefix) == source_files(index) == source_files(data) == source_files(prefix.parent)
    assert source_files(prefix) == [data, index]  # sorted by name
    listing = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n" for f in (data, index))
    want = hashlib.sha256(listing.encode()).hexdigest()
    assert {source_sha256(p) for p in (prefix, index, prefix.parent, tmp_path / "two" / "model.ckpt-7")} == {want}
    data.write_bytes(data.read_bytes()[:-1] + b"\x00")
    assert source_sha256(prefix) != want


def test_missing_source_is_named(tmp_path: Path) -> None:
    assert source_files(tmp_path / "model.ckpt-9") == [tmp_path / "model.ckpt-9"]
    with pytest.raises(FileNotFoundError, match=r"model\.ckpt-9 not found: expected a file.*model\.ckpt-9\.index"):
        source_sha256(tmp_path / "model.ckpt-9")
    with pytest.raises(FileNotFoundError, match=r"model\.ckpt-9 not found"):
        convert_file(tmp_path / "model.ckpt-9", tmp_path / "out.pt", fmt="simclr_tf")


def test_cli_lists_formats_with_their_defaults() -> None:
    done = subprocess.run([sys.executable, "-m", "medtransfer.weights", "formats"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert list(rows) == list(FORMATS)
    assert "normalisation none" in rows["simclr_tf"] and "tf_same_maxpool" in rows["simclr_tf"]
