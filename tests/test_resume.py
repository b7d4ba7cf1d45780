"""Killed and resumed: the workflow's process group is SIGKILLed inside each long rule in turn,
each rerun picks up where the last one died, and the final table equals an uninterrupted
run's value for value (that run uses 2 cores, the interrupted ones 1: determinism across
core counts too). Then a single job is killed under --keep-going: the others finish, the
rerun completes, the table is the same again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from workflow_helpers import make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow

# Long rules, in the order the study reaches them; the why-stages follow extraction.
KILL_IN = ["download_weights", "cache_images", "extract_features", "linear_probe", "finetune",
           "reconstruct", "saliency", "invariance"]


def _config() -> dict:
    config = tiny_config(["supervised", "moco-v2"])
    config["datasets"] = {"demo_cxr": config["datasets"]["demo_cxr"]}
    return config


def _start(workdir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--rerun-incomplete", *args, "all"]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for_start(workdir: Path, rules: list[str], proc: subprocess.Popen, since: float) -> str | None:
    """The first of ``rules`` whose job starts writing its log after ``since`` (None: the run ended)."""
    while proc.poll() is None:
        for rule in rules:
            folder = workdir / "logs" / rule
            if folder.exists() and any(p.is_file() and p.stat().st_size and p.stat().st_mtime >= since
                                       for p in folder.rglob("*.log")):
                return rule
        time.sleep(0.1)
    return None


def _unlock(workdir: Path) -> None:
    snakemake(workdir, "--unlock")


def _table(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "reports" / "table.csv")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    workdir = make_workdir(tmp_path_factory.mktemp("uninterrupted"), _config())
    snakemake(workdir, "all")  # 2 cores
    return _table(workdir)


def test_killed_inside_each_long_rule_and_resumed(tmp_path, reference):
    workdir = make_workdir(tmp_path, _config())
    remaining, killed = list(KILL_IN), []
    while remaining:
        since = time.time() - 0.01
        proc = _start(workdir)
        rule = _wait_for_start(workdir, remaining, proc, since)
        assert rule is not None, f"the run finished before any of {remaining} started"
        time.sleep(0.3)  # inside the job: imports, model load or writing
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed.append(rule)
        remaining.remove(rule)
        _unlock(workdir)
    assert sorted(killed) == sorted(KILL_IN)
    assert not (workdir / "reports" / "table.csv").exists()
    snakemake(workdir, "all", "--rerun-incomplete", "--cores", "1")
    pd.testing.assert_frame_equal(_table(workdir), reference)


def test_one_killed_job_under_keep_going(tmp_path, reference):
    workdir = make_workdir(tmp_path, _config())
    proc = _start(workdir, "--keep-going")
    assert _wait_for_start(workdir, ["finetune"], proc, time.time() - 1) == "finetune"
    # kill the finetune job's own process (its script), not the workflow
    jobs = subprocess.run(["pgrep", "-f", "-s", str(proc.pid), "finetune"], capture_output=True, text=True).stdout.split()
    assert jobs, "the finetune job's process is running"
    for pid in jobs:
        os.kill(int(pid), signal.SIGKILL)
    assert proc.wait(timeout=900) != 0, "the workflow reports the killed job"
    assert (workdir / "results" / "features").exists(), "the other jobs went on"
    assert not (workdir / "reports" / "table.csv").exists()
    snakemake(workdir, "all", "--rerun-incomplete")
    pd.testing.assert_frame_equal(_table(workdir), reference)
