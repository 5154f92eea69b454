"""The device picker (lotto.devices): concurrent training jobs on one machine get distinct GPUs.

Its logic is device-agnostic (lock files per device slot), so it is tested on the CPU with real
concurrent processes, a real crash (SIGKILL) and a preset CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lotto import devices


def _holder(lock_dir, count, env_extra=None, hold_s=120):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env[devices.LOCK_DIR_ENV] = str(lock_dir)
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "lotto.devices", str(count), str(hold_s)],
        env=env, stdout=subprocess.PIPE, text=True,
    )


def _answer(proc, timeout=60) -> str:
    """The slot a holder printed (it prints once it holds one)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise TimeoutError("the holder printed nothing")
    return proc.stdout.readline().strip()


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def test_concurrent_jobs_get_distinct_devices_and_a_crash_frees_its_slot(tmp_path, procs):
    g = 3
    holders = [_holder(tmp_path, g) for _ in range(g)]
    procs += holders
    slots = [_answer(p) for p in holders]
    assert all(p.poll() is None for p in holders), "every holder still holds its slot"
    assert sorted(slots) == [str(i) for i in range(g)]

    # one job too many waits instead of sharing a device...
    waiter = _holder(tmp_path, g)
    procs.append(waiter)
    time.sleep(1.5)
    assert waiter.poll() is None
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(waiter.stdout, selectors.EVENT_READ)
    assert not sel.select(0), "a fourth job got a slot while three jobs held all three"

    # ...until a holder dies without cleaning up: the kernel drops its lock
    crashed = holders[1]
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(timeout=30)
    assert _answer(waiter) == slots[1]


def test_cuda_visible_devices_set_means_no_picking(tmp_path, procs):
    first = _holder(tmp_path, 1)
    procs.append(first)
    assert _answer(first) == "0"
    # every slot is taken, yet a job whose devices were chosen for it (Slurm) neither waits nor claims
    slurm_job = _holder(tmp_path, 1, {"CUDA_VISIBLE_DEVICES": "0"}, hold_s=0)
    procs.append(slurm_job)
    assert _answer(slurm_job) == "none"
    assert slurm_job.wait(timeout=30) == 0
    assert devices.claim(4, lock_dir=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""}) is None


def test_claims_in_one_process(tmp_path):
    a = devices.claim(2, lock_dir=tmp_path, env={})
    b = devices.claim(2, lock_dir=tmp_path, env={})
    assert (a.index, b.index) == (0, 1)
    with pytest.raises(TimeoutError):
        devices.claim(2, lock_dir=tmp_path, env={}, poll_s=0.05, timeout_s=0.2)
    a.release()
    c = devices.claim(2, lock_dir=tmp_path, env={})
    assert c.index == 0
    assert (tmp_path / "device0.lock").read_text().strip() == str(os.getpid())
    b.release()
    c.release()
    assert devices.claim(0, lock_dir=tmp_path, env={}) is None


def test_default_lock_dir_is_machine_local(monkeypatch, tmp_path):
    monkeypatch.delenv(devices.LOCK_DIR_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert devices.default_lock_dir() == tmp_path / f"lotto-devices-{os.getuid()}"
    assert devices.default_lock_dir({devices.LOCK_DIR_ENV: "/x/y"}) == Path("/x/y")
