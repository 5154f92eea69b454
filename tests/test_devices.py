"""Device slots (lotto.devices): concurrent training jobs on one machine get distinct (GPU, slot) pairs, up to
``resources.trainings_per_gpu`` per GPU, and ``training.device: cuda`` without CUDA fails before any work.

The slot logic is device-agnostic (lock files per device slot), so it is tested on the CPU with real
concurrent processes, a real crash (SIGKILL), preset CUDA_VISIBLE_DEVICES lists (as Slurm sets them) and a
real local Snakemake run with ``--resources gpu``.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lotto import devices
from workflow_helpers import make_workdir, snakemake


def _holder(lock_dir, count, env_extra=None, hold_s=120, per_gpu=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", devices.PER_GPU_ENV)}
    env[devices.LOCK_DIR_ENV] = str(lock_dir)
    env.update(env_extra or {})
    extra = [] if per_gpu is None else [str(per_gpu)]
    return subprocess.Popen(
        [sys.executable, "-m", "lotto.devices", str(count), str(hold_s), *extra],
        env=env, stdout=subprocess.PIPE, text=True,
    )


def _answer(proc, timeout=60) -> str:
    """What a holder printed once it held its slot: '<device> <slot> <name>' (or 'none')."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise TimeoutError("the holder printed nothing")
    return proc.stdout.readline().strip()


def _waits(proc, seconds=1.5) -> bool:
    """True when the holder is alive and has printed nothing after ``seconds``: it is waiting for a slot."""
    time.sleep(seconds)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    return proc.poll() is None and not sel.select(0)


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
    assert sorted(slots) == [f"{i} 0 cuda:{i}" for i in range(g)]

    # one job too many waits instead of sharing a device...
    waiter = _holder(tmp_path, g)
    procs.append(waiter)
    assert _waits(waiter), "a fourth job got a slot while three jobs held all three"

    # ...until a holder dies without cleaning up: the kernel drops its lock
    crashed = holders[1]
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(timeout=30)
    assert _answer(waiter) == slots[1]


def test_trainings_per_gpu_slots_spread_over_the_gpus_then_share(tmp_path, procs):
    """2 GPUs x 2 slots: four jobs at once, each GPU's first slot before any second one; a fifth waits."""
    holders = []
    for _ in range(4):  # one at a time, so that the order of the claims is known
        holders.append(_holder(tmp_path, 2, {devices.PER_GPU_ENV: "2"}))
        procs.append(holders[-1])
        holders[-1].answer = _answer(holders[-1])
    assert [h.answer for h in holders] == ["0 0 cuda:0", "1 0 cuda:1", "0 1 cuda:0", "1 1 cuda:1"]
    assert (tmp_path / "device1.slot1.lock").read_text().strip() == str(holders[3].pid)
    waiter = _holder(tmp_path, 2, per_gpu=2)  # the same count given on the command line
    procs.append(waiter)
    assert _waits(waiter), "a fifth job got one of the 4 slots"
    holders[2].send_signal(signal.SIGKILL)  # a dead job never keeps its slot
    holders[2].wait(timeout=30)
    assert _answer(waiter) == "0 1 cuda:0"


def test_a_preset_device_list_has_slots_of_its_own(tmp_path, procs):
    """CUDA_VISIBLE_DEVICES set (Slurm, or by hand): its entries are the devices, named as listed, with their
    own slots; a Slurm job's slots are its own (two jobs on one node may both see their GPU as 0)."""
    first = _holder(tmp_path, 1)
    procs.append(first)
    assert _answer(first) == "0 0 cuda:0"
    # every slot of the machine's list is held, yet a job with its own list neither waits nor shares
    own = _holder(tmp_path, 1, {"CUDA_VISIBLE_DEVICES": "3"}, hold_s=0)
    procs.append(own)
    assert _answer(own) == "0 0 3" and own.wait(timeout=30) == 0
    a = devices.claim(None, lock_dir=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "11"}, per_gpu=2)
    b = devices.claim(None, lock_dir=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "11"}, per_gpu=2)
    c = devices.claim(None, lock_dir=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "12"}, per_gpu=2)
    assert [(x.name, x.slot) for x in (a, b, c)] == [("0", 0), ("0", 1), ("0", 0)]
    assert a.path.parent.name == "slurm-job-11" and c.path.parent.name == "slurm-job-12"
    assert "GPU 0 = cuda:0, slot 1 (of 2 per GPU)" in b.describe()
    with pytest.raises(TimeoutError):  # job 11's GPU is full
        devices.claim(None, lock_dir=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "11"},
                      per_gpu=2, poll_s=0.05, timeout_s=0.2)
    # a UUID list: named by its entries, torch's count caps it
    d = devices.claim(1, lock_dir=tmp_path, env={"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"})
    assert (d.index, d.name) == (0, "GPU-aa")
    for x in (a, b, c, d):
        x.release()
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
    assert devices.claim(None, lock_dir=tmp_path, env={}) is None  # no CUDA, no list: nothing to claim


def test_trainings_per_gpu_from_the_environment():
    assert devices.trainings_per_gpu({}) == 1
    assert devices.trainings_per_gpu({devices.PER_GPU_ENV: "4"}) == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=r"LOTTO_TRAININGS_PER_GPU.*resources\.trainings_per_gpu"):
            devices.trainings_per_gpu({devices.PER_GPU_ENV: bad})


def test_default_lock_dir_is_machine_local(monkeypatch, tmp_path):
    monkeypatch.delenv(devices.LOCK_DIR_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert devices.default_lock_dir() == tmp_path / f"lotto-devices-{os.getuid()}"
    assert devices.default_lock_dir({devices.LOCK_DIR_ENV: "/x/y"}) == Path("/x/y")


# ----------------------------------------------------------------------------------- training.device: cuda
def test_cuda_asked_for_and_absent_is_a_config_error_before_any_work(tmp_path):
    """`lotto train` with training.device: cuda on a machine without CUDA: exit 2 and one line naming the key,
    before the checkpoint or the data are read (neither exists here) and before a device slot is claimed."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = {"model": {"name": "lenet"}, "training": {"device": "cuda"}}
    env = {**os.environ, devices.LOCK_DIR_ENV: str(tmp_path / "locks"), "CUDA_VISIBLE_DEVICES": "0"}
    env.pop("LOTTO_FORKSERVER", None)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lotto"), "train", "--config", json.dumps(cfg), "--data",
         str(tmp_path / "missing.npz"), "--from", str(tmp_path / "missing.safetensors"), "--replicate", "0",
         "--noise", "pretrain", "--out", str(tmp_path / "out.safetensors")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("lotto: error: config key 'training.device': 'cuda', but torch"), line
    assert "finds no CUDA device" in line and "use 'auto'" in line and "missing" not in line, line
    assert not (tmp_path / "locks").exists(), "no slot is claimed for a training that cannot run"


def test_allotted_gpu_without_cuda_claims_its_slot_and_trains_on_the_cpu(tmp_path, monkeypatch):
    """The test cluster's fake GPUs: Slurm allots one (CUDA_VISIBLE_DEVICES), torch cannot use it. The job
    still holds its slot on that GPU (the slot counts what shares it) and says so; training runs on the CPU."""
    import torch

    from lotto import train

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv(devices.PER_GPU_ENV, "3")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    lines = []
    assert train.pick_device("auto", exclusive=True, log=lines.append) == torch.device("cpu")
    try:
        assert lines[0].startswith("device slot: GPU 1 = cuda:0, slot 0 (of 3 per GPU), lock ")
        assert lines[1].startswith("warning: GPU 1 was allotted") and "training on the CPU" in lines[1]
        assert (tmp_path / "visible-1" / "device0.lock").read_text().strip() == str(os.getpid())
    finally:
        devices._HELD.pop().release()
    assert train.pick_device("cpu", exclusive=True, log=lines.append) == torch.device("cpu") and len(lines) == 2


# ----------------------------------------------------------------------------------- a local run
def test_local_run_counts_slots_per_gpu(tmp_path):
    """`snakemake --cores 3 --resources gpu=1` with trainings_per_gpu: 2 on one (fake) GPU: Snakemake is given
    2 GPU slots, and each training claims one of the 2 slots of GPU 0 (torch sees no CUDA: CPU training)."""
    work = make_workdir(tmp_path)
    text = (work / "workflow/configs/tiny.yaml").read_text()
    (work / "shared.yaml").write_text(text.replace("train_gpus: 0", "train_gpus: 1\n  trainings_per_gpu: 2"))
    siblings = [f"results/tiny/rep0/pre4/sibling{i}/trained.safetensors" for i in (1, 2, 3)]
    env = {devices.LOCK_DIR_ENV: str(tmp_path / "locks"), "CUDA_VISIBLE_DEVICES": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the jobs inherit Snakemake's environment
    try:
        # --verbose: Snakemake's own output, whose "Provided resources" line says what it was given
        out = snakemake([*siblings, "--cores", "3", "--resources", "gpu=1", "--configfile", "shared.yaml",
                         "--verbose"], cwd=work, timeout=600)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = out.stdout + out.stderr
    assert "--resources gpu=1 runs up to 2 GPU jobs at once, 2 per GPU" in text, text[-3000:]
    assert re.search(r"Provided resources: gpu=.*\b2\b", text), text[-3000:]
    logs = [work / "results/tiny/rep0/pre4/pretrain.log"] + [work / s.replace("trained.safetensors", "train.log")
                                                             for s in siblings]
    slots = [re.findall(r"device slot: GPU (\S+) = cuda:0, slot (\d) \(of 2 per GPU\), lock (\S+)", p.read_text())
             for p in logs]
    assert all(len(s) == 1 for s in slots), slots
    assert {(gpu, slot) for (gpu, slot, _), in slots} <= {("0", "0"), ("0", "1")}
    assert all(Path(lock).parent == tmp_path / "locks" / "visible-0" for (_, _, lock), in slots)


def test_trainings_per_gpu_needs_one_gpu_per_training():
    import yaml

    from lotto.config import ConfigError, validate

    cfg = yaml.safe_load((Path(__file__).parents[1] / "workflow/configs/tiny.yaml").read_text())
    assert validate(cfg)["resources"]["trainings_per_gpu"] == 1  # the default: a GPU per training
    cfg["resources"]["trainings_per_gpu"] = 2
    with pytest.raises(ConfigError, match=r"'resources\.trainings_per_gpu': 2 .* needs resources\.train_gpus: 1 "
                                          r"\(it is 0\)"):
        validate(cfg)
    cfg["resources"]["train_gpus"] = 1
    assert validate(cfg)["resources"]["trainings_per_gpu"] == 2
    cfg["resources"]["trainings_per_gpu"] = 0
    with pytest.raises(ConfigError, match="trainings_per_gpu"):
        validate(cfg)
