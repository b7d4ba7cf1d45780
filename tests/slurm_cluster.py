"""A real single-node SLURM cluster on loopback, for the workflow's cluster test.

Brings up munge, slurmctld and slurmd from Debian's packages (installing them with apt when
missing), with every state, spool, log and PID file under one scratch folder. There is no
systemd here, so the daemons run in the foreground under ``setsid``; the PIDs this module
started are recorded in ``<scratch>/pids`` and :func:`stop` kills only those (never by name,
so a site's own daemons are never touched). :func:`start` is idempotent: a cluster this
module started earlier and that still answers is reused.

There is no accounting database: jobs are recorded by SLURM's job-completion plugin
(``jobcomp/filetxt``) in ``<scratch>/log/jobcomp.log``, and the executor plugin polls with
``squeue`` (``MinJobAge`` keeps finished jobs visible long enough for that).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SLURM_CONF = Path("/etc/slurm/slurm.conf")  # the executor plugin strips SLURM_CONF from jobs
DAEMONS = ["munged", "slurmctld", "slurmd"]


def cannot_host() -> str | None:
    """Why this machine cannot host the test cluster, or None when it can."""
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (it runs slurmd and writes /etc/slurm/slurm.conf)"
    if not all(shutil.which(d) for d in ("slurmctld", "slurmd", "munged", "sbatch")) and not shutil.which("apt-get"):
        return f"SLURM is not installed and there is no apt-get to install {' '.join(PACKAGES)}"
    if SLURM_CONF.exists() and not SLURM_CONF.is_symlink():
        return f"{SLURM_CONF} is a site's own configuration; the test will not replace it"
    return None


@dataclass
class Cluster:
    scratch: Path
    node: str
    partition: str = "debug"

    @property
    def jobcomp(self) -> Path:
        return self.scratch / "log" / "jobcomp.log"

    def completed_jobs(self) -> list[dict[str, str]]:
        """SLURM's own record of each finished job (``key=value`` fields per line)."""
        if not self.jobcomp.exists():
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in self.jobcomp.read_text().splitlines() if line]


def install() -> None:
    if all(shutil.which(d) for d in ("slurmctld", "slurmd", "munged", "sbatch")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                   check=True, env=env, capture_output=True)


def _node() -> tuple[str, int, int]:
    """(name, CPUs, RealMemory in MB less 1 GB for the system) from ``slurmd -C``."""
    out = subprocess.run(["slurmd", "-C"], check=True, capture_output=True, text=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out))
    return fields["NodeName"], int(fields["CPUs"]), max(1000, int(fields["RealMemory"]) - 1000)


def _config(scratch: Path, node: str, cpus: int, memory: int) -> str:
    return f"""# Written by tests/slurm_cluster.py: a one-node test cluster on loopback.
ClusterName=medtransfer-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MailProg=/bin/true
MinJobAge=600
JobCompType=jobcomp/filetxt
JobCompLoc={scratch}/log/jobcomp.log
StateSaveLocation={scratch}/state
SlurmdSpoolDir={scratch}/spool
SlurmctldPidFile={scratch}/slurmctld.pid
SlurmdPidFile={scratch}/slurmd.pid
SlurmctldLogFile={scratch}/log/slurmctld.log
SlurmdLogFile={scratch}/log/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _recorded(scratch: Path) -> dict[str, int]:
    pids = scratch / "pids"
    if not pids.exists():
        return {}
    return {name: int(pid) for name, pid in (line.split() for line in pids.read_text().splitlines() if line)}


def _answers(timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip() in {"idle", "mixed", "allocated"}:
            return True
        time.sleep(0.3)
    return False


def _launch(scratch: Path, name: str, cmd: list[str]) -> int:
    log = open(scratch / "log" / f"{name}.out", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with open(scratch / "pids", "a") as f:
        f.write(f"{name} {proc.pid}\n")
    return proc.pid


def start(scratch: Path) -> Cluster:
    """Start (or reuse) the test cluster whose files live under ``scratch``."""
    install()
    node, cpus, memory = _node()
    if socket.gethostbyname(socket.gethostname()) != "127.0.0.1":
        print(f"warning: host name {socket.gethostname()} does not resolve to 127.0.0.1; slurmd may not reach slurmctld")
    running = _recorded(scratch)
    if running and all(_alive(pid) for pid in running.values()) and _answers(5):
        return Cluster(scratch, node)
    stop(scratch)
    for sub in ("state", "spool", "log"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    cluster = Cluster(scratch, node)
    if cluster.jobcomp.exists():  # a fresh cluster starts a fresh record (job ids may repeat)
        cluster.jobcomp.replace(cluster.jobcomp.with_suffix(".log.old"))
    conf = scratch / "slurm.conf"
    conf.write_text(_config(scratch, node, cpus, memory))
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.unlink(missing_ok=True)
    SLURM_CONF.symlink_to(conf)
    run = Path("/run/munge")
    run.mkdir(parents=True, exist_ok=True)
    shutil.chown(run, "munge", "munge")
    _launch(scratch, "munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                                "munged", "--foreground", "--force"])
    time.sleep(0.5)
    _launch(scratch, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])
    _launch(scratch, "slurmd", ["slurmd", "-D", "-N", node, "-f", str(conf)])
    if not _answers(30):
        log = (scratch / "log" / "slurmctld.log")
        tail = log.read_text()[-2000:] if log.exists() else ""
        stop(scratch)
        raise RuntimeError(f"the test SLURM cluster did not come up; slurmctld log ends:\n{tail}")
    return cluster


def stop(scratch: Path) -> None:
    """Stop the daemons this module started (by recorded PID only) and forget them."""
    for pid in reversed(list(_recorded(scratch).values())):
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
    (scratch / "pids").unlink(missing_ok=True)
    # A configuration naming a controller that no longer runs makes every later `scontrol`
    # wait 9 s for it, and the SLURM executor plugin runs `scontrol show config` whenever
    # Snakemake starts (every `snakemake` command on the machine, `-n` included).
    if SLURM_CONF.is_symlink() and SLURM_CONF.readlink() == scratch / "slurm.conf":
        SLURM_CONF.unlink()
