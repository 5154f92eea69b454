"""One GPU per concurrent training job on a multi-GPU machine.

``snakemake --cores N --resources gpu=G`` caps the number of concurrent GPU jobs at G but assigns no
device ids, so without help every job would land on ``cuda:0``. Each training job therefore claims a
device *slot* here: an exclusive ``flock`` on ``<lock dir>/device<i>.lock``, held for the life of the
process. The kernel drops the lock when the process exits, however it exits (SIGKILL, OOM, a crash), so
a dead job can never keep a device reserved; there are no stale lock files to clean up.

When ``CUDA_VISIBLE_DEVICES`` is already set (Slurm sets it for a job's allocated GPUs; a user may set
it by hand) someone else has chosen: nothing is claimed and the visible devices are used as they are.

The lock directory is local to the machine (default ``$TMPDIR/lotto-devices-<uid>``), never the results
folder: that may be a network file system shared by several nodes, whose GPUs are different devices.
``LOTTO_DEVICE_LOCK_DIR`` overrides it (e.g. to share slots between users of one machine).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

LOCK_DIR_ENV = "LOTTO_DEVICE_LOCK_DIR"


@dataclass
class DeviceClaim:
    """A held device slot; the lock lasts until :meth:`release` or the end of the process."""

    index: int
    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def default_lock_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(LOCK_DIR_ENV):
        return Path(env[LOCK_DIR_ENV])
    return Path(tempfile.gettempdir()) / f"lotto-devices-{os.getuid()}"


def visible_devices_preset(env: Mapping[str, str] | None = None) -> bool:
    """True when CUDA_VISIBLE_DEVICES is set (even empty): the device choice is already made."""
    env = os.environ if env is None else env
    return "CUDA_VISIBLE_DEVICES" in env


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def claim(
    count: int,
    lock_dir: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    log: Callable[[str], None] | None = None,
) -> DeviceClaim | None:
    """Claim one of ``count`` device slots for this process; None when there is nothing to choose.

    Nothing to choose: CUDA_VISIBLE_DEVICES is set, or ``count`` < 1. The lowest free slot is taken.
    When every slot is held (more concurrent jobs than devices, e.g. ``--resources gpu`` left out), wait
    for one to be freed rather than pile two jobs onto one GPU; ``timeout_s`` bounds the wait (then
    TimeoutError).
    """
    if visible_devices_preset(env) or count < 1:
        return None
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir(env)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    warned = False
    while True:
        for i in range(count):
            path = lock_dir / f"device{i}.lock"
            fd = _try_lock(path)
            if fd is not None:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())  # for people looking: who holds the slot
                return DeviceClaim(i, path, fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"all {count} device slots in {lock_dir} stayed held for {timeout_s}s")
        if not warned and log is not None:
            log(f"all {count} devices are in use by other lotto jobs (locks in {lock_dir}); waiting for one "
                f"(run snakemake with --resources gpu={count} to start no more jobs than devices)")
            warned = True
        time.sleep(poll_s)


# Claims made by pick_device must outlive the call that made them (the lock is the reservation); the
# process owns them until it exits.
_HELD: list[DeviceClaim] = []


def claim_for_process(count: int, log: Callable[[str], None] | None = None) -> int | None:
    """Claim a slot held until this process exits; its index, or None when nothing was chosen."""
    held = claim(count, log=log)
    if held is None:
        return None
    _HELD.append(held)
    return held.index


def main(argv: list[str] | None = None) -> None:
    """``python -m lotto.devices COUNT [HOLD_S]``: claim a slot, print its index, hold it HOLD_S seconds.

    For checking a machine's set-up by hand (and used by the tests): run several at once.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    count = int(args[0])
    hold = float(args[1]) if len(args) > 1 else 0.0
    held = claim(count)
    print("none" if held is None else held.index, flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
