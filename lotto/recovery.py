"""Rerunning after a hard kill needs no Snakemake flags: a lock left by a dead run is cleared when provably stale.

Snakemake locks its working directory while it runs (``.snakemake/locks/<n>.input.lock`` and
``<n>.output.lock``, the lists of files the run reads and writes) and removes the lock when it ends. A run
killed hard (``kill -9``, a lost login session, a power cut) leaves it behind, and the next run stops with
"Directory cannot be locked ... --unlock". The lock files do not say which process made them, so the Snakefile
calls :func:`claim` in every snakemake main process (not in the jobs Snakemake runs inside cluster jobs):

- it holds a shared ``flock`` on ``.snakemake/lotto-run.lock`` from parsing the Snakefile (before Snakemake
  locks anything) until the process ends, however it ends: the kernel drops a flock with its process;
- a run that gets that flock exclusively knows that no other snakemake of this workflow is alive in the folder,
  so the locks left there are stale: it removes them and says so in one line;
- on a shared file system, a run on another machine may hold a lock that a local-only flock cannot see (file
  systems mounted with local locks), so every run also keeps a record ``.snakemake/lotto-runs/<host>-<pid>.json``
  while it lives (removed at exit). A record of another machine means "not provable": the lock stays, and one line
  gives the exact command to clear it (``snakemake --unlock``), as it does where the file system refuses flock.

A lock of a run that is alive is never touched (Snakemake's own error then says another run is working there).
Why clearing is then safe: lotto's outputs are written atomically, and the workflow profile reruns the jobs the
dead run left incomplete.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shlex
import socket
import sys
from pathlib import Path

LOCK_FILE = "lotto-run.lock"
RUNS = "lotto-runs"
_held: dict[str, object] = {}  # .snakemake folder -> the open file holding this process's flock


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22); with the pid it
    names one process (pids are reused). None when there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _records(folder: Path) -> list[tuple[Path, dict]]:
    found = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # being written, or damaged: not a live run's proof either way
        if isinstance(record, dict):
            found.append((p, record))
    return found


def _describe(record: dict) -> str:
    return f"pid {record.get('pid')} on {record.get('host')}: {record.get('command', 'snakemake')}"


def unlock_command(argv: list[str], workdir: Path) -> str:
    """The command that clears the lock of the working directory ``workdir`` for a user who ran ``argv``."""
    cmd = ["snakemake", "--unlock"]
    for i, arg in enumerate(argv):
        if arg in ("-d", "--directory", "-s", "--snakefile") and i + 1 < len(argv):
            cmd += [arg, argv[i + 1]]
        elif arg.startswith(("--directory=", "--snakefile=")):
            cmd.append(arg)
    return " ".join(map(shlex.quote, cmd))


def claim(workdir: str | Path = ".", argv: list[str] | None = None, say=None) -> str:
    """Register this snakemake process in ``workdir`` and clear the locks of dead runs when provably stale.

    Returns what it found: "none" (no lock, or a .snakemake this user cannot write to), "cleared", "alive" (another run of the workflow is alive here: its
    lock is left alone), "unknown" (a lock that may be another machine's, or flock unsupported: one line gives the
    command) or "held" (this process claimed the folder already). ``say`` prints one line (default: stderr).
    """
    argv = sys.argv if argv is None else argv
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    smk = Path(workdir).resolve() / ".snakemake"
    if str(smk) in _held:
        return "held"
    runs = smk / RUNS
    host = socket.gethostname()
    try:
        smk.mkdir(parents=True, exist_ok=True)
        fh = open(smk / LOCK_FILE, "a+")
    except OSError:
        return "none"  # a folder this user cannot write to: Snakemake itself will say so
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        exclusive = True
    except BlockingIOError:
        exclusive = False
    except OSError:  # ENOLCK, EINVAL...: a file system without flock
        fh.close()
        fh, exclusive = None, None

    locks = sorted((smk / "locks").glob("*.lock")) if (smk / "locks").is_dir() else []
    records = _records(runs)
    unlocking = "--unlock" in argv  # the user says no other run is alive: other machines' records go too
    if exclusive:
        # no run of this workflow holds the flock: this machine's records are of dead runs
        for p, record in records:
            if record.get("host") == host or unlocking:
                p.unlink(missing_ok=True)
    others = [r for _, r in records if r.get("host") != host]
    dead = [r for _, r in records if r.get("host") == host and _start_time(int(r.get("pid", 0))) != r.get("start")]
    outcome = "none"
    if locks and exclusive and (not others or unlocking):
        for lock in locks:
            lock.unlink(missing_ok=True)
        who = "; ".join(_describe(r) for r in dead) or "its process is gone"
        say(f"lotto: removed the Snakemake lock left in {smk / 'locks'} by a run that is no longer running ({who}); "
            "this run redoes the jobs it left unfinished")
        outcome = "cleared"
    elif locks and exclusive is False:
        alive = [r for _, r in records if r.get("host") == host and r not in dead]
        who = "; ".join(_describe(r) for r in alive) or "another snakemake"
        say(f"lotto: another run of this workflow is working in {smk.parent} ({who}): its lock stays; wait for it "
            "to end (or stop it) if Snakemake refuses to start below")
        outcome = "alive"
    elif locks:
        why = (f"a run on another machine may hold it ({'; '.join(_describe(r) for r in others)})" if others
               else "this file system does not support flock, so lotto cannot tell whether its run is alive")
        say(f"lotto: {smk / 'locks'} holds a Snakemake lock that lotto cannot prove stale: {why}; if no snakemake "
            f"runs in {smk.parent} on any machine, clear it with: {unlock_command(argv, smk.parent)}")
        outcome = "unknown"

    if fh is not None:
        fcntl.flock(fh, fcntl.LOCK_SH)  # from exclusive to shared: other runs may start beside this one
        _held[str(smk)] = fh
    me = {"host": host, "pid": os.getpid(), "start": _start_time(os.getpid()),
          "command": " ".join(map(shlex.quote, ["snakemake", *argv[1:]]))[:300]}
    mine = runs / f"{host}-{os.getpid()}.json"
    try:
        runs.mkdir(exist_ok=True)
        tmp = runs / f".{mine.name}.tmp"
        tmp.write_text(json.dumps(me))
        os.replace(tmp, mine)
    except OSError:
        pass  # a read-only .snakemake: Snakemake itself will say so
    else:
        atexit.register(mine.unlink, missing_ok=True)
    return outcome
