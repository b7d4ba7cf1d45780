"""The study on a real SLURM cluster through profiles/slurm, with one job cancelled mid-run.

Runs where a one-node cluster can be brought up (tests/slurm_cluster.py: root, Debian's
packages) and CI=true or MEDTRANSFER_SLURM_TEST=1 asks for it; skipped elsewhere with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import slurm_cluster
from conftest import REPO
from workflow_helpers import make_workdir, snakemake, two_model_config

SCRATCH = Path("/tmp/medtransfer-slurm")
GPU_RULES = ["extract_features", "finetune", "reconstruct", "score_reconstruction", "saliency", "invariance"]
# The test node has 2 CPUs, no GPU and ~23 GB: every job gets one CPU, no GPU, and each group
# submission at most 2 CPUs and 8 GB.
TEST_OVERRIDES = [  # options taking several values first: each ends at the next option
    "--set-resources", *(f"{rule}:gpu=0" for rule in GPU_RULES),
    "--resources", "mem_mb=8000",
    "--slurm-status-command", "squeue",  # no accounting database on the test cluster
    "--slurm-init-seconds-before-status-checks", "5",
    "--max-threads", "1", "--cores", "2",
    "--latency-wait", "5",
]


def _reason_to_skip() -> str | None:
    if os.environ.get("CI") != "true" and os.environ.get("MEDTRANSFER_SLURM_TEST") != "1":
        return "the SLURM test installs and starts a cluster: it runs when CI=true or MEDTRANSFER_SLURM_TEST=1"
    return slurm_cluster.cannot_host()


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_reason_to_skip() is not None, reason=_reason_to_skip() or "")]


def _config() -> dict:
    return two_model_config()


class Canceller(threading.Thread):
    """Cancels the first running job of ``rule`` with scancel, once."""

    def __init__(self, workdir: Path, rule: str):
        super().__init__(daemon=True)
        self.workdir, self.rule, self.cancelled, self.stop = workdir, rule, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.cancelled is None:
            out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"],
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                jobid, comment, workdir = line.split("|")
                if comment.startswith(f"rule_{self.rule}_") and Path(workdir) == self.workdir:
                    time.sleep(2)  # well into the job: imports done, outputs being written
                    subprocess.run(["scancel", jobid], check=True)
                    self.cancelled = jobid
                    return
            time.sleep(0.3)


@pytest.fixture(scope="module")
def cluster():
    cluster = slurm_cluster.start(SCRATCH)
    yield cluster
    slurm_cluster.stop(SCRATCH)


@pytest.fixture(scope="module")
def local_table(two_model_table) -> pd.DataFrame:
    return two_model_table  # one local run (conftest.py), shared with the resume test


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The study through ``--profile profiles/slurm``, one finetune job cancelled while it runs."""
    workdir = make_workdir(tmp_path_factory.mktemp("slurm"), _config())
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    canceller = Canceller(workdir, "finetune")
    canceller.start()
    started = time.monotonic()
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", *TEST_OVERRIDES, "all"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1500)
    elapsed = time.monotonic() - started
    canceller.stop.set()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"SLURM run failed:\n{log[-8000:]}"
    print(f"SLURM run: {elapsed:.0f} s")
    return workdir, log, canceller.cancelled


def _records(cluster, workdir: Path, log: str) -> dict[str, dict[str, str]]:
    """SLURM's records of the jobs this run submitted (job ids from Snakemake's log)."""
    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", log))
    records = {job["JobId"]: job for job in cluster.completed_jobs()
               if job["JobId"] in submitted and Path(job["WorkDir"]) == workdir}
    assert submitted and submitted == set(records), "every submission is in SLURM's job-completion log"
    return records


def test_jobs_ran_as_slurm_jobs(cluster, slurm_run):
    workdir, log, _ = slurm_run
    records = _records(cluster, workdir, log)
    completed = [job for job in records.values() if job["JobState"] == "COMPLETED"]
    rules = set(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log)) - {"all"}
    # every rule of the study ran inside a SLURM job, small CPU jobs in groups
    assert {"extract_features", "finetune", "reconstruct", "convert_weights", "table"} <= rules
    assert set(re.findall(r"localrule (\w+):", log)) <= {"all"}, "nothing but the target ran locally"
    assert "Group job probes" in log and "Group job summary" in log
    assert len(completed) >= 10
    print(f"SLURM jobs: {len(records)} submitted, {len(completed)} completed, for {len(rules)} rules")


def test_cancelled_job_is_retried(cluster, slurm_run):
    workdir, log, cancelled = slurm_run
    assert cancelled is not None, "a finetune job was running and was cancelled"
    records = _records(cluster, workdir, log)
    assert records[cancelled]["JobState"] == "CANCELLED"
    assert [job["JobId"] for job in records.values() if job["JobState"] != "COMPLETED"] == [cancelled]
    assert f"SLURM-job '{cancelled}' failed" in log
    # the SLURM log path names the rule and wildcards: the same path again is the retry
    logs = dict(re.findall(r"SLURM jobid (\d+) \(log: (\S+)/\d+\.log\)", log))
    retries = [jobid for jobid, folder in logs.items() if folder == logs[cancelled] and jobid != cancelled]
    assert [records[jobid]["JobState"] for jobid in retries] == ["COMPLETED"]


def test_table_equals_a_local_run(slurm_run, local_table):
    workdir, _, _ = slurm_run
    table = pd.read_csv(workdir / "reports" / "table.csv")
    pd.testing.assert_frame_equal(table, local_table)


def test_rerun_after_the_cluster_run_has_nothing_to_do(slurm_run):
    workdir, _, _ = slurm_run
    proc = snakemake(workdir, "all", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
