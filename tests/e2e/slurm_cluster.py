"""A real single-node SLURM cluster on localhost, for tests: munged, slurmctld and slurmd.

Everything lives in one temporary folder (its own munge key and socket, slurm.conf, state,
spool, logs), the daemons run in the foreground as child processes (stopped by their PIDs),
and the ports are free ones picked at start, so nothing of the machine's own munge or SLURM
set-up is used or changed. Clients (sbatch, squeue, Nipype's SLURM plugin) reach it through
the environment in :attr:`LocalSlurm.env` (``SLURM_CONF``, and ``LOGNAME``, which Nipype's SLURM
plugin reads to name jobs).

Needs Debian's ``slurm-wlm`` and ``munge`` packages, and root (slurmd starts jobs as the
submitting user, and munged checks that its files belong to the user running it).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
INSTALL_HINT = "apt-get install -y --no-install-recommends slurm-wlm munge (as .ci/run does)"


def missing_programs() -> list[str]:
    """The SLURM and munge programs that are not installed."""
    return [p for p in PROGRAMS if shutil.which(p, path=SEARCH_PATH) is None]


def why_unavailable() -> str | None:
    """Why a local cluster cannot start here, or None when it can."""
    missing = missing_programs()
    if missing:
        return f"SLURM/munge programs not installed ({', '.join(missing)}); install them with {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "starting a local SLURM cluster (slurmd, munged) needs root"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SLURM_CONF = """\
ClusterName=bidsencodingtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=3600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, cpus: int = 2):
        self.cpus = cpus
        self.root: Path | None = None
        self.processes: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 60) -> "LocalSlurm":
        problem = why_unavailable()
        if problem:
            raise RuntimeError(problem)
        # munged insists that every folder above its socket is searchable by all, so not under pytest's 0700 tmp
        self.root = Path(tempfile.mkdtemp(prefix="bids-encoding-slurm-"))
        self.root.chmod(0o755)
        for folder in ("munge", "state", "spool", "log"):
            (self.root / folder).mkdir()
        (self.root / "munge").chmod(0o755)
        conf = self.root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(root=self.root, ctld_port=_free_port(), slurmd_port=_free_port(),
                                          cpus=self.cpus))
        self.env = {"SLURM_CONF": str(conf), "LOGNAME": os.environ.get("LOGNAME") or getpass.getuser(),
                    "PATH": SEARCH_PATH}
        try:
            self._start_munged()
            self._spawn("slurmctld", ["-D", "-c", "-i", "-f", str(conf)])
            self._wait_for(lambda: self._client("scontrol", "ping").stdout.count("UP") > 0, "slurmctld", timeout)
            self._spawn("slurmd", ["-D", "-N", "localhost", "-f", str(conf)])
            self._wait_for(lambda: self._node_state() in ("idle", "mixed", "allocated"), "slurmd", timeout)
            output = self.run_job("echo ready", timeout)
            if output.strip() != "ready":
                raise RuntimeError(f"a test job printed {output!r}, not 'ready':\n{self.logs()}")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munged(self) -> None:
        munge = self.root / "munge"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        self._spawn("munged", ["-F", f"--socket={munge / 'munge.socket'}", f"--key-file={key}",
                               f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}"])
        self._wait_for(lambda: (munge / "munge.socket").exists(), "munged", 20)

    def _spawn(self, program: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{program}.out", "wb")
        self.processes[program] = subprocess.Popen([shutil.which(program, path=SEARCH_PATH), *args], stdout=log,
                                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   env={**os.environ, **self.env}, start_new_session=True)
        log.close()

    def _client(self, program: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([shutil.which(program, path=SEARCH_PATH), *args], capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=30)

    def _node_state(self) -> str:
        return self._client("sinfo", "-h", "-N", "-o", "%T").stdout.strip().rstrip("*~#")

    def _wait_for(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for program, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{program} exited with status {process.returncode}:\n{self.logs()}")
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s:\n{self.logs()}")

    # ------------------------------------------------------------------ use

    def run_job(self, command: str, timeout: float = 60) -> str:
        """Submit ``command`` with ``sbatch --wrap``, wait until SLURM no longer lists it, and return its output."""
        out = self.root / "log" / "job-%j.out"
        submitted = self._client("sbatch", "--parsable", "-o", str(out), "--wrap", command)
        if submitted.returncode:
            raise RuntimeError(f"sbatch failed: {submitted.stderr}\n{self.logs()}")
        job = submitted.stdout.strip().split(";")[0]
        self._wait_for(lambda: not self._client("squeue", "-h", "-j", job).stdout.strip(), f"job {job}", timeout)
        return (self.root / "log" / f"job-{job}.out").read_text()

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still remembers (finished ones for MinJobAge s), as ``scontrol show job`` fields."""
        listing = self._client("scontrol", "show", "job", "-o").stdout
        return [dict(field.split("=", 1) for field in line.split() if "=" in field)
                for line in listing.splitlines() if line.startswith("JobId=")]

    def logs(self) -> str:
        """The tail of every daemon's log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")) if self.root else []:
            if path.is_file() and not path.name.startswith("job-"):
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Cancel jobs still queued or running, stop the daemons by PID (slurmd, slurmctld, then munged), and
        remove the folder."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            try:
                self._client("scancel", "--quiet", f"--user={self.env['LOGNAME']}")
                self._wait_for(lambda: not self._client("squeue", "-h").stdout.strip(), "cancelled jobs", 30)
            except (OSError, subprocess.SubprocessError, RuntimeError):
                pass
        for program in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(program, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
