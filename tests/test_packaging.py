"""The built wheel works outside the checkout: schema and published numbers ship as package data.

The checkout's package is built into a wheel, installed into a scratch folder and run from
another folder with only that folder on PYTHONPATH (the venv still supplies the dependencies),
as a new user would after ``pip install``: the config resolves, ``python -m medtransfer.cost``
prices a study, and the data and weights commands start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

# What setuptools reads to build the wheel (pyproject.toml names README.md as the readme).
BUILD_FILES = ["pyproject.toml", "README.md", "src"]
PACKAGE_DATA = ["medtransfer/schema.yaml", "medtransfer/reporting/published/anton2022.csv"]


def _pip(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, site): the checkout's wheel and the folder it was installed into."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy: pip builds in place, and a stale build/ in the checkout could
    # carry modules that no longer exist into the wheel.
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(REPO / name, source / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(source), cwd=tmp)
    (wheel,) = (tmp / "dist").glob("medtransfer-*.whl")
    _pip("install", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(wheel), cwd=tmp)
    return wheel, tmp / "site"


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python *args`` in ``cwd`` seeing the installed wheel, not the checkout's src/."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"python {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _schema_defaults() -> dict:
    """Defaults read from the checkout's schema file directly, not through the package."""
    props = yaml.safe_load((REPO / "src" / "medtransfer" / "schema.yaml").read_text())["properties"]
    dataset = props["datasets"]["additionalProperties"]["properties"]
    return {"data_root": props["data_root"]["default"], "deterministic": props["deterministic"]["default"],
            "metric": dataset["metric"]["default"]}


def test_wheel_holds_every_module_and_the_package_data(installed) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    src = REPO / "src"
    modules = {p.relative_to(src).as_posix() for p in (src / "medtransfer").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set(), "modules missing from the wheel (a folder without __init__.py?)"
    assert set(PACKAGE_DATA) <= names, f"package data missing from the wheel: {set(PACKAGE_DATA) - names}"


def test_installed_wheel_resolves_the_demo_config_from_another_folder(installed, tmp_path: Path) -> None:
    _, site = installed
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert "data_root" not in demo and "metric" not in demo["datasets"]["demo_cxr"]  # defaults to fill
    code = ("import json, sys, yaml, medtransfer, medtransfer.config as c; "
            f"r = c.resolve(yaml.safe_load(open({str(REPO / 'config' / 'config.yaml')!r}))); "
            "print(json.dumps({'package': medtransfer.__file__, 'schema': str(c.SCHEMA), "
            "'data_root': r['data_root'], 'deterministic': r['deterministic'], "
            "'metric': r['datasets']['demo_cxr']['metric']}))")
    out = json.loads(_run(site, tmp_path, "-c", code).stdout)
    assert Path(out.pop("package")).is_relative_to(site) and Path(out.pop("schema")).is_relative_to(site)
    assert out == _schema_defaults()


def test_installed_wheel_prices_the_paper_study(installed, tmp_path: Path) -> None:
    _, site = installed
    out = _run(site, tmp_path, "-m", "medtransfer.cost", "--configfile", str(REPO / "config" / "paper.yaml")).stdout
    assert "GPU-hours per stage:" in out and "total" in out


def test_installed_wheel_reads_the_published_numbers(installed, tmp_path: Path) -> None:
    _, site = installed
    code = ("from medtransfer.reporting import summary as s; "
            "print(s.PUBLISHED); print(len(s.published()))")
    path, rows = _run(site, tmp_path, "-c", code).stdout.split()
    assert Path(path).is_relative_to(site)
    assert int(rows) == len(pd.read_csv(REPO / "src" / "medtransfer" / "reporting" / "published" / "anton2022.csv")) > 0


def test_installed_wheel_runs_the_data_and_weights_commands(installed, tmp_path: Path) -> None:
    _, site = installed
    assert "download:" in _run(site, tmp_path, "-m", "medtransfer.data", "describe", "chexpert").stdout
    assert "usage: python -m medtransfer.weights" in _run(site, tmp_path, "-m", "medtransfer.weights", "--help").stdout
