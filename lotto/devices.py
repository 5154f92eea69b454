"""Device slots: up to ``trainings_per_gpu`` concurrent training jobs per GPU, each on a named device.

``snakemake --cores N --resources gpu=G`` caps the number of concurrent GPU jobs but assigns no device
ids, so without help every job would land on ``cuda:0``. Each training job therefore claims a device
*slot* here: an exclusive ``flock`` on a lock file per (device, slot), held for the life of the process.
The kernel drops the lock when the process exits, however it exits (SIGKILL, OOM, a crash), so a dead job
can never keep a slot reserved; there are no stale lock files to clean up.

Slots per device: ``config resources.trainings_per_gpu`` (the Snakefile passes it to every job as
``$LOTTO_TRAININGS_PER_GPU``; 1 when unset: one training per GPU). A job takes the lowest free slot
number on the device with the most free slots (lowest device first on ties): trainings spread over the
GPUs before two share one. When every slot is held it waits rather than oversubscribe a GPU.

Which devices: without ``CUDA_VISIBLE_DEVICES`` the ``count`` devices torch sees, named ``cuda:<i>``. With
it set (Slurm sets it for a job's allocated GPUs; a user may set it by hand) the devices it lists, named by
its entries (``CUDA_VISIBLE_DEVICES=3`` is GPU ``3``, ``cuda:0`` in the process). Those slots live in a
folder of their own: ``slurm-job-<id>`` inside a Slurm job (``$SLURM_JOB_ID``: two allocations on one node
may both see their GPU as ``0``, and never wait for each other), else ``visible-<the list>``. A Slurm job
that bundles several trainings on its one GPU (slurm/config.yaml, "bundles") thus numbers them 0, 1, ...

The lock directory is local to the machine (default ``$TMPDIR/lotto-devices-<uid>``), never the results
folder: that may be a network file system shared by several nodes, whose GPUs are different devices.
``LOTTO_DEVICE_LOCK_DIR`` overrides it (e.g. to share slots between users of one machine). No torch here:
the caller says how many devices torch sees.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

LOCK_DIR_ENV = "LOTTO_DEVICE_LOCK_DIR"
#: set by the Snakefile for every job from config resources.trainings_per_gpu
PER_GPU_ENV = "LOTTO_TRAININGS_PER_GPU"


@dataclass
class DeviceClaim:
    """A held device slot; the lock lasts until :meth:`release` or the end of the process."""

    index: int  # the device in this process: cuda:<index>
    path: Path
    fd: int | None
    slot: int = 0  # which of the device's slots (0 .. per_gpu - 1)
    name: str = ""  # the device as the machine names it: "cuda:1", or a CUDA_VISIBLE_DEVICES entry ("3")
    per_gpu: int = 1

    def describe(self) -> str:
        """One line for a job's log (tests/slurm read it back): which GPU, which slot, which lock."""
        return (f"device slot: GPU {self.name} = cuda:{self.index}, slot {self.slot} "
                f"(of {self.per_gpu} per GPU), lock {self.path}")

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
    """True when CUDA_VISIBLE_DEVICES is set (even empty): the set of devices is already chosen."""
    env = os.environ if env is None else env
    return "CUDA_VISIBLE_DEVICES" in env


def visible_devices(env: Mapping[str, str] | None = None) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (indices, UUIDs or MIG names); None when it is unset."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" not in env:
        return None
    return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]


def trainings_per_gpu(env: Mapping[str, str] | None = None) -> int:
    """Slots per device from $LOTTO_TRAININGS_PER_GPU (1 when unset); a clear error for a bad value."""
    env = os.environ if env is None else env
    raw = env.get(PER_GPU_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${PER_GPU_ENV}={raw!r}: expected a whole number >= 1 (config "
                         "resources.trainings_per_gpu, which the Snakefile passes to every job)")
    return value


def _namespace(env: Mapping[str, str], visible: list[str]) -> str:
    """The lock sub-folder of a preset device list: one Slurm job's, or one list's."""
    if env.get("SLURM_JOB_ID"):
        return f"slurm-job-{re.sub(r'[^0-9A-Za-z_.-]', '_', env['SLURM_JOB_ID'])}"
    return "visible-" + re.sub(r"[^0-9A-Za-z_.,-]", "_", ",".join(visible))


def _lock_name(device: int, slot: int) -> str:
    # slot 0 keeps the name of one-training-per-GPU runs (device<i>.lock)
    return f"device{device}.lock" if slot == 0 else f"device{device}.slot{slot}.lock"


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


def _held(path: Path) -> bool:
    """Whether another process holds this slot (probed with a lock taken and dropped at once)."""
    fd = _try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def claim(
    count: int | None,
    lock_dir: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    log: Callable[[str], None] | None = None,
    per_gpu: int | None = None,
) -> DeviceClaim | None:
    """Claim a slot on one of the devices for this process; None when there is no device to claim.

    ``count``: the devices torch sees (None: unknown, e.g. no CUDA in this process). With
    CUDA_VISIBLE_DEVICES set, its entries are the devices (at most ``count`` of them when that is known);
    otherwise ``count`` devices, none when it is None or < 1. ``per_gpu``: slots per device (default
    $LOTTO_TRAININGS_PER_GPU, else 1). When every slot is held (more concurrent jobs than slots, e.g.
    ``--resources gpu`` left out), wait for one to be freed rather than pile more jobs onto a GPU;
    ``timeout_s`` bounds the wait (then TimeoutError).
    """
    env = os.environ if env is None else env
    per_gpu = trainings_per_gpu(env) if per_gpu is None else per_gpu
    if per_gpu < 1:
        raise ValueError(f"per_gpu must be >= 1, got {per_gpu}")
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir(env)
    visible = visible_devices(env)
    if visible is not None:
        names = visible if count is None else visible[:max(count, 0)]
        lock_dir = lock_dir / _namespace(env, visible)
    else:
        names = [f"cuda:{i}" for i in range(count or 0)]
    if not names:
        return None
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    warned = False
    while True:
        # the device with the most free slots first (ties: the lowest device): spread, then share
        free = {d: [s for s in range(per_gpu) if not _held(lock_dir / _lock_name(d, s))] for d in range(len(names))}
        for d in sorted(free, key=lambda d: (-len(free[d]), d)):
            for s in free[d]:
                path = lock_dir / _lock_name(d, s)
                fd = _try_lock(path)  # another job may have taken it since the probe: then the next one
                if fd is not None:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())  # for people looking: who holds the slot
                    return DeviceClaim(d, path, fd, slot=s, name=names[d], per_gpu=per_gpu)
        total = len(names) * per_gpu
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"all {total} device slots in {lock_dir} stayed held for {timeout_s}s")
        if not warned and log is not None:
            log(f"all {total} device slots ({len(names)} GPUs x {per_gpu}) are in use by other lotto jobs (locks "
                f"in {lock_dir}); waiting for one (with snakemake --resources gpu=<GPUs>, no more jobs start "
                "than there are slots)")
            warned = True
        time.sleep(poll_s)


# Claims made by pick_device must outlive the call that made them (the lock is the reservation); the
# process owns them until it exits.
_HELD: list[DeviceClaim] = []


def claim_for_process(count: int | None, log: Callable[[str], None] | None = None) -> DeviceClaim | None:
    """Claim a slot held until this process exits (logged with ``log``); None when there was none to claim."""
    held = claim(count, log=log)
    if held is None:
        return None
    _HELD.append(held)
    if log is not None:
        log(held.describe())
    return held


def main(argv: list[str] | None = None) -> None:
    """``python -m lotto.devices COUNT [HOLD_S [PER_GPU]]``: claim a slot, print ``<device> <slot> <name>``
    (``none`` when there is nothing to claim), hold it HOLD_S seconds.

    For checking a machine's set-up by hand (and used by the tests): run several at once.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    count = int(args[0])
    hold = float(args[1]) if len(args) > 1 else 0.0
    per_gpu = int(args[2]) if len(args) > 2 else None
    held = claim(count, per_gpu=per_gpu)
    print("none" if held is None else f"{held.index} {held.slot} {held.name}", flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
