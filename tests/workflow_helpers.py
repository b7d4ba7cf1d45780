"""Run the real Snakemake workflow in a scratch copy of the repository's workflow files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO

# No config/schema.yaml: the rules validate against the package's schema, wherever they run.
WORKFLOW_FILES = ["Snakefile", "workflow", "envs"]


def make_workdir(tmp: Path, config: dict | None = None) -> Path:
    """Copy the workflow into ``tmp``; write ``config`` as config/config.yaml (or the demo's)."""
    for name in WORKFLOW_FILES:
        src, dst = REPO / name, tmp / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (tmp / "config").mkdir(parents=True, exist_ok=True)
    if config is None:
        shutil.copy(REPO / "config" / "config.yaml", tmp / "config" / "config.yaml")
    else:
        (tmp / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--quiet", "rules"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


TEST_CONFIG = REPO / ".test" / "config.yaml"


def tiny_config(models: list[str] | None = None, **overrides) -> dict:
    """The CI study of ``.test/config.yaml``, restricted to ``models`` (all when None)."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    if models is not None:
        config["models"] = {m: config["models"][m] for m in models}
    config.update(overrides)
    return config


def two_model_config() -> dict:
    """The tiny study cut to two models and one dataset (the resume and SLURM tests)."""
    config = tiny_config(["supervised", "moco-v2"])
    config["datasets"] = {"demo_cxr": config["datasets"]["demo_cxr"]}
    return config
