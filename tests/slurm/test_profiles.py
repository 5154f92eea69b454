"""The test profile is the real profile plus the local cluster's site settings (no cluster needed).

Both are read the way Snakemake reads them (YTE templating for the real one, with no LOTTO_SLURM_* set),
so a setting added to one and forgotten in the other fails here, not on a user's cluster."""

from __future__ import annotations

import os
import sys

import pytest
import yaml

from harness import PROFILE_DIR, REPO_PROFILE_DIR, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from workflow_helpers import cluster_submissions, make_workdir  # noqa: E402

#: where the test profile may differ (documented at the top of tests/slurm/profile/config.yaml)
SITE_KEYS = {"latency-wait", "slurm-init-seconds-before-status-checks"}
SITE_RESOURCES = {"slurm_partition": "lottoci", "slurm_account": "lotto"}


def _real_profile(monkeypatch) -> dict:
    import yte

    for name in list(os.environ):
        if name.startswith("LOTTO_SLURM_"):
            monkeypatch.delenv(name)
    with open(REPO_PROFILE_DIR / "config.yaml") as fh:
        return yte.process_yaml(fh, require_use_yte=True)


def test_test_profile_is_the_real_one_plus_site_settings(monkeypatch):
    real = _real_profile(monkeypatch)
    test = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
    assert {k: v for k, v in test.items() if k not in SITE_KEYS | {"default-resources"}} == \
        {k: v for k, v in real.items() if k not in SITE_KEYS | {"default-resources"}}
    assert test["default-resources"] == {**real["default-resources"], **SITE_RESOURCES}


def test_profiles_recover_without_a_second_command(monkeypatch):
    """Failed and timed-out jobs are resubmitted; preempted ones go back to the queue (see the profile)."""
    real = _real_profile(monkeypatch)
    assert real["retries"] >= 1
    assert real["slurm-requeue"] is True
    assert real["rerun-incomplete"] is True


#: the light rules (about a second each): never a Slurm job of their own
LIGHT_RULES = {"mask", "compose", "random_ticket", "zoo_consensus", "zoo_random_ticket", "imp_prune"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("profiles"))


@pytest.mark.parametrize("config, trainings, bundles", [
    # 2 pretrain + 6 sibling + 24 retrain; one bundle per (replicate, rewind point): 6 masks, 8 compositions,
    # 2 random tickets
    ("workflow/configs/tiny.yaml", 32, {"masks_rep0_pre0": 16, "masks_rep0_pre4": 16}),
    # every pruning step rides in the job that trains the level under its mask: no bundle
    ("workflow/configs/imp-tiny.yaml", 18, {}),
    # consensus + random transfer ticket of the replicate (not connected: joined by group-components)
    ("workflow/configs/zoo-tiny.yaml", 22, {"zoo_masks_rep0": 2}),
])
def test_light_jobs_go_out_in_bundles(work, config, trainings, bundles):
    """What `snakemake --profile slurm` submits (read from its dry run): one job per training and one
    bundle per (replicate, rewind point) and family for all the light jobs, none of them on its own."""
    sub = cluster_submissions(work, config)
    assert not LIGHT_RULES & set(sub["jobs"]), sub["jobs"]
    light = {g: sum(rules.values()) for g, rules in sub["groups"].items() if set(rules) <= LIGHT_RULES}
    assert light == bundles
    # a group that is not a bundle is one pruning step plus the training under its mask (imp)
    for g, rules in sub["groups"].items():
        if g not in light:
            assert rules == {"imp_train": 1, "imp_prune": 1}, (g, rules)
    assert sub["total"] == trainings + len(bundles)
    assert "init" in sub["local"] and "stage_data" in sub["local"]



TRAINING_RULES = {"pretrain", "sibling", "retrain", "zoo_pretrain", "zoo_dense", "zoo_round", "zoo_retrain",
                  "imp_train"}


@pytest.mark.parametrize("config, submissions", [
    # pretraining 2 -> 1; siblings 3 per rewind point -> 2 + 2; retrainings 12 -> 6 + 6; 2 mask bundles
    ("workflow/configs/tiny.yaml", 1 + 4 + 12 + 2),
    # pretraining 1; dense level 0 of both rewind points 1; fixed levels 1, 2: 1 each (each with its 2
    # pruning steps); adaptive levels 1, 2: 1 each; evaluations (paths, slice, adaptive pruning) 8 on their own
    ("workflow/configs/imp-tiny.yaml", 1 + 1 + 2 + 2 + 8),
    # dense 1; rounds 7 per iteration -> 4 + 4; transfer retrainings 6 -> 3; the transfer tickets' bundle
    ("workflow/configs/zoo-tiny.yaml", 1 + 8 + 3 + 1),
])
def test_trainings_go_out_in_bundles_of_trainings_per_gpu(work, config, submissions):
    """resources.trainings_per_gpu: 2 (from `snakemake -n --profile slurm`): every training is in a bundle of
    at most 2 trainings that became ready together, every bundle but a group's last holds 2, and no
    training goes out on its own; the light bundles are as before."""
    text = (work / config).read_text()
    shared = f"{config[:-5]}-2-per-gpu.yaml"
    (work / shared).write_text(text.replace("train_gpus: 0", "train_gpus: 1\n  trainings_per_gpu: 2"))
    one, two = cluster_submissions(work, config), cluster_submissions(work, shared)
    assert not TRAINING_RULES & set(two["jobs"]), two["jobs"]
    trainings = {}
    for g, rules in two["groups"].items():
        n = sum(v for r, v in rules.items() if r in TRAINING_RULES)
        if n:
            assert g.startswith("gpu_") and 1 <= n <= 2, (g, rules)
            trainings.setdefault(g.split("#")[0], []).append(n)
        else:
            assert two["groups"][g] == one["groups"][g], g  # a light bundle
    assert all(sorted(ns)[1:] == [2] * (len(ns) - 1) for ns in trainings.values()), trainings
    assert sum(map(sum, trainings.values())) == sum(v for r, v in one["jobs"].items() if r in TRAINING_RULES) + sum(
        v for rules in one["groups"].values() for r, v in rules.items() if r in TRAINING_RULES)
    assert two["total"] == submissions

def test_workflow_profile_spaces_out_snakemakes_reevaluation_timers():
    """profiles/default (read by every run of the workflow) gives Snakemake's job-rate limiter a longer span:
    its re-evaluation timers pile up (one per finished job) and fire once per span each; a run exits only
    after the last one has fired (see the profile)."""
    from snakemake.settings.types import MaxJobsPerTimespan

    profile = yaml.safe_load((REPO_ROOT / "profiles" / "default" / "config.yaml").read_text())
    limit = MaxJobsPerTimespan.parse_choice(profile["max-jobs-per-timespan"])
    assert limit.max_jobs / limit.timespan >= 100  # no stricter than Snakemake's default 100/1s
    assert 1 < limit.timespan <= 10  # fewer rounds, and at most 10 s of waiting at the end of a run
