"""Smoke tests of the Slurm path: a tiny workflow submitted through
snakemake-executor-plugin-slurm to the local cluster (tests/slurm/start-cluster.sh).

Needs root (the harness starts munge, MariaDB, slurmdbd, slurmctld and slurmd);
skipped with the reason otherwise, except with CI=true, where it fails.
Takes about 35 s per workflow run (each Slurm job starts a Python interpreter
that re-parses the Snakefile; the failing one about 2 minutes: it is tried
three times) plus the cluster start (about 5 s; about 40 s the first time,
when apt-get installs the packages).
"""

from __future__ import annotations

import re
import textwrap

import pytest

from harness import PROFILE_DIR, REPO_PROFILE_DIR, run_snakemake

pytestmark = pytest.mark.slurm

# cpu_step -> gpu_step -> all; all is a local rule, so two Slurm jobs.
SNAKEFILE = textwrap.dedent(
    r'''
    localrules: all

    rule all:
        input:
            "out/gpu.txt",


    rule cpu_step:
        output:
            "out/cpu.txt",
        threads: 1
        resources:
            mem_mb=200,
            runtime=5,
        shell:
            "echo \"job=${{SLURM_JOB_ID:-none}} partition=${{SLURM_JOB_PARTITION:-none}}"
            " CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}}\" > {output}"


    rule gpu_step:
        input:
            "out/cpu.txt",
        output:
            "out/gpu.txt",
        resources:
            mem_mb=200,
            runtime=5,
            gpu=1,
        shell:
            "echo \"job=${{SLURM_JOB_ID:-none}} CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}}"
            " SLURM_JOB_GPUS=${{SLURM_JOB_GPUS:-unset}} SLURM_STEP_GPUS=${{SLURM_STEP_GPUS:-unset}}\" > {output}"
    '''
)

FAILING_SNAKEFILE = textwrap.dedent(
    """
    rule boom:
        output:
            "boom.txt",
        resources:
            mem_mb=100,
            runtime=2,
        shell:
            "echo about to fail; exit 3"
    """
)


def _kv(text: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", text))


def _check_smoke_run(cluster, workdir, res, partition, account):
    assert res.returncode == 0, res.tail()
    ids = res.job_ids
    assert len(ids) == 2, f"expected 2 Slurm jobs (cpu_step, gpu_step), got {ids}\n{res.tail()}"

    states = cluster.wait_for_states(ids, timeout=60)
    assert states == {i: "COMPLETED" for i in ids}, states

    rows = {r["JobID"]: r for r in cluster.sacct(ids)}
    by_rule = {r["Comment"]: r for r in rows.values()}  # the plugin's --comment rule_<name>
    assert set(by_rule) == {"rule_cpu_step", "rule_gpu_step"}, rows
    for r in rows.values():
        assert r["Partition"] == partition, r
        assert r["Account"] == account, r
    assert "gres/gpu=1" in by_rule["rule_gpu_step"]["AllocTRES"], by_rule["rule_gpu_step"]
    assert "gres/gpu" not in by_rule["rule_cpu_step"]["AllocTRES"], by_rule["rule_cpu_step"]

    # what the jobs themselves saw
    cpu = _kv((workdir / "out" / "cpu.txt").read_text())
    gpu = _kv((workdir / "out" / "gpu.txt").read_text())
    assert cpu["job"] == by_rule["rule_cpu_step"]["JobID"], cpu
    assert gpu["job"] == by_rule["rule_gpu_step"]["JobID"], gpu
    assert cpu["CUDA_VISIBLE_DEVICES"] == "unset", cpu   # no GPU asked, none given
    assert gpu["CUDA_VISIBLE_DEVICES"] not in ("", "unset"), gpu
    assert gpu["CUDA_VISIBLE_DEVICES"] == "0", gpu       # the first fake GPU (the node is idle)
    assert gpu["SLURM_STEP_GPUS"] == "0", gpu


def test_smoke_cpu_and_gpu_rules_complete(gpu_cluster, tmp_path):
    """The test profile submits both rules; sacct: COMPLETED; the GPU rule got the GPU."""
    slurm_cluster = gpu_cluster
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    res = run_snakemake(["--profile", str(PROFILE_DIR)], cwd=tmp_path, timeout=300)
    print(f"smoke run: {res.elapsed:.1f}s; cluster start: {slurm_cluster.start_seconds:.1f}s")
    _check_smoke_run(slurm_cluster, tmp_path, res, slurm_cluster.partition, slurm_cluster.account)


def test_repo_profile_takes_site_settings_from_env(gpu_cluster, tmp_path):
    """The real profile (slurm/) with the site settings given as LOTTO_SLURM_* variables."""
    slurm_cluster = gpu_cluster
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    res = run_snakemake(
        [
            "--profile", str(REPO_PROFILE_DIR),
            # the real profile waits 40 s before the first status check
            "--slurm-init-seconds-before-status-checks", "2",
        ],
        cwd=tmp_path,
        timeout=300,
        env={
            "LOTTO_SLURM_PARTITION": slurm_cluster.partition,
            "LOTTO_SLURM_ACCOUNT": slurm_cluster.account,
            "LOTTO_SLURM_CONSTRAINT": "lottoci",  # a node feature of the local cluster
            "LOTTO_SLURM_QOS": "normal",
        },
    )
    assert "slurm_partition=lottoci" in res.output, res.tail()
    assert "constraint=lottoci" in res.output, res.tail()
    _check_smoke_run(slurm_cluster, tmp_path, res, slurm_cluster.partition, slurm_cluster.account)


def test_failing_job_is_reported_not_hung(slurm_cluster, tmp_path):
    """A job that exits non-zero is seen as FAILED, resubmitted as often as the profile's `retries` say
    (2: three attempts in all), and then Snakemake exits non-zero (no hang)."""
    (tmp_path / "Snakefile").write_text(FAILING_SNAKEFILE)
    res = run_snakemake(["--profile", str(PROFILE_DIR)], cwd=tmp_path, timeout=300)
    assert not res.timed_out, res.tail()
    assert res.returncode != 0, res.tail()
    ids = res.job_ids
    assert len(ids) == 3, res.tail()
    assert res.output.count("Trying to restart job 0.") == 2, res.tail()
    assert slurm_cluster.wait_for_states(ids) == {i: "FAILED" for i in ids}
