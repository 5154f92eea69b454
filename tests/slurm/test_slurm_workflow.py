"""The real workflow on the local Slurm cluster (tests/slurm/start-cluster.sh).

* The tiny config runs through ``snakemake --profile slurm`` (the repository's own profile, found from
  the root of a scratch copy of the repository, with the cluster's site settings given as LOTTO_SLURM_*
  variables): Slurm sees one job per training and one bundle (job group) per (replicate, rewind point)
  holding all its masks, compositions and random tickets, not one job per light step; every job is
  COMPLETED in sacct, the training jobs got a GPU (the cluster's fake gres), the bundles none and the
  CPUs and memory of the profile's light_slots, and masks, checkpoints and metrics are identical to a local
  ``--cores`` run with the same threads per job.
* With resources.trainings_per_gpu: 2, a slice of the tiny config goes out as bundles of two trainings (one
  Slurm job with one GPU each, the trainings side by side, each its own Snakemake job), each training holds
  its own slot of its job's GPU (read back from its log), and masks, checkpoints and metrics are those of a
  local run with one training per process and GPU.
* A training job stopped by a real Slurm time limit (runtime=1 minute on its first attempt) is resubmitted
  by Snakemake itself (the profile's `retries`; 10 minutes on attempt 2), resumes from its last resumable
  state and ends with the weights of an uninterrupted run: one snakemake command.

Needs root; skipped with the reason otherwise, except with CI=true, where it fails. Every Snakemake
run is wrapped in a hard timeout (harness.run_snakemake).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from harness import PROFILE_DIR, REPO_ROOT, run_snakemake

sys.path.insert(0, str(REPO_ROOT / "tests"))
from workflow_helpers import env as wf_env, make_workdir, snakemake  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TRAIN_RULES = {"pretrain", "sibling", "retrain"}
TIMING_KEYS = {"elapsed_s", "images_per_s"}
_COMMENT_RE = re.compile(r"rule_(.+?)(?:_wildcards_.*)?$")


def _rule(comment: str) -> str:
    m = _COMMENT_RE.match(comment)
    assert m, comment
    return m.group(1)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _results(work: Path, exp: str) -> dict[str, object]:
    """Every mask, checkpoint (by content) and JSON record (without timings) of an experiment."""
    root = work / "results" / exp
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.suffix in (".mask", ".safetensors", ".npz"):
            out[rel] = _digest(p)
        elif p.suffix == ".json":
            out[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING_KEYS}
    return out


def _slurm_tiny_run(cluster, tmp_path):
    """`snakemake --profile slurm` on the tiny config, from the root of a scratch copy of the repository."""
    work = make_workdir(tmp_path / "slurm")
    tiny = (work / "workflow/configs/tiny.yaml").read_text()
    assert "train_gpus: 0" in tiny
    # a GPU per training job, as at paper scale (resources are not inputs of any step: same commands)
    (work / "tiny-gpu.yaml").write_text(tiny.replace("train_gpus: 0", "train_gpus: 1"))
    return run_snakemake(
        ["--profile", "slurm", "--configfile", "tiny-gpu.yaml",
         # the real profile waits 40 s before its first status check
         "--slurm-init-seconds-before-status-checks", "2"],
        cwd=work, timeout=1200, env={"PATH": wf_env()["PATH"], "LOTTO_SLURM_PARTITION": cluster.partition,
                                     "LOTTO_SLURM_ACCOUNT": cluster.account},
    )


def test_tiny_config_via_repo_profile_matches_local_run(gpu_cluster, tmp_path):
    cluster = gpu_cluster
    # the local reference: the same config, same threads per job (resources.train_threads); it runs beside
    # the Slurm run, whose jobs spend much of their time waiting on the scheduler
    local = make_workdir(tmp_path / "local")
    local_out = open(tmp_path / "local.out", "w")
    t0 = time.monotonic()
    local_run = subprocess.Popen(
        ["timeout", "-s", "KILL", "1200", str(Path(sys.executable).parent / "snakemake"), "--cores", "2",
         "--configfile", "workflow/configs/tiny.yaml"],
        cwd=local, env=wf_env(), stdout=local_out, stderr=subprocess.STDOUT,
    )
    t_submit = datetime.now() - timedelta(seconds=5)
    try:
        res = _slurm_tiny_run(cluster, tmp_path)
        rc = local_run.wait(timeout=1300)
        t_local = time.monotonic() - t0
    finally:
        if local_run.poll() is None:
            local_run.kill()
            local_run.wait()
        local_out.close()
    assert rc == 0, (tmp_path / "local.out").read_text()[-4000:]
    print(f"Slurm run: {res.elapsed:.0f}s, {len(res.job_ids)} Slurm jobs; the local --cores 2 run beside it: "
          f"both done after {t_local:.0f}s")
    assert res.returncode == 0, res.tail()
    work = tmp_path / "slurm" / "wf"

    ids = res.job_ids
    states = cluster.wait_for_states(ids, timeout=120)
    assert states == {i: "COMPLETED" for i in ids}, {i: s for i, s in states.items() if s != "COMPLETED"}
    rows = cluster.sacct(ids, fields=("JobID", "Partition", "Account", "Comment", "AllocTRES", "Timelimit"))
    # nothing reached Slurm that Snakemake did not report
    assert {r["JobID"] for r in cluster.sacct(since=t_submit, fields=("JobID",))} == set(ids)
    by_rule: dict[str, list[dict]] = {}
    for r in rows:
        by_rule.setdefault(_rule(r["Comment"]), []).append(r)
    # one submission per training job, plus one bundle per (replicate, rewind point) holding its 6 masks,
    # 8 compositions and 2 random tickets (the plugin's comment for a group job: rule_<group>_<its rules>);
    # staging (the only step that may download), theta_0 and the figures run on the submitting host
    bundles = {f"masks_rep0_pre{t}_compose_mask_random_ticket" for t in (0, 4)}
    assert set(by_rule) == TRAIN_RULES | bundles, sorted(by_rule)
    assert {k: len(v) for k, v in by_rule.items()} == {"pretrain": 2, "sibling": 6, "retrain": 24,
                                                       **{b: 1 for b in bundles}}
    assert len(ids) == 2 + 6 + 24 + 2, "not one Slurm job per light step"
    for rule, rs in by_rule.items():
        for r in rs:
            assert r["Partition"] == cluster.partition and r["Account"] == cluster.account, r
            if rule in TRAIN_RULES:
                assert "gres/gpu=1" in r["AllocTRES"], r
            else:
                # the profile's light_slots: 2 light jobs side by side, each with light_mem_mb (2,000 MB by
                # default); light_runtime (1 minute) per layer of jobs run one after another
                tres = dict(kv.split("=", 1) for kv in r["AllocTRES"].split(","))
                assert "gres/gpu" not in tres and tres["cpu"] == "2" and tres["mem"] == "4000M", r
                assert r["Timelimit"] <= "00:16:00", r  # 16 light jobs, 2 at a time: 8 layers x 1 minute

    slurm_results, local_results = _results(work, "tiny"), _results(local, "tiny")
    assert sorted(slurm_results) == sorted(local_results)
    assert sum(k.endswith(".mask") for k in slurm_results) == 12 + 16 + 4
    for key, value in local_results.items():
        assert slurm_results[key] == value, key
    for name in ("fig1a", "fig2d"):
        assert (work / f"results/tiny/figures/{name}.png").is_file()
    assert not list((work / "results" / ".resume").rglob("*")), "no states and no empty folders left"


# --------------------------------------------------------------------------- trainings sharing a GPU
#: a small slice of the tiny config: one rewind point, k in {2, 3}, one sparsity: 1 pretraining, 3 siblings,
#: 6 retrainings (one-shot, random, union and intersection at k = 2 and 3)
SHARED = {"pretrain_steps: [0, 4]": "pretrain_steps: [4]", "sparsities: [0.5, 0.8]": "sparsities: [0.5]"}
_SLOT_RE = re.compile(r"device slot: GPU (\S+) = cuda:(\d+), slot (\d+) \(of (\d+) per GPU\), lock (\S+)")


def _shared_config(work: Path, per_gpu: int) -> str:
    text = (work / "workflow/configs/tiny.yaml").read_text()
    for old, new in {**SHARED, "train_gpus: 0": f"train_gpus: 1\n  trainings_per_gpu: {per_gpu}"}.items():
        assert old in text, old
        text = text.replace(old, new)
    name = f"tiny-{per_gpu}-per-gpu.yaml"
    (work / name).write_text(text)
    return name


def test_trainings_share_a_gpu_in_bundles_with_the_masks_of_one_per_gpu(gpu_cluster, tmp_path):
    """resources.trainings_per_gpu: 2 through `snakemake --profile slurm`: the trainings go out as bundles of
    two (one Slurm job, one GPU, two trainings side by side, each its own Snakemake job and files), each
    training claims its own slot of its job's GPU, and masks, checkpoints and metrics are those of a run with
    one training per GPU (local, every training its own process)."""
    cluster = gpu_cluster
    local = make_workdir(tmp_path / "local")
    snakemake(["--cores", "2", "--configfile", _shared_config(local, 1), "--until", "retrain"], cwd=local,
              timeout=600)
    work = make_workdir(tmp_path / "slurm")
    t_submit = datetime.now() - timedelta(seconds=5)
    res = run_snakemake(
        ["--profile", "slurm", "--configfile", _shared_config(work, 2), "--until", "retrain",
         "--slurm-init-seconds-before-status-checks", "2"],
        cwd=work, timeout=900, env={"PATH": wf_env()["PATH"], "LOTTO_SLURM_PARTITION": cluster.partition,
                                    "LOTTO_SLURM_ACCOUNT": cluster.account},
    )
    assert res.returncode == 0, res.tail()
    ids = res.job_ids
    print(f"{len(ids)} Slurm jobs in {res.elapsed:.0f}s")
    assert cluster.wait_for_states(ids, timeout=120) == {i: "COMPLETED" for i in ids}
    assert {r["JobID"] for r in cluster.sacct(since=t_submit, fields=("JobID",))} == set(ids)
    rows = {r["JobID"]: r for r in cluster.sacct(ids, fields=("JobID", "Comment", "AllocTRES"))}
    # the submissions: 1 pretraining alone, siblings 2 + 1, retrainings 2 + 2 + 2, the masks' bundle
    bundles = [i for i in ids if _rule(rows[i]["Comment"]).startswith("gpu_")]
    assert sorted(_rule(rows[i]["Comment"]) for i in bundles) == (
        ["gpu_pretrain_rep0_pretrain"] + ["gpu_retrain_rep0_pre4_retrain"] * 3 + ["gpu_sibling_rep0_pre4_sibling"] * 2)
    assert len(ids) == len(bundles) + 1, "7 submissions for 10 trainings and 16 light jobs"

    # each training: its own log, a slot on its Slurm job's one GPU (the fake GRES), no two on one slot
    root = work / "results/tiny/rep0/pre4"
    logs = [root.parent / "pre4/pretrain.log"] + sorted(root.glob("sibling*/train.log")) + sorted(
        root.glob("**/retrain.log"))
    assert len(logs) == 10
    by_job: dict[str, list[tuple[str, int]]] = {}
    for log in logs:
        claims = _SLOT_RE.findall(log.read_text())
        assert len(claims) == 1, log
        gpu, index, slot, per_gpu, lock = claims[0]
        assert gpu in {str(i) for i in range(cluster.gpus)} and index == "0" and per_gpu == "2", claims
        job = re.search(r"/slurm-job-(\d+)/", lock).group(1)
        by_job.setdefault(job, []).append((gpu, int(slot)))
    assert set(by_job) == set(bundles)
    for job, got in by_job.items():
        tres = dict(kv.split("=", 1) for kv in rows[job]["AllocTRES"].split(","))
        assert tres["gres/gpu"] == "1" and tres["cpu"] == str(len(got)), rows[job]  # 1 thread per training
        assert len({g for g, _ in got}) == 1 and sorted(s for _, s in got) == list(range(len(got))), (job, got)
    assert sorted(len(v) for v in by_job.values()) == [1, 1, 2, 2, 2, 2]
    print("trainings per Slurm job and their (GPU, slot):", by_job)

    slurm_results, local_results = _results(work, "tiny"), _results(local, "tiny")
    assert sorted(slurm_results) == sorted(local_results)
    assert sum(k.endswith(".mask") for k in slurm_results) == 3 + 4 + 1
    for key, value in local_results.items():
        assert slurm_results[key] == value, key


# --------------------------------------------------------------------------- time limit -> resume
EVERY = 250
DATA = {"dataset": "mnist_embedded", "source": "embedded", "train_size": 512, "test_size": 256}
#: seconds of single-thread LeNet training the time-limited job is given: past the 1-minute limit, which
#: slurmctld enforces within 30 s after it expires (it checks limits every 30 s)
TRAIN_SECONDS = 120


def _tlimit_config(epochs: int, per_gpu: int = 1) -> str:
    return f"""\
experiment: tlimit
results_dir: results
data: {json.dumps(DATA)}
model: {{name: lenet}}
training:
  lr: 0.05
  batch_size: 64
  epochs: {epochs}
  milestones: [{epochs // 2}]
  augment: true
  eval_batch_size: 256
  log_every: 50
  checkpoint_every: {EVERY}
composability: {{pretrain_steps: [0], ks: [2], sparsities: [0.5], replicates: [0]}}
resources: {{train_threads: 1, train_gpus: 1, trainings_per_gpu: {per_gpu}, train_mem_mb: 1000, train_runtime: 5}}
"""


def _epochs_for(seconds: float, tmp: Path) -> int:
    """Epochs (8 steps each) of LeNet that take about ``seconds`` on one core of this machine, now."""
    import torch
    import yaml

    from lotto import data as datamod, models, train
    from lotto.config import validate

    cfg = validate(yaml.safe_load(_tlimit_config(100)))
    datamod.stage(cfg["data"], tmp / "calibrate.npz")
    d = datamod.DeviceData.load(tmp / "calibrate.npz", device="cpu", augment=True)
    model = models.build_model(cfg["model"], d.in_channels, d.num_classes, d.image_size, 0)
    sched = train.Schedule.from_config(cfg["training"], d.num_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        train.train(model, d, sched, 0, 300, 1, 2, log=lambda m: None, log_every=10**6)
        rate = 300 / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    # at least 6,000 steps, however slow this machine is now
    return max(750, int(rate * seconds / 8))


PRE = "results/tlimit/rep0/pre0"
#: the first attempt gets 1 minute, the next ones 10: the same callable runtime the training rules use
#: (train_runtime x attempt), squeezed so that the first attempt certainly hits its limit
RUNTIME_BY_ATTEMPT = "sibling:runtime=1 if attempt == 1 else 10"


def _timed_out_once(cluster, res, fields):
    """A run whose one Slurm job hit its time limit and was resubmitted by Snakemake itself: the two job ids
    (TIMEOUT, then COMPLETED) and their sacct ``fields`` by id."""
    assert res.returncode == 0, res.tail()
    assert "Trying to restart job" in res.output, res.tail()
    ids = res.job_ids
    assert len(ids) == 2, res.tail()
    states = cluster.wait_for_states(ids)
    assert [states[i] for i in ids] == ["TIMEOUT", "COMPLETED"], (states, res.tail())
    return ids, {r["JobID"]: r for r in cluster.sacct(ids, fields=("JobID", *fields))}


class _LogVersions(threading.Thread):
    """Every version of a log file while Snakemake runs: each attempt of a job starts its log afresh
    (`> {log}`), so the killed attempt's log exists only until the next attempt starts, seconds later."""

    def __init__(self, path: Path, every: float = 0.2):
        super().__init__(daemon=True)
        self.path, self.every = path, every
        self.versions: list[str] = []
        self._stop_event = threading.Event()

    def _poll(self) -> None:
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return
        last = self.versions[-1] if self.versions else None
        # a new attempt: the log shrank or starts with another (time-stamped) first line
        if last is None or len(text) < len(last) or text.split("\n", 1)[0] != last.split("\n", 1)[0]:
            if text:
                self.versions.append(text)
        else:
            self.versions[-1] = text

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self._poll()

    def stop(self) -> list[str]:
        self._stop_event.set()
        self.join(timeout=10)
        self._poll()
        return self.versions


def test_training_stopped_by_slurm_time_limit_is_resubmitted_and_resumes(gpu_cluster, tmp_path):
    """One `snakemake --profile` command: the training job hits its Slurm time limit (TIMEOUT), Snakemake
    resubmits it by itself (the profile's `retries`), with the longer runtime of attempt 2, and the new job
    resumes from the state the first one saved, ending with the weights of an uninterrupted run."""
    cluster = gpu_cluster
    import yaml

    from lotto.config import section_json, validate

    work = make_workdir(tmp_path)
    epochs = _epochs_for(TRAIN_SECONDS, tmp_path)
    total = epochs * 8
    config = _tlimit_config(epochs)
    (work / "tlimit.yaml").write_text(config)
    target = f"{PRE}/sibling1/trained.safetensors"
    # the rewind point (theta_0 here) locally, so the uninterrupted reference can train beside the Slurm job
    snakemake([f"{PRE}/rewind.safetensors", "--cores", "1", "--configfile", "tlimit.yaml"], cwd=work, timeout=300)
    cfg = validate(yaml.safe_load(config))
    lotto = str(Path(sys.executable).parent / "lotto")
    ref_log = open(tmp_path / "reference.log", "w")
    reference = subprocess.Popen(
        [lotto, "train", "--config", section_json(cfg, "model", "training"), "--threads", "1",
         "--data", "results/tlimit/data/mnist_embedded.npz", "--from", f"{PRE}/rewind.safetensors",
         "--end", "end", "--replicate", "0", "--noise", "sibling:1", "--metrics", str(tmp_path / "ref.json"),
         "--out", str(tmp_path / "ref.safetensors")],
        cwd=work, env=wf_env(), stdout=ref_log, stderr=subprocess.STDOUT,
    )
    logs = _LogVersions(work / f"{PRE}/sibling1/train.log")
    logs.start()
    try:
        res = run_snakemake(
            [target, "--profile", str(PROFILE_DIR), "--configfile", "tlimit.yaml",
             "--set-resources", RUNTIME_BY_ATTEMPT],
            cwd=work, timeout=600, env={"PATH": wf_env()["PATH"]},
        )
        versions = logs.stop()
        ids, rows = _timed_out_once(cluster, res, ("State", "Comment", "Timelimit"))
        # the same rule and target (the plugin's --comment carries both), with the runtime of its attempt
        assert rows[ids[0]]["Comment"] == rows[ids[1]]["Comment"], rows
        assert _rule(rows[ids[0]]["Comment"]) == "sibling", rows
        assert [rows[i]["Timelimit"] for i in ids] == ["00:01:00", "00:10:00"], rows

        assert len(versions) == 2, [v[:300] for v in versions]
        killed_log, log = versions
        saved = [int(s) for s in re.findall(r"resume state at step (\d+)", killed_log)]
        reached = [int(s) for s in re.findall(rf"\] step (\d+)/{total} ", killed_log)]
        assert saved and max(reached) < total, killed_log[-2000:]
        assert (work / f"{PRE}/sibling1/train.log").read_text() == log
        m = re.search(r"resumed from step (\d+)", log)
        assert m, log[:2000]
        resumed = int(m.group(1))
        # the newest state the killed job wrote: at most one checkpoint interval is trained again. Slurm
        # sends SIGTERM at the limit (SIGKILL KillWait seconds later): the job then saves the step it is on
        last = max(max(reached), max(saved))
        assert resumed == max(saved) and last - resumed <= EVERY, (saved, reached, resumed)
        term = re.search(r"stopped by SIGTERM at step (\d+)", killed_log)
        if term:
            assert int(term.group(1)) == resumed, killed_log[-2000:]
        first_step = int(re.search(rf"\] step (\d+)/{total} ", log).group(1))
        assert first_step > resumed
        print(f"{total} steps; time limit hit at step >= {last} (state saved on SIGTERM: {bool(term)}); "
              f"resubmitted by Snakemake, resumed from {resumed}; one snakemake command: {res.elapsed:.0f}s")
        assert reference.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-2000:]
    finally:
        logs.stop()
        if reference.poll() is None:
            reference.kill()
            reference.wait()
        ref_log.close()

    from lotto import io

    import torch

    a, _ = io.load_checkpoint(tmp_path / "ref.safetensors")
    b, _ = io.load_checkpoint(work / target)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref = json.loads((tmp_path / "ref.json").read_text())
    got = json.loads((work / f"{PRE}/sibling1/metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "last_epoch_train_loss_mean", "last_epoch_train_loss_std"):
        assert got[key] == ref[key], key
    # the finished job leaves neither its state nor the folders it was in
    assert (work / "results/.resume").is_dir() and not list((work / "results/.resume").iterdir())


def test_bundle_stopped_by_slurm_time_limit_is_resubmitted_and_each_training_resumes(gpu_cluster, tmp_path):
    """trainings_per_gpu: 2: the bundle of two siblings (one Slurm job, one GPU) hits its time limit; Snakemake
    resubmits the bundle by itself (attempt 2, a longer limit), and each training resumes from the state it
    saved, on a slot of the new job's GPU. One `snakemake --profile` command. (That a resumed training ends
    with the weights of an uninterrupted one is the test above; here the two trainings of a bundle.)"""
    cluster = gpu_cluster
    work = make_workdir(tmp_path)
    epochs = _epochs_for(TRAIN_SECONDS, tmp_path)  # each sibling: 2 minutes of one core, one core each
    total = epochs * 8
    (work / "tlimit.yaml").write_text(_tlimit_config(epochs, per_gpu=2))
    sibs = (1, 2)
    snakemake([f"{PRE}/rewind.safetensors", "--cores", "1", "--configfile", "tlimit.yaml"], cwd=work, timeout=300)
    logs = {i: _LogVersions(work / f"{PRE}/sibling{i}/train.log") for i in sibs}
    for watcher in logs.values():
        watcher.start()
    try:
        res = run_snakemake(
            [*(f"{PRE}/sibling{i}/trained.safetensors" for i in sibs), "--profile", str(PROFILE_DIR),
             "--configfile", "tlimit.yaml",
             # attempt 2 has time to spare on a loaded machine: its limit is not what is tested
             "--set-resources", "sibling:runtime=1 if attempt == 1 else 30"],
            cwd=work, timeout=2400, env={"PATH": wf_env()["PATH"]},
        )
    finally:
        versions = {i: w.stop() for i, w in logs.items()}
    ids, rows = _timed_out_once(cluster, res, ("Comment", "Timelimit", "AllocTRES"))
    assert {_rule(rows[i]["Comment"]) for i in ids} == {"gpu_sibling_rep0_pre0_sibling"}, rows
    assert [rows[i]["Timelimit"] for i in ids] == ["00:01:00", "00:30:00"], rows
    assert all("gres/gpu=1" in rows[i]["AllocTRES"] and "cpu=2" in rows[i]["AllocTRES"] for i in ids), rows
    resumed = []
    for i in sibs:
        assert len(versions[i]) == 2, (i, [v[:300] for v in versions[i]])
        killed_log, log = versions[i]
        assert f"/slurm-job-{ids[0]}/" in killed_log and f"/slurm-job-{ids[1]}/" in log  # a slot in each job
        saved = [int(s) for s in re.findall(r"resume state at step (\d+)", killed_log)]
        reached = [int(s) for s in re.findall(rf"\] step (\d+)/{total} ", killed_log)]
        assert saved and max(reached) < total, killed_log[-2000:]
        m = re.search(r"resumed from step (\d+)", log)
        assert m and int(m.group(1)) == max(saved), (i, saved, log[:2000])
        assert f"] saved {PRE}/sibling{i}/trained.safetensors (" in log, log[-1000:]
        resumed.append(int(m.group(1)))
        assert (work / f"{PRE}/sibling{i}/metrics.json").is_file()
    assert not list((work / "results/.resume").rglob("*.pt")), "both states removed once their runs finished"
    print(f"{total} steps per sibling; both stopped by the time limit and resumed in the resubmitted bundle "
          f"(from steps {resumed}): "
          f"{res.elapsed:.0f}s")
