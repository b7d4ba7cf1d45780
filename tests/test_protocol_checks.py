"""Protocol setting checks: torch-free, run when the study is built, and accepting the defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from medtransfer import protocols as registry
from medtransfer.protocols.checks import check_reconstruction, check_saliency, no_check
from medtransfer.study import Study


def _demo() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_the_demo_study_builds_without_torch():
    code = ("import sys, yaml; from medtransfer.study import Study; "
            f"Study(yaml.safe_load(open({str(REPO / 'config' / 'config.yaml')!r}))); "
            "assert 'torch' not in sys.modules, 'building the study imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_every_protocol_check_accepts_the_demo_settings():
    study = Study(_demo())
    assert set(study.protocols) == set(registry.PROTOCOLS)  # the demo runs every protocol
    for name in study.protocols:
        registry.get(name).check(**study.settings(name))
    assert registry.get("saliency").check is check_saliency
    assert registry.get("reconstruction").check is check_reconstruction
    assert registry.get("linear").check is no_check


def test_reconstruction_settings_are_named_when_wrong():
    ok = dict(steps=10, lr=1e-3, n_images=2, precision="fp32", batch_size=4, n_bootstrap=10, lpips={})
    check_reconstruction(**ok)
    with pytest.raises(ValueError, match=r"protocols\.reconstruction\.batch_size must be a positive integer, got 0"):
        check_reconstruction(**{**ok, "batch_size": 0})
    with pytest.raises(ValueError, match=r"protocols\.reconstruction\.lr must be > 0, got 0"):
        check_reconstruction(**{**ok, "lr": 0})
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; expected one of \('fp32', 'bf16'\)"):
        check_reconstruction(**{**ok, "precision": "fp16"})
