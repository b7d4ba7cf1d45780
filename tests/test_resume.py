"""Killed and resumed: the workflow's process group is SIGKILLed inside each long rule in turn,
each rerun picks up where the last one died, and the final table equals an uninterrupted
run's value for value (that run uses 2 cores, the interrupted ones 1: determinism across
core counts too). Then a single job is killed under --keep-going: the others finish, the
rerun completes, the table is the same again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from workflow_helpers import make_workdir, snakemake, two_model_config

pytestmark = pytest.mark.slow

# Long rules, in the order the study reaches them; the why-stages follow extraction.
KILL_IN = ["download_weights", "cache_images", "extract_features", "linear_probe", "finetune",
           "reconstruct", "saliency", "invariance"]


def _config() -> dict:
    return two_model_config()


def _start(workdir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--rerun-incomplete", *args, "all"]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for_job(proc: subprocess.Popen, rules: list[str]) -> tuple[str, int] | None:
    """(rule, pid) of the first running job of ``rules`` in the workflow's session: its script
    process (Snakemake runs ``.snakemake/scripts/tmpXXXX.<rule>.py``); None if the run ended."""
    pattern = r"\.snakemake/scripts/tmp\w+\.(" + "|".join(rules) + r")\.py"
    while proc.poll() is None:
        out = subprocess.run(["pgrep", "-a", "-s", str(proc.pid), "-f", pattern], capture_output=True, text=True).stdout
        for line in out.splitlines():
            pid, cmdline = line.split(" ", 1)
            match = re.search(pattern, cmdline)
            if match:
                return match.group(1), int(pid)
        time.sleep(0.1)
    return None


def _unlock(workdir: Path) -> None:
    snakemake(workdir, "--unlock")


def _table(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "reports" / "table.csv")


@pytest.fixture(scope="module")
def reference(two_model_table) -> pd.DataFrame:
    return two_model_table  # one uninterrupted 2-core run (conftest.py), shared with the SLURM test


def test_killed_inside_each_long_rule_and_resumed(tmp_path, reference):
    workdir = make_workdir(tmp_path, _config())
    remaining, killed = list(KILL_IN), []
    while remaining:
        proc = _start(workdir)
        job = _wait_for_job(proc, remaining)
        assert job is not None, f"the run finished before any of {remaining} started"
        rule = job[0]
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
    job = _wait_for_job(proc, ["finetune"])
    assert job is not None, "a finetune job ran"
    time.sleep(0.3)
    os.kill(job[1], signal.SIGKILL)  # the finetune job's own process, not the workflow
    assert proc.wait(timeout=900) != 0, "the workflow reports the killed job"
    assert (workdir / "results" / "features").exists(), "the other jobs went on"
    assert not (workdir / "reports" / "table.csv").exists()
    snakemake(workdir, "all", "--rerun-incomplete")
    pd.testing.assert_frame_equal(_table(workdir), reference)
