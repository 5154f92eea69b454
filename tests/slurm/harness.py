"""Pytest harness for lotto's Slurm tests: a real single-node Slurm cluster.

Fixture
    ``slurm_cluster`` (session scope): runs ``tests/slurm/start-cluster.sh``
    under a hard timeout and yields a :class:`SlurmCluster`; stops the cluster
    (``stop-cluster.sh``) at the end of the session.

    * If the cluster cannot be started on this machine (not root, no apt-get,
      apt-get failed: start-cluster.sh exits 77) the tests using it are
      SKIPPED with the script's reason -- unless ``CI=true``, where they FAIL:
      in CI the Slurm tests must run.
    * Any other start failure (a daemon not coming up, the start hanging past
      the timeout) is a test error, with the script's output.

Helpers
    ``run_snakemake(args, cwd, timeout)``: runs Snakemake (this interpreter's
    ``-m snakemake``) always wrapped in ``timeout -s KILL`` -- the slurm
    executor plugin can hang instead of failing (e.g. when job status queries
    silently fail) and even ignore SIGTERM. On a timeout, the Slurm jobs the
    run had submitted are cancelled.
    ``submitted_job_ids(output)``: Slurm job ids from Snakemake's log output.
    ``require_module(name)``: skip (or fail in CI) when a module is missing.

Environment
    CI=true                        never skip: fail if the cluster cannot run
    LOTTO_TEST_SLURM_DIR           state dir (default /tmp/lotto-slurm; keep it short)
    LOTTO_TEST_SLURM_START_TIMEOUT hard limit for start-cluster.sh in s (default 600;
                                   a first start installs packages with apt-get)
    LOTTO_TEST_SLURM_KEEP=1        leave the cluster running after the session
                                   (the next session's start then takes ~1 s)
    LOTTO_TEST_SLURM_SKIP=1        skip the Slurm tests (ignored when CI=true)
    plus the knobs of start-cluster.sh (LOTTO_TEST_SLURM_GPUS, ...).

Use it from a test module in tests/slurm/ (conftest.py re-exports the fixture)::

    from harness import PROFILE_DIR, run_snakemake, submitted_job_ids

    def test_x(slurm_cluster, tmp_path):
        (tmp_path / "Snakefile").write_text(...)
        res = run_snakemake(["--profile", str(PROFILE_DIR)], cwd=tmp_path, timeout=300)
        assert res.returncode == 0, res.tail()
        states = slurm_cluster.wait_for_states(submitted_job_ids(res.output))
        assert set(states.values()) == {"COMPLETED"}
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
START_SCRIPT = HERE / "start-cluster.sh"
STOP_SCRIPT = HERE / "stop-cluster.sh"
#: the test profile (local cluster site settings)
PROFILE_DIR = HERE / "profile"
#: the real profile at the repository root (site settings from LOTTO_SLURM_* env vars)
REPO_PROFILE_DIR = REPO_ROOT / "slurm"

EX_UNAVAILABLE = 77
DEFAULT_STATE_DIR = "/tmp/lotto-slurm"
TERMINAL_STATES = frozenset(
    {
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
        "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED",
    }
)
_SUBMITTED_RE = re.compile(r"submitted with SLURM jobid (\d+)")


def in_ci() -> bool:
    """True when CI=true (or 1/yes): Slurm tests must run there, never skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_or_fail(reason: str) -> None:
    """pytest.skip(reason), or pytest.fail(reason) when running in CI."""
    if in_ci():
        pytest.fail(f"CI=true, so the Slurm tests must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


def require_module(name: str) -> None:
    """Skip (fail in CI) unless the Python module ``name`` is importable."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        skip_or_fail(f"Python module {name!r} is not installed in {sys.executable}")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _parse_env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


# --------------------------------------------------------------------------- cluster


@dataclasses.dataclass
class SlurmCluster:
    """A running local cluster, as described by STATE_DIR/cluster.env."""

    state_dir: Path
    cluster: str
    partition: str
    account: str
    node: str
    cpus: int
    mem_mb: int
    gpus: int
    slurm_conf: str
    #: when the fixture started (naive local time, second resolution), for ``since``
    started_at: _dt.datetime
    #: seconds start-cluster.sh took in this session
    start_seconds: float
    #: start-cluster.sh's stderr (what it did)
    start_log: str

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """os.environ plus SLURM_CONF for this cluster (plus ``extra``)."""
        env = dict(os.environ)
        env["SLURM_CONF"] = self.slurm_conf
        env.update(extra or {})
        return env

    def _run(self, cmd: Sequence[str], timeout: float = 30) -> str:
        res = subprocess.run(
            list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout

    def sacct(
        self,
        job_ids: Iterable[str | int] | None = None,
        since: _dt.datetime | str | None = None,
        fields: Sequence[str] = (
            "JobID", "JobName", "State", "ExitCode", "Partition", "Account",
            "Comment", "AllocTRES", "Elapsed",
        ),
    ) -> list[dict[str, str]]:
        """Allocation-level sacct rows (``sacct -X``) as dicts.

        ``job_ids``: only these jobs; else ``since`` (datetime or a sacct time
        like "now-1hour"); else everything since the fixture started.
        """
        cmd = ["sacct", "-X", "-n", "-P", "--format", ",".join(fields)]
        ids = [str(j) for j in job_ids] if job_ids is not None else None
        if ids is not None:
            if not ids:
                return []
            cmd += ["-j", ",".join(ids)]
        else:
            if since is None:
                since = self.started_at
            if isinstance(since, _dt.datetime):
                since = since.strftime("%Y-%m-%dT%H:%M:%S")
            cmd += ["-S", str(since)]
        rows = []
        for line in self._run(cmd).splitlines():
            if not line.strip():
                continue
            parts = line.split("|")
            rows.append(dict(zip(fields, parts)))
        return rows

    def sacct_states(
        self,
        job_ids: Iterable[str | int] | None = None,
        since: _dt.datetime | str | None = None,
    ) -> dict[str, str]:
        """{job id: state} from sacct, e.g. {"12": "COMPLETED"}.

        States are normalised to their first word ("CANCELLED by 0" ->
        "CANCELLED"). Same selection rules as :meth:`sacct`.
        """
        return {
            r["JobID"]: r["State"].split()[0] if r["State"] else ""
            for r in self.sacct(job_ids, since, fields=("JobID", "State"))
        }

    def wait_for_states(
        self, job_ids: Iterable[str | int], timeout: float = 60, poll: float = 1.0
    ) -> dict[str, str]:
        """Poll sacct until every job in ``job_ids`` is in a terminal state
        (accounting reaches slurmdbd asynchronously); returns the states."""
        ids = [str(j) for j in job_ids]
        deadline = time.monotonic() + timeout
        while True:
            states = self.sacct_states(ids)
            if all(states.get(j) in TERMINAL_STATES for j in ids):
                return states
            if time.monotonic() > deadline:
                return states
            time.sleep(poll)

    def squeue(self) -> list[dict[str, str]]:
        """Jobs still known to slurmctld: [{JobID, Name, State, Reason}]."""
        out = self._run(["squeue", "-h", "-o", "%i|%j|%T|%r"])
        keys = ("JobID", "Name", "State", "Reason")
        return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]

    def scancel(self, job_ids: Iterable[str | int]) -> None:
        ids = [str(j) for j in job_ids]
        if ids:
            subprocess.run(["scancel", *ids], env=self.env(), capture_output=True, timeout=30)

    def node_state(self) -> str:
        return self._run(["sinfo", "-h", "-n", self.node, "-o", "%T"]).strip()


def start_cluster(state_dir: str | os.PathLike | None = None, timeout: float | None = None) -> SlurmCluster:
    """Run start-cluster.sh under ``timeout -s KILL``; skip/fail/raise as documented."""
    state_dir = str(state_dir or os.environ.get("LOTTO_TEST_SLURM_DIR") or DEFAULT_STATE_DIR)
    if timeout is None:
        timeout = float(os.environ.get("LOTTO_TEST_SLURM_START_TIMEOUT", "600"))
    if sys.platform != "linux" or shutil.which("bash") is None or shutil.which("timeout") is None:
        skip_or_fail("the local Slurm cluster needs Linux with bash and coreutils' timeout")
    started_at = _dt.datetime.now().replace(microsecond=0)
    t0 = time.monotonic()
    try:
        res = subprocess.run(
            ["timeout", "-s", "KILL", str(int(timeout)), "bash", str(START_SCRIPT), state_dir],
            capture_output=True, text=True, timeout=timeout + 60,
        )
    except subprocess.TimeoutExpired:  # pragma: no cover - timeout(1) should have fired
        pytest.fail(f"start-cluster.sh did not return within {timeout + 60:.0f}s", pytrace=False)
    elapsed = time.monotonic() - t0
    if res.returncode == EX_UNAVAILABLE:
        reasons = [l for l in res.stderr.splitlines() if "UNAVAILABLE" in l]
        skip_or_fail(
            "local Slurm cluster unavailable: "
            + (reasons[-1].split("UNAVAILABLE:", 1)[-1].strip() if reasons else _tail(res.stderr, 5))
        )
    if res.returncode in (124, 137, -9):
        pytest.fail(
            f"start-cluster.sh was killed after {timeout:.0f}s (LOTTO_TEST_SLURM_START_TIMEOUT); "
            f"output:\n{_tail(res.stderr)}",
            pytrace=False,
        )
    if res.returncode != 0:
        pytest.fail(
            f"start-cluster.sh failed with exit code {res.returncode}:\n{_tail(res.stderr)}",
            pytrace=False,
        )
    facts = _parse_env_file(res.stdout)
    missing = {"STATE_DIR", "PARTITION", "ACCOUNT"} - facts.keys()
    if missing:
        pytest.fail(f"start-cluster.sh printed no {sorted(missing)}; stdout:\n{res.stdout}", pytrace=False)
    return SlurmCluster(
        state_dir=Path(facts["STATE_DIR"]),
        cluster=facts.get("CLUSTER", ""),
        partition=facts["PARTITION"],
        account=facts["ACCOUNT"],
        node=facts.get("NODE", "localhost"),
        cpus=int(facts.get("CPUS", "0") or 0),
        mem_mb=int(facts.get("MEM_MB", "0") or 0),
        gpus=int(facts.get("GPUS", "0") or 0),
        slurm_conf=facts.get("SLURM_CONF", "/etc/slurm/slurm.conf"),
        started_at=started_at,
        start_seconds=elapsed,
        start_log=res.stderr,
    )


def stop_cluster(state_dir: str | os.PathLike, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run stop-cluster.sh (cancels jobs, stops the daemons by recorded PID)."""
    return subprocess.run(
        ["timeout", "-s", "KILL", str(int(timeout)), "bash", str(STOP_SCRIPT), str(state_dir)],
        capture_output=True, text=True, timeout=timeout + 30,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running single-node Slurm cluster (see the module docstring)."""
    if _env_flag("LOTTO_TEST_SLURM_SKIP") and not in_ci():
        pytest.skip("LOTTO_TEST_SLURM_SKIP is set")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        if not _env_flag("LOTTO_TEST_SLURM_KEEP"):
            res = stop_cluster(cluster.state_dir)
            if res.returncode != 0:  # surface it, but do not mask the test outcome
                sys.stderr.write(f"stop-cluster.sh exited {res.returncode}:\n{_tail(res.stderr)}\n")


# --------------------------------------------------------------------------- snakemake


@dataclasses.dataclass
class SnakemakeResult:
    args: list[str]
    returncode: int
    #: stdout and stderr together, in order
    output: str
    elapsed: float
    timed_out: bool
    log_file: Path

    @property
    def job_ids(self) -> list[str]:
        return submitted_job_ids(self.output)

    def tail(self, n: int = 80) -> str:
        return f"snakemake exited {self.returncode} after {self.elapsed:.0f}s" + (
            " (KILLED by timeout)" if self.timed_out else ""
        ) + f"; last lines of {self.log_file}:\n" + _tail(self.output, n)


def submitted_job_ids(output: str) -> list[str]:
    """Slurm job ids from the plugin's 'Job N has been submitted with SLURM jobid M' lines."""
    return _SUBMITTED_RE.findall(output)


def run_snakemake(
    args: Sequence[str],
    cwd: str | os.PathLike,
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    unset_env: Iterable[str] = ("SNAKEMAKE_PROFILE", "CUDA_VISIBLE_DEVICES"),
    python: str | None = None,
    cancel_on_timeout: bool = True,
) -> SnakemakeResult:
    """Run ``python -m snakemake *args`` in ``cwd``, always under ``timeout -s KILL``.

    ``env`` entries are added to os.environ; ``unset_env`` names are removed
    first (by default SNAKEMAKE_PROFILE, so only the explicit --profile counts,
    and CUDA_VISIBLE_DEVICES, which sbatch --export=ALL would otherwise copy
    into every job). Output goes to a log file in ``cwd`` (not a pipe: nothing
    can keep a killed run's pipe open) and is returned in the result. After a
    timeout, the Slurm jobs the run had submitted are cancelled.
    """
    cwd = Path(cwd)
    python = python or sys.executable
    run_env = dict(os.environ)
    for name in unset_env:
        run_env.pop(name, None)
    run_env.update(env or {})
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    log_file = cwd / f"snakemake-{stamp}.out"
    cmd = ["timeout", "-s", "KILL", str(int(timeout)), python, "-m", "snakemake", *map(str, args)]
    t0 = time.monotonic()
    with open(log_file, "w") as fh:
        fh.write(f"$ (cd {cwd} && {' '.join(cmd)})\n")
        fh.flush()
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=run_env, stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, timeout=timeout + 60,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:  # timeout(1) itself stuck: should not happen
            rc = -9
    elapsed = time.monotonic() - t0
    output = log_file.read_text(errors="replace")
    timed_out = rc in (124, 137, -9)
    if timed_out and cancel_on_timeout:
        ids = submitted_job_ids(output)
        if ids and shutil.which("scancel"):
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
    return SnakemakeResult(
        args=list(map(str, args)), returncode=rc, output=output, elapsed=elapsed,
        timed_out=timed_out, log_file=log_file,
    )
