"""Results you can trust later (issue 21): `lotto verify` on a finished tiny run with every kind of damage planted,
and a run whose snakemake is SIGKILLed midway, rerun with the README's command.

One finished tiny run (real Snakemake, ~30 s on 2 cores) serves both: it is the tree the damage is planted in (a
copy) and the clean run the recovered run's masks are compared with.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from workflow_helpers import env, make_workdir, snakemake

CONFIG = "workflow/configs/tiny.yaml"
EXP = "results/tiny"
LOTTO = str(Path(sys.executable).parent / "lotto")
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("clean"))
    snakemake(["--cores", "2", "--configfile", CONFIG], cwd=work, timeout=1200)
    return work


def lotto_verify(work: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([LOTTO, "verify", EXP, *args], cwd=work, env=env(), capture_output=True, text=True,
                          timeout=300)


def masks_of(work: Path) -> dict[str, bytes]:
    return {str(p.relative_to(work)): p.read_bytes() for p in sorted((work / EXP).rglob("*.mask"))}


# --------------------------------------------------------------------------- planting damage
def tensor_span(path: Path, name: str) -> tuple[int, int, str]:
    """(start, end, dtype) of tensor ``name``'s bytes in a safetensors file (its documented layout: an 8-byte
    little-endian header length, the JSON header, then the data)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    entry = json.loads(raw[8:8 + n])[name]
    start, end = entry["data_offsets"]
    return 8 + n + start, 8 + n + end, entry["dtype"]


def flip_a_mantissa_bit(path: Path, name: str) -> tuple[float, float]:
    """Flip the lowest mantissa bit of the tensor's first float32: the file keeps its size, the value stays finite
    and changes in its 7th digit."""
    start, _, dtype = tensor_span(path, name)
    assert dtype == "F32"
    raw = bytearray(path.read_bytes())
    before = struct.unpack("<f", raw[start:start + 4])[0]
    raw[start] ^= 0x01
    after = struct.unpack("<f", raw[start:start + 4])[0]
    path.write_bytes(bytes(raw))
    return before, after


def set_first_value(path: Path, name: str, value: float) -> None:
    start, _, _ = tensor_span(path, name)
    raw = bytearray(path.read_bytes())
    raw[start:start + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))


def resnet20_mask(path: Path) -> None:
    """A real ResNet-20 mask for the tiny run's inputs (1x28x28, 10 classes), made by lotto's own pruning."""
    import torch

    from lotto import models, pruning

    model = models.build_model({"name": "resnet20"}, 1, 10, 28, 0)
    names = models.prunable_names(model)
    weights = {n: t.detach().numpy() for n, t in model.state_dict().items() if n in names}
    pruning.global_magnitude(weights, 0.5).save(path)
    del torch


@pytest.mark.slow
def test_a_finished_run_verifies_clean(finished):
    proc = lotto_verify(finished)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    n_ckpt = len(list((finished / EXP).rglob("*.safetensors")))
    n_mask = len(list((finished / EXP).rglob("*.mask")))
    assert f"checkpoints  {n_ckpt} read, 0 damaged" in out, out
    assert f"masks        {n_mask} read, 0 damaged" in out, out
    assert "one lotto commit" in out and "verify: OK" in out, out
    assert "without tensor digests" not in out  # everything this lotto writes carries them
    assert not proc.stderr, proc.stderr

    # the same through the workflow's target: it builds nothing and prints the summary
    target = snakemake(["verify", "--cores", "1", "--configfile", CONFIG], cwd=finished)
    assert "verify: OK" in target.stdout + target.stderr and "config given inline" in target.stdout + target.stderr
    assert "all 1 jobs done" in target.stdout + target.stderr  # the verify job only (lotto's console)


@pytest.mark.slow
def test_every_kind_of_planted_damage_is_named(finished, tmp_path):
    work = tmp_path / "wf"
    shutil.copytree(finished, work, symlinks=True)
    root = work / EXP
    planted = {}

    flipped = root / "rep0/pre0/sibling1/trained.safetensors"
    before, after = flip_a_mantissa_bit(flipped, "fc1.weight")
    assert np.isfinite(after) and after != before and abs(after - before) <= abs(before) * 2**-22
    planted["bit flip"] = f"{flipped.relative_to(work)}: tensor 'fc1.weight' does not match the sha256"

    absurd = root / "rep0/pre4/sibling1/trained.safetensors"
    set_first_value(absurd, "conv2.weight", 1e30)
    planted["absurd value"] = f"{absurd.relative_to(work)}: tensor 'conv2.weight' holds 1e+30, beyond the bound"

    truncated = root / "rep0/pre0/sibling2/trained.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:30_000])
    planted["truncated checkpoint"] = f"{truncated.relative_to(work)}: not a readable checkpoint, truncated"

    truncated_mask = root / "rep0/pre4/sibling2/masks/s0.8000.mask"
    truncated_mask.write_bytes(truncated_mask.read_bytes()[:-500])
    planted["truncated mask"] = f"{truncated_mask.relative_to(work)}: truncated or damaged mask"

    foreign = root / "rep0/pre0/sibling1/masks/s0.5000.mask"
    resnet20_mask(foreign)
    planted["foreign layout"] = f"{foreign.relative_to(work)}: a mask of a resnet20, not of this run's lenet"

    record = root / "rep0/pre4/sibling3/metrics.json"
    metrics = json.loads(record.read_text())
    metrics["provenance"]["git_commit"] = "0123456789abcdef0123456789abcdef01234567"
    metrics["test_correct"] = [1, 0, 1]  # a key this lotto does not know (another issue adds it): no complaint
    record.write_text(json.dumps(metrics))
    planted["mixed commits"] = "MIXED: 2 lotto commits"

    stray = root / "rep0/pre0/.trained.safetensors.k3j4h5g6.tmp.safetensors"
    stray.write_bytes(b"\0" * 1000)
    planted["stray temp file"] = f"1 temporary file of writes that never finished (safe to delete): " \
                                 f"{stray.relative_to(work)}"

    # what a training killed between its saves leaves (lotto.train: <results>/.resume/<output path>.pt)
    state = work / "results/.resume" / EXP / "rep0/pre4/sibling1/trained.safetensors.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"\0" * 100)
    planted["resume state"] = f"1 resumable training state of interrupted trainings: {state.relative_to(work)}"

    proc = lotto_verify(work)
    out = proc.stdout
    print(out)
    assert proc.returncode == 1, out + proc.stderr
    target = snakemake(["verify", "--cores", "1", "--configfile", CONFIG], cwd=work, check=False)
    assert target.returncode != 0 and planted["bit flip"] in target.stdout + target.stderr
    for kind, text in planted.items():
        assert text in out, f"{kind}: {text!r} not in\n{out}"
    assert "0123456789abcdef0123456789abcdef01234567: 1 file (results/tiny/rep0/pre4/sibling3/metrics.json)" in out
    damaged = [ln for ln in out.splitlines() if ln.startswith("DAMAGED ")]
    assert len(damaged) == 5, damaged  # one line each; the mixed commit and the temp file are not damaged files
    assert "5 files DAMAGED" in out.splitlines()[-1] and "delete the temporary files" in out.splitlines()[-1]
    assert len(out.splitlines()) <= 30, "not one screen"

    # a tree copied without the run's config.yaml: layouts against the network most checkpoints record
    (root / "config.yaml").unlink()
    proc = lotto_verify(work)
    assert proc.returncode == 1 and "checked against the network most checkpoints record (lenet" in proc.stdout
    assert planted["foreign layout"] in proc.stdout and planted["absurd value"] in proc.stdout


@pytest.mark.slow
def test_a_job_reading_a_damaged_checkpoint_stops_with_one_line(finished, tmp_path):
    """What the issue found used silently: a rerun of the masks of a checkpoint with a flipped bit, and of one
    holding 1e30, now stops at that job with one line naming the file and the tensor."""
    work = tmp_path / "wf"
    shutil.copytree(finished, work, symlinks=True)
    ckpt = work / EXP / "rep0/pre0/sibling1/trained.safetensors"
    for damage, expected in ((lambda: flip_a_mantissa_bit(ckpt, "conv1.weight"), "does not match the sha256"),
                             (lambda: set_first_value(ckpt, "conv1.weight", 1e30), "holds 1e+30")):
        shutil.copy(finished / EXP / "rep0/pre0/sibling1/trained.safetensors", ckpt)
        damage()
        mask = work / EXP / "rep0/pre0/sibling1/masks/s0.5000.mask"
        mask.unlink(missing_ok=True)
        proc = snakemake([str(mask.relative_to(work)), "--cores", "1", "--configfile", CONFIG], cwd=work, check=False)
        assert proc.returncode != 0
        log = (work / EXP / "rep0/pre0/sibling1/masks/s0.5000.log").read_text()
        errors = [ln for ln in log.splitlines() if ln.startswith("lotto: error:")]
        assert len(errors) == 1 and f"{ckpt.relative_to(work)}: tensor 'conv1.weight' {expected}" in errors[0], log
        assert not mask.exists()


# --------------------------------------------------------------------------- recovery from SIGKILL
def processes_in(folder: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose working directory is ``folder`` or below it."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cwd = os.readlink(p / "cwd")
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append((int(p.name), cmd))
    return found


def running(pid: int) -> bool:
    """Is process ``pid`` alive (a zombie, which a container's init may never reap, is not)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until_gone(folder: Path, seconds: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + seconds
    while (left := processes_in(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.slow
def test_a_sigkilled_snakemake_reruns_with_the_readme_command(finished, tmp_path):
    """kill -9 of snakemake mid-run, then the same command again (README: "after a crash") with no flags: the
    stale lock is cleared, the interrupted jobs are redone, the masks equal the clean run's byte for byte, and no
    process of the killed run (its fork server, the forked jobs) outlives it."""
    work = make_workdir(tmp_path).resolve()
    command = ["--cores", "2", "--configfile", CONFIG]
    incomplete = work / ".snakemake" / "incomplete"
    with open(tmp_path / "killed.out", "w") as fh:
        smk = subprocess.Popen([SNAKEMAKE, *command], cwd=work, env=env(), stdout=fh, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and smk.poll() is None:
            # midway: masks being made while trainings run (their outputs marked incomplete)
            if list((work / EXP).rglob("*.mask")) and len(list(incomplete.rglob("*"))) >= 2:
                break
            time.sleep(0.05)
        assert smk.poll() is None, "the run ended before it could be killed"
        os.kill(smk.pid, signal.SIGKILL)  # snakemake only: its jobs and fork server are orphaned, as after kill -9
        smk.wait(timeout=60)
    finally:
        if smk.poll() is None:
            os.killpg(smk.pid, signal.SIGKILL)
            smk.wait(timeout=60)
    server_log = (work / ".snakemake/lotto-forkserver.log").read_text()
    server = int(server_log.split("forkserver ", 1)[1].split(":", 1)[0])
    assert list((work / ".snakemake/locks").glob("*.lock")), "the killed run left no lock: nothing to recover from"
    killed_masks = masks_of(work)
    assert 0 < len(killed_masks) < len(masks_of(finished)), "not killed midway"
    proc = lotto_verify(work)  # what the killed run left, as lotto verify sees it
    assert proc.returncode == 1 and "Snakemake marks incomplete (its jobs were interrupted)" in proc.stdout, proc.stdout
    assert "an interrupted run: rerun the same snakemake command" in proc.stdout.splitlines()[-1]

    rerun = snakemake(command, cwd=work)  # the README's command, unchanged
    assert "lotto: removed the Snakemake lock" in rerun.stderr, rerun.stderr[-3000:]
    assert "IncompleteFilesException" not in rerun.stderr and "LockException" not in rerun.stderr

    assert masks_of(work) == masks_of(finished)
    left = wait_until_gone(work, 60)
    assert not left, f"processes of the killed run outlived it: {left}"
    assert not running(server), "the killed run's fork server is still running"
    proc = lotto_verify(work)
    assert proc.returncode == 0, proc.stdout


# --------------------------------------------------------------------------- the stale lock, case by case
HOLDER = r"""
import sys, time
from lotto.recovery import claim
print(claim(sys.argv[1], ["snakemake", "--cores", "1"]), flush=True)
time.sleep(600)
"""


def _workdir_with_lock(tmp_path: Path) -> Path:
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("results/x/init.safetensors\n")
    (locks / "0.output.lock").write_text("results/x/rep0/init.safetensors\n")
    return tmp_path


def _claim_in_child(work: Path, *argv: str) -> tuple[str, str]:
    """lotto.recovery.claim in a fresh process (as each snakemake is): (what it returned, the line it said)."""
    code = ("import sys; from lotto.recovery import claim; "
            "print(claim(sys.argv[1], ['snakemake', *sys.argv[2:]]))")
    proc = subprocess.run([sys.executable, "-c", code, str(work), *argv], capture_output=True, text=True,
                          timeout=60, check=True)
    return proc.stdout.strip(), proc.stderr.strip()


def _record(work: Path, host: str, pid: int, start: str | None) -> None:
    runs = work / ".snakemake" / "lotto-runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{host}-{pid}.json").write_text(json.dumps({"host": host, "pid": pid, "start": start,
                                                         "command": "snakemake --cores 2"}))


def test_a_lock_whose_run_is_gone_is_cleared_naming_it(tmp_path):
    from lotto.recovery import _start_time

    work = _workdir_with_lock(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    start = _start_time(dead.pid)
    dead.wait()
    _record(work, socket_host(), dead.pid, start)
    outcome, said = _claim_in_child(work, "--cores", "2")
    assert outcome == "cleared"
    assert said.startswith("lotto: removed the Snakemake lock") and f"pid {dead.pid}" in said and "\n" not in said
    assert not list((work / ".snakemake/locks").glob("*.lock"))
    assert not list((work / ".snakemake/lotto-runs").glob("*.json"))  # the dead record and the child's own: gone
    assert _claim_in_child(work)[0] == "none"


def test_the_lock_of_a_live_run_stays(tmp_path):
    work = _workdir_with_lock(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(work)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "cleared"  # no run held the folder: that lock was stale
        locks = work / ".snakemake/locks"
        (locks / "1.output.lock").write_text("results/x/rep0/init.safetensors\n")  # the live run's own lock
        outcome, said = _claim_in_child(work, "--cores", "2")
        assert outcome == "alive" and f"pid {holder.pid}" in said and "its lock stays" in said
        assert (locks / "1.output.lock").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _claim_in_child(work)[0] == "cleared"  # killed: now provably stale


def test_a_lock_that_may_be_another_machines_gets_the_command_in_one_line(tmp_path):
    work = _workdir_with_lock(tmp_path)
    _record(work, "login-elsewhere", 4242, "123")
    outcome, said = _claim_in_child(work, "--cores", "2", "--configfile", "workflow/configs/tiny.yaml")
    assert outcome == "unknown" and "\n" not in said
    assert "pid 4242 on login-elsewhere" in said and said.endswith("clear it with: snakemake --unlock")
    assert (work / ".snakemake/locks/0.input.lock").exists()
    outcome, _ = _claim_in_child(work, "--unlock")  # what that line says to run: the user vouches for the machine
    assert outcome == "cleared" and not list((work / ".snakemake/lotto-runs").glob("*.json"))


def socket_host() -> str:
    import socket

    return socket.gethostname()
