"""Run the real Snakemake workflow in a scratch copy of the repository's workflow files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO

WORKFLOW_FILES = ["Snakefile", "workflow", "envs", "config/schema.yaml"]


def make_workdir(tmp: Path, config: dict | None = None) -> Path:
    """Copy the workflow into ``tmp``; write ``config`` as config/config.yaml (or the demo's)."""
    for name in WORKFLOW_FILES:
        src, dst = REPO / name, tmp / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
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


def tiny_config(models: list[str], **overrides) -> dict:
    """A study small enough for CI: tiny images, few images, minimal protocol settings."""
    config = {
        "study": "tiny", "seed": 3, "image_size": 32, "precision": "fp32", "device": "cpu",
        "models": {m: {"url": f"file:resources/demo/weights/{m}/{_FILES[m]}", "demo": True} for m in models},
        "datasets": {
            "demo_cxr": {"kind": "demo_cxr", "split": "given", "demo": {"n_images": 32, "size": 40},
                         "fewshot": {"n_way": 2}},
            "demo_fundus": {"kind": "demo_fundus", "split": "given", "demo": {"n_images": 36, "size": 40},
                            "fewshot": {"n_way": 3}},
        },
        "protocols": {
            "linear": {"grid_points": 3, "n_bootstrap": 50},
            "fewshot": {"n_support": [2], "n_query": 2, "episodes": 20},
            "finetune": {"steps": 2, "batch_size": 4, "eval_every": 1, "patience": 1, "n_bootstrap": 50},
        },
    }
    config.update(overrides)
    return config


_FILES = {
    "supervised": "resnet50-0676ba61.pth", "moco-v2": "moco_v2_800ep_pretrain.pth.tar",
    "swav": "swav_800ep_pretrain.pth.tar", "pirl": "PIRL.pth", "byol": "pretrain_res50x1.pkl",
    "simclr-v1": "ResNet50_1x.zip",
}
