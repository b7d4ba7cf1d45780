"""What a job sets up before its work and records after it: seeds, threads, devices, logging,
and the provenance of its rows (file hashes, package version, git revision)."""

from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer import __version__


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file; of a folder (e.g. an unpacked TF checkpoint), over its sorted files."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                digest.update(block)
    return digest.hexdigest()


def git_revision(start: str | os.PathLike | None = None) -> str:
    """The git revision of the code that produced a result (``unknown`` outside git).

    ``MEDTRANSFER_GIT_REVISION`` overrides it, for installs without a checkout.
    """
    if os.environ.get("MEDTRANSFER_GIT_REVISION"):
        return os.environ["MEDTRANSFER_GIT_REVISION"]
    return _revision_at(str(Path(start) if start else Path(__file__).resolve().parent))


@functools.lru_cache(maxsize=8)
def _revision_at(where: str) -> str:
    """Asked once per folder and process: a job writes its rows from one checkout, and two git
    processes per row cost correlate 8 s for a 660-row study."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev


def package_version() -> str:
    return __version__


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch (CPU and every GPU); set torch's determinism mode.

    What a seed buys: on a CPU, the same config, seed, thread count and machine give
    bit-identical results. On a GPU that holds only with ``deterministic=True``, which
    makes torch raise on any operation without a deterministic implementation, forces
    deterministic cuDNN kernels, turns cuDNN autotuning off and sets
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` if unset (read when cuBLAS first starts, so call
    this before any GPU work). It is slower. ``deterministic=False`` switches that mode
    off again (the setting is process-wide, so the last call wins) and leaves
    ``cudnn.benchmark`` to the caller: GPU results may then differ run to run in the
    last bits. Nothing here makes results equal across machines or library versions.
    """
    import torch  # torch-free jobs (the report, the DAG) import runtime for provenance

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # seeds every CUDA device too
    set_deterministic(deterministic)


def set_deterministic(deterministic: bool) -> None:
    """Turn torch's deterministic-algorithms mode (and cuDNN's) on or off, process-wide."""
    import torch  # torch-free jobs (the report, the DAG) import runtime for provenance

    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; torch raises without it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False  # autotuning may pick a different kernel per run
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when present; an explicit ``cuda`` without a GPU is an error."""
    import torch  # torch-free jobs (the report, the DAG) import runtime for provenance

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} was requested but no CUDA GPU is visible; "
            "set `device: auto` or `device: cpu` in the config"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use one of auto, cpu, cuda, cuda:N")
    return device


# Precisions a stage can run its backbone in: bf16 is autocast (and channels_last where it pays).
PRECISIONS = ("fp32", "bf16")


def autocast(device: str, precision: str) -> Any:
    """The autocast context of ``precision`` on ``device``'s kind: bf16, or off for fp32."""
    import torch  # here, not at the top: the DAG build and the report jobs import runtime without torch

    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16")


def log_to_file(path: str | os.PathLike) -> None:
    """Send this process's logging and warnings to ``path`` (a rule's ``log:`` file)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=path, level=logging.INFO, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    _log_timing()


def seconds_since_process_start() -> float | None:
    """How long this process has run (10 ms resolution; None where /proc is missing)."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, the start time in clock ticks since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError, IndexError):
        return None


def _log_timing() -> None:
    """Log when this job's process started and when its work began (after its imports), and at
    exit when the work ended, the process's CPU seconds and whether it loaded torch:
    bench/overhead.py reads these lines to split a run's time into Snakemake, start-up and work."""
    started = seconds_since_process_start()
    if started is None:
        return
    now = time.time()
    timing = logging.getLogger("medtransfer.timing")
    timing.info("start-up took %.2f s: process_start=%.3f work_start=%.3f", started, now - started, now)

    def at_exit() -> None:
        times = os.times()
        cpu = times.user + times.system + times.children_user + times.children_system
        timing.info("work took %.2f s: work_end=%.3f cpu_s=%.2f torch=%d", time.time() - now, time.time(), cpu,
                    "torch" in sys.modules)

    atexit.register(at_exit)


def set_threads(threads: int) -> None:
    """Let torch use the rule's threads, never more than this machine's cores.

    Without importing it: a job that has not loaded torch (the probes, the episodes, the
    comparisons) gets the count in ``OMP_NUM_THREADS``, which torch reads when it is first
    imported, so a job that never needs torch never pays its import (1.5 s on 2 cores).
    """
    n = max(1, min(int(threads), os.cpu_count() or 1))
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
