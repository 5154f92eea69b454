"""Training survives a kill: real `lotto train` processes and real Snakemake runs are SIGKILLed midway
and rerun; the rerun picks up the resumable state, recomputes at most one checkpoint interval and ends
with weights bit-identical to an uninterrupted run (CPU, one thread)."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lotto import io, train
from lotto.data import DeviceData
from workflow_helpers import env as wf_env, make_workdir, snakemake

LOTTO = str(Path(sys.executable).parent / "lotto")
EVERY = 16  # training.checkpoint_every
STEPS = 240  # 30 epochs of 8 steps: long enough to be killed midway, about 2 s of LeNet on one core
TRAINING = {
    "lr": 0.05, "batch_size": 64, "epochs": 30, "milestones": [15], "augment": True, "eval_batch_size": 256,
    "log_every": 1, "checkpoint_every": EVERY,
}
CONFIG = {
    "experiment": "resume",
    "data": {"dataset": "mnist_embedded", "source": "embedded", "train_size": 512, "test_size": 256},
    "model": {"name": "lenet"},
    "training": TRAINING,
}
STEP_RE = re.compile(r"\] step (\d+)/(\d+) ")
RESUMED_RE = re.compile(r"resumed from step (\d+)")


def _steps(log: str) -> list[int]:
    return [int(m.group(1)) for m in STEP_RE.finditer(log)]


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, _ = io.load_checkpoint(a)
    sb, _ = io.load_checkpoint(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"{k} differs between {a} and {b}"


def _wait_for_step(log: Path, proc: subprocess.Popen, at_least: int, timeout: float = 120) -> None:
    """Poll the job's log until it has trained ``at_least`` steps (a resume state exists by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if _steps(text) and max(_steps(text)) >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail(f"the job ended (rc {proc.returncode}) before step {at_least}:\n{text[-3000:]}")
        time.sleep(0.01)
    pytest.fail(f"no step {at_least} in {log} after {timeout}s")


def _check_resumed(killed_log: str, rerun_log: str) -> int:
    """The rerun resumed from the last saved state and recomputed at most one checkpoint interval."""
    reached = max(_steps(killed_log))  # the last step the killed run finished
    assert reached < STEPS, "the run was not killed midway"
    m = RESUMED_RE.search(rerun_log)
    assert m, f"no 'resumed from step' in the rerun's log:\n{rerun_log[:2000]}"
    resumed = int(m.group(1))
    assert resumed % EVERY == 0 and resumed >= EVERY, resumed
    assert 0 <= reached - resumed <= EVERY, (reached, resumed)
    rerun_steps = _steps(rerun_log)
    assert rerun_steps == list(range(resumed + 1, STEPS + 1)), "the rerun trained steps before its state"
    return resumed


# --------------------------------------------------------------------------- plain `lotto train`
@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    cfg = d / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    subprocess.run([LOTTO, "stage-data", "--config", str(cfg), "--out", str(d / "data.npz")], check=True,
                   capture_output=True)
    subprocess.run([LOTTO, "init", "--config", str(cfg), "--threads", "1", "--data", str(d / "data.npz"),
                    "--replicate", "0", "--out", str(d / "init.safetensors")], check=True, capture_output=True)
    return d


def _train_cmd(d: Path, name: str) -> list[str]:
    return [
        LOTTO, "train", "--config", str(d / "config.json"), "--threads", "1", "--data", str(d / "data.npz"),
        "--from", str(d / "init.safetensors"), "--end", "end", "--replicate", "0", "--noise", "sibling:1",
        "--metrics", str(d / f"{name}.json"), "--resume-state", str(d / ".resume" / f"{name}.pt"),
        "--curve", str(d / f"{name}.curve.csv"), "--out", str(d / f"{name}.safetensors"),
    ]


def _assert_same_curve(a: Path, b: Path) -> None:
    """Every row of the training curve, every column but the timing ones, equal to the last digit."""
    import pandas as pd

    from lotto import curves

    keep = [c for c in curves.COLUMNS if c not in curves.TIMING_COLUMNS]
    pd.testing.assert_frame_equal(pd.read_csv(a)[keep], pd.read_csv(b)[keep], check_exact=True)


@pytest.fixture(scope="module")
def reference(staged):
    """The uninterrupted run: ref.safetensors and ref.json in the staged folder."""
    ref = subprocess.run(_train_cmd(staged, "ref"), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert not (staged / ".resume" / "ref.pt").exists(), "a finished run leaves no resume state"
    assert "resumed from" not in ref.stderr
    return staged / "ref.safetensors", json.loads((staged / "ref.json").read_text())


LOSS_KEYS = ("test_accuracy", "test_loss", "last_epoch_train_loss_mean", "last_epoch_train_loss_std")


@pytest.mark.slow
def test_sigkilled_lotto_train_resumes_bit_identically(staged, reference):
    d = staged

    log = d / "run.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(_train_cmd(d, "run"), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for_step(log, proc, EVERY + EVERY // 2)  # mid-interval, after the first resume state
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_log = log.read_text()
    assert (d / ".resume" / "run.pt").is_file()
    assert not (d / "run.safetensors").exists()

    rerun = subprocess.run(_train_cmd(d, "run"), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _check_resumed(killed_log, rerun.stderr)
    _assert_same_weights(reference[0], d / "run.safetensors")
    _assert_same_curve(d / "ref.curve.csv", d / "run.curve.csv")
    run = json.loads((d / "run.json").read_text())
    for key in LOSS_KEYS:
        assert run[key] == reference[1][key], key  # the loss statistics of the last epoch survive the kill too
    assert not (d / ".resume" / "run.pt").exists()
    assert not [p for p in (d / ".resume").iterdir()], "temporaries of killed saves are cleaned up"


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_resumes_from_it(staged, reference):
    """SIGTERM (a Slurm time limit or preemption; SIGKILL follows KillWait seconds later): the run saves its
    state at the step it is on, exits 143, and the rerun recomputes nothing."""
    d = staged
    log = d / "term.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(_train_cmd(d, "term"), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for_step(log, proc, EVERY + EVERY // 2)  # mid-interval: the last periodic save is behind
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    stopped_log = log.read_text()
    assert proc.returncode == 143, stopped_log[-3000:]
    m = re.search(r"stopped by SIGTERM at step (\d+)", stopped_log)
    assert m, stopped_log[-3000:]
    stopped = int(m.group(1))
    assert stopped == max(_steps(stopped_log)) < STEPS
    assert f"resume state at step {stopped} ->" in stopped_log
    assert not (d / "term.safetensors").exists()

    rerun = subprocess.run(_train_cmd(d, "term"), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert RESUMED_RE.search(rerun.stderr).group(1) == str(stopped)
    assert _steps(rerun.stderr) == list(range(stopped + 1, STEPS + 1)), "no step is trained twice"
    _assert_same_weights(reference[0], d / "term.safetensors")
    _assert_same_curve(d / "ref.curve.csv", d / "term.curve.csv")
    assert not (d / ".resume" / "term.pt").exists()


# --------------------------------------------------------------------------- RNG state (dropout)
class _Interrupt(Exception):
    pass


def _dropout_model(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Dropout(0.5),
            torch.nn.Linear(64, 10),
        )


def test_resume_restores_the_dropout_generator(staged, tmp_path):
    """Dropout draws from torch's global generator: a resumed run must continue its stream exactly."""
    torch.set_num_threads(1)
    data = DeviceData.load(staged / "data.npz", device="cpu", augment=True)
    sched = train.Schedule.from_config({**TRAINING, "epochs": 6, "momentum": 0.9, "weight_decay": 5e-4,
                                        "nesterov": False, "gamma": 0.1, "warmup_steps": 0}, data.num_train)
    end = sched.total_steps
    init = _dropout_model(1)
    kw = dict(data=data, schedule=sched, start=0, end=end, data_seed=11, aug_seed=12, log_every=1,
              checkpoint_every=EVERY, run_fingerprint="fp")

    ref = copy.deepcopy(init)
    train.train(ref, log=lambda m: None, **kw)

    state = tmp_path / "state.pt"

    def crash_at(step):
        def log(msg):
            if msg.startswith(f"step {step}/"):
                raise _Interrupt
        return log

    with pytest.raises(_Interrupt):
        train.train(copy.deepcopy(init), log=crash_at(EVERY + 5), resume_path=state, **kw)
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == EVERY

    messages = []
    resumed = copy.deepcopy(init)
    train.train(resumed, log=messages.append, resume_path=state, **kw)
    assert any(m.startswith(f"resumed from step {EVERY}") for m in messages), messages
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k

    # the check can fail: the same state with another dropout stream gives other weights
    saved["rng"]["torch_cpu"] = torch.Generator().manual_seed(99).get_state()
    torch.save(saved, state)
    other = copy.deepcopy(init)
    train.train(other, log=lambda m: None, resume_path=state, **kw)
    assert not all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), other.state_dict().values()))


def test_resume_state_of_another_run_is_ignored(staged, tmp_path):
    data = DeviceData.load(staged / "data.npz", device="cpu", augment=False)
    sched = train.Schedule.from_config({**TRAINING, "epochs": 4, "momentum": 0.9, "weight_decay": 0.0,
                                        "nesterov": False, "gamma": 0.1, "warmup_steps": 0}, data.num_train)
    kw = dict(data=data, schedule=sched, start=0, end=sched.total_steps, data_seed=1, aug_seed=2,
              checkpoint_every=EVERY, resume_path=tmp_path / "s.pt", log_every=100)
    with pytest.raises(_Interrupt):
        def log(msg):
            if msg.startswith("resume state at step"):
                raise _Interrupt
        train.train(_dropout_model(1), log=log, run_fingerprint="a", **kw)
    messages = []
    train.train(_dropout_model(1), log=messages.append, run_fingerprint="b", **kw)
    assert not any("resumed from" in m for m in messages)
    assert any("belongs to a different run" in m for m in messages), messages


# --------------------------------------------------------------------------- under `snakemake --cores`
SMK_CONFIG = f"""\
experiment: resume
results_dir: results
data: {json.dumps(CONFIG["data"])}
model: {{name: lenet}}
training: {json.dumps(TRAINING)}
composability: {{pretrain_steps: [0], ks: [2], sparsities: [0.5], replicates: [0]}}
resources: {{train_threads: 1, train_gpus: 0, train_mem_mb: 1000, train_runtime: 5}}
"""
SIB = "results/resume/rep0/pre0/sibling1"


def _find_train_process(workdir: Path, output: str) -> int | None:
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(p / "cwd")
        except OSError:
            continue
        if cwd == str(workdir) and b"train" in cmd and output.encode() in cmd:
            return int(p.name)
    return None


@pytest.mark.slow
def test_sigkilled_snakemake_training_job_resumes(tmp_path, reference):
    """The sibling job of a one-sibling DAG, killed with its process group and rerun with --rerun-incomplete.

    Its uninterrupted twin is ``reference``: the same data, config, noise and starting weights (the
    rewind point at step 0 is theta_0), trained by a plain `lotto train`.
    """
    work = make_workdir(tmp_path)
    (work / "resume.yaml").write_text(SMK_CONFIG)
    target = f"{SIB}/trained.safetensors"
    args = [target, "--cores", "1", "--configfile", "resume.yaml"]  # --configfile takes several values
    log = work / f"{SIB}/train.log"
    with open(tmp_path / "smk1.out", "w") as fh:
        smk = subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), *args], cwd=work, env=wf_env(),
                               stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not log.exists() and time.monotonic() < deadline and smk.poll() is None:
            time.sleep(0.05)
        _wait_for_step(log, smk, EVERY + EVERY // 2)
        pid = _find_train_process(work, target)
        assert pid is not None, "the training job's process was not found"
        pgid = os.getpgid(pid)
        assert pgid != os.getpgrp()
        os.killpg(pgid, signal.SIGKILL)  # the job's process group (here: Snakemake's too, as on a lost node)
        smk.wait(timeout=120)
    finally:
        if smk.poll() is None:
            os.killpg(smk.pid, signal.SIGKILL)
            smk.wait(timeout=60)
    killed_log = log.read_text()
    resume_state = work / "results/.resume" / f"{target}.pt"
    assert resume_state.is_file()
    assert not (work / target).exists()

    if smk.returncode == -signal.SIGKILL:  # Snakemake died with its job: its lock stayed behind
        snakemake(["--unlock", *args], cwd=work, timeout=120)
    snakemake(["--rerun-incomplete", *args], cwd=work, timeout=600)
    resumed = _check_resumed(killed_log, log.read_text())
    assert not resume_state.exists()
    _assert_same_weights(reference[0], work / target)
    _assert_same_curve(reference[0].with_name("ref.curve.csv"), work / f"{SIB}/trained.curve.csv")
    metrics = json.loads((work / f"{SIB}/metrics.json").read_text())
    for key in LOSS_KEYS:
        assert metrics[key] == reference[1][key], key
    print(f"snakemake job resumed from step {resumed}")
