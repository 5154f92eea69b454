"""Cheaper start-up for the jobs of a local run: a fork server.

Every rule runs one ``lotto`` process, and a training job of a small config spends longer starting (importing
torch costs ~2 s here, CUDA build) than training. For a local ``snakemake --cores N`` run, the Snakefile's
``onstart`` starts one server per run that imports torch and lotto once and then forks a child per
``lotto`` command: the job's own ``lotto`` process (the client) connects to the server's Unix socket, hands over
its command line, working directory, environment, umask and its stdin/stdout/stderr (file descriptors passed
over the socket), forwards the signals it receives (SIGTERM still saves a training's state) and exits with the
child's exit status. Every job stays one Snakemake job with its own files and log; the forked child runs the
same code as a fresh process, so the artifacts are the same bytes (tested).

It is an optimisation only, never a dependency: a client that finds no server, a server that refuses (another
interpreter or another lotto checkout, e.g. under ``--use-conda``, or a source tree changed since the server
started) or ``LOTTO_FORKSERVER=off`` means the command runs in its own process as before. Cluster jobs never use
it (the Snakefile starts it for local execution only). The server never touches CUDA (a forked CUDA context is
unusable); children initialise it themselves.

Provenance: the server stamps it (git state, versions) once, before it imports lotto, and its children inherit
the stamp, so a record names the code the server imported; a request after the source tree changed is refused
(lotto/provenance.py). Its own entry point is ``python -m lotto.forkserver``; children run the command table
(lotto.commands), never the ``lotto`` entry point (lotto.cli), which is this module's client.

The server is single-threaded on purpose: forking a process whose other threads may hold locks is unsafe.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the environment variable naming the server's socket; "off" (or "0", "no", "false") disables the server
ENV = "LOTTO_FORKSERVER"
OFF = ("", "0", "off", "no", "false", "none")
#: what a job would import anyway; torch is the point, the rest saves the child a few hundred milliseconds
#  (every family's cli module is added from the registry)
PRELOAD = ("numpy", "yaml", "safetensors.numpy", "torch", "lotto.commands", "lotto.runner", "lotto.train",
           "lotto.models", "lotto.data", "lotto.staging", "lotto.io", "lotto.masks", "lotto.pruning",
           "lotto.figures", "lotto.claims")
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HEADER = struct.Struct("!I")


def _identity() -> dict:
    """What must agree between client and server for the child to run the client's code."""
    import lotto

    return {"python": os.path.realpath(sys.executable), "lotto": os.path.realpath(lotto.__file__)}


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal n: the shell's 128 + n


# ---------------------------------------------------------------------------------------------------------
# client: called first thing by `lotto`
# ---------------------------------------------------------------------------------------------------------
def delegate(argv: list[str]) -> int | None:
    """Run ``lotto argv`` in a child of the server named by $LOTTO_FORKSERVER and return its exit status, or
    None when there is no server to use (the caller then runs the command itself)."""
    path = os.environ.get(ENV, "")
    if path.strip().lower() in OFF:
        return None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    except OSError:
        return None  # not (or no longer) running
    with sock:
        umask = os.umask(0o022)
        os.umask(umask)
        request = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                              **_identity()}).encode()
        try:
            socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
            sock.sendall(request)
            reply = sock.makefile("rb")
            first = reply.readline().decode().split()
        except OSError:
            return None
        if len(first) != 2 or first[0] != "pid":
            return None  # refused (first is the reason) or gone before forking: nothing ran
        child = int(first[1])

        def forward(signum, _frame):
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        for sig in _FORWARDED:
            signal.signal(sig, forward)
        try:
            last = reply.readline().decode().split()
        except OSError:
            last = []
        if len(last) == 2 and last[0] == "exit":
            return int(last[1])
        print(f"lotto: error: the fork server ({path}) stopped while running `lotto {' '.join(argv)}`; rerun it "
              f"with {ENV}=off", file=sys.stderr, flush=True)
        return 1


# ---------------------------------------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------------------------------------
def _preload(log) -> None:
    import importlib

    from lotto.families import FAMILIES

    t = time.perf_counter()
    for name in (*PRELOAD, *(family.cli for family in FAMILIES.values())):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional module costs the child its import, nothing more
            log(f"preload: {name}: {exc}")
    log(f"preloaded in {time.perf_counter() - t:.1f} s")


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client hung up")
        data += chunk
    return data


def _run_child(request: dict, fds: list[int]) -> int:
    """In the forked child: become the client's process (fds, directory, environment, umask) and run lotto."""
    for sig in _FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(int(request["umask"]))
    sys.argv = ["lotto", *request["argv"]]
    from lotto.commands import run  # the command table; never lotto.cli, the entry point that is our client

    try:
        return int(run(request["argv"]) or 0)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


class _Server:
    """The accept loop's state: the listening socket, the selector and the running children."""

    def __init__(self, path: str, log):
        self.path, self.log = path, log
        self.identity = _identity()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(128)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.running: dict[int, tuple[socket.socket, int]] = {}  # pid -> (client connection, pidfd)
        self.served = 0
        self.last = time.monotonic()

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(10)
            header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
            request = json.loads(_recv_exactly(conn, _HEADER.unpack(header)[0]))
            conn.settimeout(None)
            from lotto import provenance  # imported by serve(): a lookup (the client never needs it)

            mismatch = [k for k in self.identity if request.get(k) != self.identity[k]]
            changed = [] if mismatch else provenance.changed_files()
            if mismatch or changed or len(fds) != 3:
                # A changed source tree: our children would run the code imported at our start under the
                # provenance stamped then, or import changed modules that no record names. Refused, the job's
                # process runs the command itself: it imports the tree as it is now and stamps that, so its
                # records name the code that ran and the run goes on (failing it would lose nothing but time,
                # yet stop a long run for an edit). Checked per request: cheap (file status, hashes on change).
                why = (f"different {','.join(mismatch)}" if mismatch else
                       f"source changed since the server started: {', '.join(changed[:3])}"
                       f"{' ...' if len(changed) > 3 else ''}" if changed else "fds")
                self.log(f"refused ({why}): {request.get('argv')}")
                conn.sendall(f"refused {why}\n".encode())
                conn.close()
                return
            sys.stdout.flush()
            sys.stderr.flush()
            child = os.fork()
            if child == 0:
                self._become(conn, request, fds)  # never returns
            self.served += 1
            self.log(f"served {self.served}: pid {child}: lotto {' '.join(request['argv'])[:200]}")
            pidfd = os.pidfd_open(child)
            self.running[child] = (conn, pidfd)
            self.sel.register(pidfd, selectors.EVENT_READ, ("exit", child))
            self.sel.register(conn, selectors.EVENT_READ, ("hangup", child))
            conn.sendall(f"pid {child}\n".encode())  # a client gone by now shows as a hangup next round
        except (OSError, ValueError, struct.error) as exc:
            self.log(f"bad request: {exc}")
            if not any(c is conn for c, _ in self.running.values()):
                conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _become(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        code = 1
        try:
            self.listener.close()
            conn.close()
            for other, other_pidfd in self.running.values():  # the other jobs' ends: not this child's
                other.close()
                os.close(other_pidfd)
            self.sel.close()
            code = _run_child(request, fds)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def reap(self, pid: int) -> None:
        conn, pidfd = self.running.pop(pid)
        _, status = os.waitpid(pid, 0)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        if conn.fileno() != -1:
            try:
                self.sel.unregister(conn)
            except KeyError:  # already unregistered by a hangup
                pass
            try:
                conn.sendall(f"exit {_exit_code(status)}\n".encode())
            except OSError:
                pass
            conn.close()
        self.last = time.monotonic()

    def hangup(self, pid: int) -> None:
        conn = self.running[pid][0]
        self.sel.unregister(conn)
        # A client forwards every signal it can catch and waits for the child, so a client gone first was
        # SIGKILLed (or crashed): the job died hard, and so does its child, as a plain `lotto` process would.
        self.log(f"client of pid {pid} hung up: SIGKILL to it")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_accepting(self) -> None:
        if self.listener.fileno() != -1:
            self.sel.unregister(self.listener)
            self.listener.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass


def serve(path: str, parent: int | None = None, idle_timeout: float = 3600.0) -> None:
    """Listen on ``path`` until the parent process (Snakemake) is gone or nothing came for ``idle_timeout`` s."""
    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] forkserver {os.getpid()}: {message}", flush=True)

    def stop(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # Handle.stop(): leave through `finally`, which removes the socket
    # provenance once, before importing any of the code it names; children inherit it (lotto/provenance.py)
    from lotto import provenance

    record = provenance.stamp()
    log(f"provenance: lotto {record['lotto']}, commit {record['git_commit']}"
        f"{' (dirty)' if record['git_dirty'] else ''}, torch {record['torch']}")
    _preload(log)
    server = _Server(path, log)  # only after the preload: until then clients find no socket and run on their own
    log(f"listening on {path}")
    accepting = True
    try:
        while True:
            for key, _ in server.sel.select(timeout=1.0):
                kind, pid = key.data
                try:
                    if kind == "accept":
                        server.accept()
                    elif kind == "exit":
                        server.reap(pid)
                    else:
                        server.hangup(pid)
                except Exception as exc:  # one bad event must not take the running jobs' server down
                    log(f"{kind}: {type(exc).__name__}: {exc}")
            if accepting and parent is not None and os.getppid() != parent:
                # Snakemake is gone; its jobs' clients may not be (orphaned jobs run on, as without a server)
                log("parent gone: no new commands; stopping once the running ones end")
                accepting = False
                server.stop_accepting()
            if not server.running and (not accepting or time.monotonic() - server.last > idle_timeout):
                break
    finally:
        server.stop_accepting()
        for pid in server.running:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        log(f"stopped after serving {server.served} commands")


# ---------------------------------------------------------------------------------------------------------
# lifecycle, from the Snakefile
# ---------------------------------------------------------------------------------------------------------
class Handle:
    """A running server: its process, socket and log. ``stop()`` is idempotent."""

    def __init__(self, proc: subprocess.Popen, path: str, log: Path):
        self.proc, self.path, self.log = proc, path, log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if os.environ.get(ENV) == self.path:
            del os.environ[ENV]
        try:
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass


def start(log: str | os.PathLike) -> Handle | None:
    """Start a server for the processes this one starts from now on (it sets $LOTTO_FORKSERVER), logging to
    ``log``. None, and nothing started, when the user turned it off or a server is already set."""
    if ENV in os.environ:
        return None  # off, or an outer run's server: leave it be
    if sys.platform != "linux" or not hasattr(os, "pidfd_open"):
        return None  # fork after importing torch is unsafe on macOS; pidfd_open needs Linux >= 5.3
    path = os.path.join(tempfile.mkdtemp(prefix="lotto-fs-"), "socket")  # short: Unix socket paths < 108 bytes
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as sink:
        # -P: find lotto as the jobs' `lotto` script does (PYTHONPATH, site-packages), not in the working dir
        proc = subprocess.Popen([sys.executable, "-P", "-m", "lotto.forkserver", path, "--parent", str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    os.environ[ENV] = path
    handle = Handle(proc, path, log)
    atexit.register(handle.stop)  # also when Snakemake ends without its onsuccess/onerror hooks
    return handle


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lotto.forkserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", help="Unix socket path to listen on")
    parser.add_argument("--parent", type=int, default=None, help="stop when this process is gone")
    parser.add_argument("--idle-timeout", type=float, default=3600.0, help="stop after this many idle seconds")
    args = parser.parse_args(argv)
    serve(args.socket, args.parent, args.idle_timeout)


if __name__ == "__main__":
    main()
