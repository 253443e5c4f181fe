"""A throwaway single-node SLURM cluster for tests, built from Debian's slurm-wlm and munge.

Everything lives in one temporary directory: the munge key, socket and logs, ``slurm.conf``,
``gres.conf``, the controller's state and the node's spool. The daemons run in the foreground as
children of this process and are stopped by their process IDs, so nothing outlives the test and
no system-wide configuration (``/etc/slurm``, ``/etc/munge``) is read or written.

The node declares one GPU as ``Name=gpu File=/dev/null``: Slurm 22.05 then schedules
``--gres=gpu:1`` jobs on a machine without a GPU, which is what the sbatch scripts request.

Use it as a context manager::

    with SlurmCluster(tmp_dir) as cluster:
        job_id = cluster.sbatch(["--wrap", "hostname"])
        cluster.wait([job_id], timeout=60)

or through :func:`start_or_skip`, which turns every way of failing to start into a
``pytest.skip`` with the reason.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIRED_BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sinfo",
    "squeue",
    "scontrol",
    "scancel",
)

# Job states after which a job will not change again on its own.
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
        "REVOKED",
    }
)


class ClusterStartError(RuntimeError):
    """The cluster could not be brought up (the message says which step failed)."""


def _free_port() -> int:
    """Return a TCP port that is free right now (other sessions may run their own cluster)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_binaries() -> list[str]:
    """Return the SLURM/munge programs that are not on ``PATH``."""
    extra = ("/usr/sbin", "/sbin")
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra])
    return [name for name in REQUIRED_BINARIES if shutil.which(name, path=path) is None]


def _which(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise ClusterStartError(f"{name} not found on PATH")
    return found


class SlurmCluster:
    """One slurmctld + one slurmd (+ munged) under a temporary directory.

    Args:
        root: Empty or new directory that holds every file of the cluster.
        cpus: CPUs the node advertises (jobs are packed on them).
        real_memory_mb: Memory the node advertises, in MB.
        start_timeout: Seconds to wait for the node to become idle.
    """

    def __init__(
        self,
        root: Path,
        *,
        cpus: int = 2,
        real_memory_mb: int = 4000,
        start_timeout: float = 60.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.cpus = cpus
        self.real_memory_mb = real_memory_mb
        self.start_timeout = start_timeout
        # The node name must be what slurmd resolves for itself; we pass it with -N, so any
        # name works, but the short hostname keeps `sinfo` output familiar.
        self.node_name = socket.gethostname().split(".")[0] or "localhost"
        self.cluster_name = "lstvtest"
        # Named like the partition the GPU scripts ask for by default (#SBATCH --partition=gpu).
        self.partition = "gpu"
        self._procs: dict[str, subprocess.Popen] = {}
        self._log_files: list = []

    # ------------------------------------------------------------------ paths and env
    @property
    def conf_path(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, squeue...) and the jobs they start."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf_path)
        # Settings the jobs would otherwise inherit from a surrounding allocation.
        for key in list(env):
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and key != "SLURM_CONF":
                del env[key]
        return env

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration, start munged, slurmctld and slurmd, wait for an idle node."""
        missing = missing_binaries()
        if missing:
            raise ClusterStartError(f"missing programs: {', '.join(missing)}")
        try:
            self._write_files()
            self._start_munge()
            self._start_slurm()
            self._wait_idle()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel leftover jobs, stop the daemons by PID (slurmd first, munged last), reap them."""
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            # Jobs of a failed test would otherwise outlive the cluster in their slurmstepd.
            self._cancel_all_jobs(timeout=20)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is not None:
                proc.wait()  # reap it
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
                proc.kill()
                proc.wait(timeout=5)
        for handle in self._log_files:
            handle.close()
        self._log_files.clear()

    def _cancel_all_jobs(self, timeout: float) -> None:
        try:
            self.run(["scancel", f"--user={os.getuid()}"], check=False, timeout=10)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                left = self.run(["squeue", "-h", "-t", "RUNNING,COMPLETING"], check=False)
                if left.returncode != 0 or not left.stdout.strip():
                    return
                time.sleep(0.5)
            logger.warning("jobs still running at shutdown: %s", left.stdout.strip())
        except (OSError, subprocess.SubprocessError) as err:
            logger.warning("could not cancel leftover jobs: %s", err)

    # ------------------------------------------------------------------ setup steps
    def _write_files(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses group/world-accessible key and socket directories.
        (self.root / "munge").chmod(0o700)
        self.root.chmod(0o755)

        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

        ctld_port = _free_port()
        slurmd_port = _free_port()
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
        log = self.root / "log"
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.node_name}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            # root in CI; as another user the daemons run (and jobs start) as that user.
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "GresTypes=gpu",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            # Keep finished jobs visible to scontrol for the whole test.
            "MinJobAge=3600",
            "MaxArraySize=1001",
            # Jobs that ask for no memory get a share, not the whole node.
            "DefMemPerCPU=500",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            "MpiDefault=none",
            "PropagateResourceLimits=NONE",
            (
                f"NodeName={self.node_name} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                f"RealMemory={self.real_memory_mb} Gres=gpu:1 State=UNKNOWN"
            ),
            (
                f"PartitionName={self.partition} Nodes={self.node_name} Default=YES "
                "MaxTime=INFINITE State=UP OverSubscribe=NO"
            ),
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")
        # Slurm 22.05 only needs the GRES file to exist; /dev/null stands in for a GPU.
        gres = self.root / "etc" / "gres.conf"
        gres.write_text(f"NodeName={self.node_name} Name=gpu File=/dev/null\n")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.root / "log" / f"{name}.stdout", "wb")  # noqa: SIM115 - closed in stop()
        self._log_files.append(out)
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf_path)
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Own session: a Ctrl-C in the test runner does not hit the daemons before stop().
            start_new_session=True,
        )
        self._procs[name] = proc
        return proc

    def _start_munge(self) -> None:
        munge_dir = self.root / "munge"
        argv = [
            _which("munged"),
            "--foreground",
            f"--socket={self.munge_socket}",
            f"--key-file={munge_dir / 'munge.key'}",
            f"--pid-file={munge_dir / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={munge_dir / 'munged.seed'}",
        ]
        if os.geteuid() == 0:
            # munged warns about running as root and about the temp dir's ownership; --force
            # turns those refusals into warnings.
            argv.append("--force")
        proc = self._spawn("munged", argv)
        deadline = time.monotonic() + 15
        while not self.munge_socket.exists():
            if proc.poll() is not None:
                raise ClusterStartError(f"munged exited: {self._tail('munged')}")
            if time.monotonic() > deadline:
                raise ClusterStartError(f"munged socket did not appear: {self._tail('munged')}")
            time.sleep(0.1)

    def _start_slurm(self) -> None:
        conf = str(self.conf_path)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", conf])
        # Give the controller a moment to listen before the node registers.
        time.sleep(1.0)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", self.node_name, "-f", conf])

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            for name in ("slurmctld", "slurmd"):
                proc = self._procs[name]
                if proc.poll() is not None:
                    raise ClusterStartError(
                        f"{name} exited with {proc.returncode}: {self._tail(name)}"
                    )
            result = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
            last = (result.stdout + result.stderr).strip()
            if result.returncode == 0 and last.split() and last.split()[0].startswith("idle"):
                return
            time.sleep(0.5)
        raise ClusterStartError(
            f"node not idle after {self.start_timeout:.0f}s (sinfo: {last!r}); "
            f"slurmctld: {self._tail('slurmctld')}; slurmd: {self._tail('slurmd')}"
        )

    def _tail(self, name: str, n: int = 15) -> str:
        texts = []
        for path in (self.root / "log" / f"{name}.stdout", self.root / "log" / f"{name}.log"):
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-n:])
        return " | ".join(texts[-n:]) or "(no output)"

    # ------------------------------------------------------------------ clients
    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        full_env = self.env
        if env:
            full_env.update(env)
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=check,
            cwd=cwd,
            env=full_env,
            timeout=timeout,
        )

    def sbatch(
        self, args: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        """Submit a job and return its ID."""
        result = self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed: {result.stderr.strip()}")
        return result.stdout.strip().split(";")[0]

    def job_records(self, job_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """``scontrol show job`` fields of each job, keyed by job ID, array tasks as ``ID_TASK``.

        A pending array appears once with its whole range (``ID_[0-2]``); tasks that started
        appear on their own.
        """
        records: dict[str, dict[str, str]] = {}
        for job_id in job_ids:
            result = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False)
            if result.returncode != 0:
                records[str(job_id)] = {"JobState": "UNKNOWN", "Reason": result.stderr.strip()}
                continue
            for line in result.stdout.splitlines():
                fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
                if "ArrayTaskId" in fields:
                    key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
                else:
                    key = fields.get("JobId", str(job_id))
                records[key] = fields
        return records

    def job_states(self, job_ids: Iterable[str]) -> dict[str, str]:
        """``{job id: state}`` (see :meth:`job_records` for the keys).

        A job that waits on a failed dependency would stay pending forever (reason
        ``DependencyNeverSatisfied``); it is reported as ``DEPENDENCY_FAILED``.
        """
        states = {}
        for key, fields in self.job_records(job_ids).items():
            state = fields.get("JobState", "UNKNOWN")
            if state == "PENDING" and fields.get("Reason") == "DependencyNeverSatisfied":
                state = "DEPENDENCY_FAILED"
            states[key] = state
        return states

    def wait(self, job_ids: Iterable[str], *, timeout: float, poll: float = 1.0) -> dict[str, str]:
        """Wait until every job and array task has ended (or can never start); return states.

        Raises:
            TimeoutError: if jobs are still pending or running after ``timeout`` seconds.
        """
        job_ids = [str(j) for j in job_ids]
        deadline = time.monotonic() + timeout
        while True:
            states = self.job_states(job_ids)
            pending_range = any("[" in key for key in states)
            if not pending_range and all(
                s in TERMINAL_STATES or s == "DEPENDENCY_FAILED" for s in states.values()
            ):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs not finished after {timeout:.0f}s: {states}")
            time.sleep(poll)


def start_or_skip(root: Path, **kwargs) -> SlurmCluster:
    """Start a cluster, or ``pytest.skip`` with the reason when this machine cannot run one."""
    import pytest

    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"SLURM cluster tests need {', '.join(missing)} (Debian packages slurm-wlm, munge)"
        )
    cluster = SlurmCluster(root, **kwargs)
    try:
        cluster.start()
    except (ClusterStartError, OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"could not start a single-node SLURM cluster here: {err}")
    return cluster
