"""Benchmark: where a study's wall time goes, between Snakemake, job start-up and the work.

Not a test. Run it in a checkout (the demo by default):

    python bench/overhead.py --run                 # clean, run `make all`'s two commands, split
    python bench/overhead.py --run --cores 8       # as before this benchmark's issue
    python bench/overhead.py                       # split the last run in this checkout again

Every job's log holds two lines from ``medtransfer.runtime.log_to_file``: when the job's
process started and when its work began (after its imports), and at exit when the work ended
and the process's CPU seconds. Snakemake's metadata (``.snakemake/metadata``) holds when
Snakemake started each job. Each job's time is therefore three intervals:

- ``snakemake``: from Snakemake starting the job to the job's Python process starting
  (writing the script, starting the shell);
- ``start-up``: from the process starting to its work beginning: the interpreter, the imports
  (torch, scikit-learn, pandas...), unpickling the job's ``snakemake`` object;
- ``work``: from there to the process's exit handlers.

The wall time of the run is split by sweeping through it: at each moment the jobs running
share that moment equally between their current intervals; a moment with no job running is
Snakemake's (building the DAG, choosing the next jobs, checking and recording outputs, a
process's teardown). The split is per rule and in total, with the ratio the issue names:
(Snakemake + start-up) / wall. ``snakemake --report`` is timed apart.

Writes ``benchmarks/overhead/split.csv`` (per rule) and ``benchmarks/overhead/run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

TIMING = re.compile(r"medtransfer\.timing: .*?((?:\w+=[\d.]+ ?)+)$")
PHASES = ("snakemake", "start-up", "work")
GENERATED = ("results", "resources/weights", "resources/demo", "reports", "logs", "benchmarks", ".snakemake")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_study(root: Path, cores: int, extra: list[str]) -> dict:
    """Remove the generated outputs, then time the study and its report as `make all` runs them."""
    for name in GENERATED:
        shutil.rmtree(root / name, ignore_errors=True)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    record: dict = {"cores": cores, "extra": extra, "cpu_model": cpu_model(), "nproc": os.cpu_count()}
    cpu0, start = children_cpu(), time.time()
    own = run_sampled([snakemake, "--cores", str(cores), *extra, "all"], root)
    end = time.time()
    cpu1 = children_cpu()
    subprocess.run([snakemake, "--report", "reports/report.html"], cwd=root, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record.update(start=start, end=end, wall_s=end - start, cpu_s=cpu1 - cpu0, snakemake_cpu_s=own,
                  report_s=time.time() - end, report_cpu_s=children_cpu() - cpu1)
    return record


def run_sampled(cmd: list[str], root: Path) -> float:
    """Run ``cmd``; return the CPU seconds of its own process (not its jobs'), sampled until it exits."""
    import psutil  # Snakemake's own dependency; only this benchmark needs it

    process = subprocess.Popen(cmd, cwd=root)
    watched, own = psutil.Process(process.pid), 0.0
    while process.poll() is None:
        try:
            times = watched.cpu_times()
            own = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.2)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, cmd)
    return own


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def read_jobs(root: Path) -> list[dict]:
    """One entry per finished job: rule, Snakemake's start, and the process's timing lines."""
    jobs, seen = [], set()
    for path in sorted((root / ".snakemake" / "metadata").glob("*")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        logs = tuple(record.get("log") or ())
        key = (record.get("rule"), record.get("job_hash"), logs)
        if key in seen or not logs:
            continue
        seen.add(key)
        timing = {}
        for log in logs:
            try:
                text = (root / log).read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                match = TIMING.search(line)
                if match:
                    timing.update((k, float(v)) for k, v in
                                  (pair.split("=") for pair in match.group(1).split()))
        if {"process_start", "work_start", "work_end"} <= timing.keys():
            jobs.append({"rule": record["rule"], "snakemake_start": record.get("starttime"), **timing})
    return jobs


def split(jobs: list[dict], start: float, end: float) -> tuple[dict, dict]:
    """Share [start, end] between the rules' phases and Snakemake's idle time (see the docstring)."""
    intervals = []
    for job in jobs:
        begin = job["snakemake_start"] if job["snakemake_start"] else job["process_start"]
        bounds = (min(begin, job["process_start"]), job["process_start"], job["work_start"], job["work_end"])
        for phase, lo, hi in zip(PHASES, bounds[:-1], bounds[1:], strict=True):
            lo, hi = max(lo, start), min(hi, end)
            if hi > lo:
                intervals.append((lo, hi, job["rule"], phase))
    points = sorted({start, end, *(lo for lo, *_ in intervals), *(hi for _, hi, *_ in intervals)})
    per_rule: dict = defaultdict(lambda: dict.fromkeys(PHASES, 0.0))
    idle = 0.0
    events = sorted(intervals)
    active: list = []
    index = 0
    for lo, hi in zip(points[:-1], points[1:], strict=True):
        while index < len(events) and events[index][0] <= lo:
            active.append(events[index])
            index += 1
        active = [interval for interval in active if interval[1] > lo]
        if not active:
            idle += hi - lo
            continue
        share = (hi - lo) / len(active)
        for _, _, rule, phase in active:
            per_rule[rule][phase] += share
    return dict(per_rule), {"idle": idle}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout (default: here)")
    parser.add_argument("--run", action="store_true", help="clean, then run the study and its report first")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("extra", nargs="*", help="more snakemake arguments (after --)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    out = root / "benchmarks" / "overhead"
    if args.run:
        record = run_study(root, args.cores, args.extra)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(record, indent=1))
    else:
        record = json.loads((out / "run.json").read_text())
    jobs = read_jobs(root)
    per_rule, other = split(jobs, record["start"], record["end"])
    count = defaultdict(int)
    job_s = defaultdict(lambda: [0.0, 0.0, 0.0])
    for job in jobs:
        count[job["rule"]] += 1
        job_s[job["rule"]][0] += job["work_start"] - job["process_start"]
        job_s[job["rule"]][1] += job["work_end"] - job["work_start"]
        job_s[job["rule"]][2] += job.get("cpu_s", 0.0)

    wall = record["wall_s"]
    lines = ["rule,jobs,wall_snakemake_s,wall_startup_s,wall_work_s,job_startup_s,job_work_s,job_cpu_s"]
    totals = dict.fromkeys(PHASES, 0.0)
    print(f"{'rule':24s} {'jobs':>4s} {'snakemake':>9s} {'start-up':>9s} {'work':>8s}   "
          f"(wall-time shares, s; per job: start-up, work)")
    for rule in sorted(per_rule, key=lambda r: -sum(per_rule[r].values())):
        phases = per_rule[rule]
        for phase in PHASES:
            totals[phase] += phases[phase]
        n = count[rule]
        print(f"{rule:24s} {n:4d} {phases['snakemake']:9.1f} {phases['start-up']:9.1f} {phases['work']:8.1f}"
              f"   {job_s[rule][0] / n:5.2f} {job_s[rule][1] / n:6.2f}")
        lines.append(",".join([rule, str(n)] + [f"{phases[p]:.2f}" for p in PHASES]
                              + [f"{v:.2f}" for v in job_s[rule]]))
    lines.append(f"(idle),0,{other['idle']:.2f},0,0,0,0,0")
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.csv").write_text("\n".join(lines) + "\n")

    snakemake = totals["snakemake"] + other["idle"]
    job_cpu = sum(v[2] for v in job_s.values())
    print(f"\n{record.get('cpu_model', '?')}, {record.get('nproc', '?')} cores, --cores {record.get('cores')}"
          f" {' '.join(record.get('extra', []))}")
    print(f"jobs {len(jobs)}; wall {wall:.1f} s = Snakemake {snakemake:.1f} (idle {other['idle']:.1f}, "
          f"per job {totals['snakemake']:.1f}) + start-up {totals['start-up']:.1f} + work {totals['work']:.1f}")
    print(f"(Snakemake + start-up) / wall = {(snakemake + totals['start-up']) / wall:.2f}")
    if "cpu_s" in record:
        print(f"CPU s: all {record['cpu_s']:.0f}, the jobs' processes {job_cpu:.0f}, "
              f"the rest {record['cpu_s'] - job_cpu:.0f} (Snakemake's own process "
              f"{record.get('snakemake_cpu_s', float('nan')):.0f}; job shells and process exits)")
    if "report_s" in record:
        print(f"snakemake --report: {record['report_s']:.1f} s; study + report {wall + record['report_s']:.1f} s")


if __name__ == "__main__":
    main()
