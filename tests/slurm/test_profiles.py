"""The test profile is the real profile plus the local cluster's site settings (no cluster needed).

Both are read the way Snakemake reads them (YTE templating for the real one, with no LOTTO_SLURM_* set),
so a setting added to one and forgotten in the other fails here, not on a user's cluster."""

from __future__ import annotations

import os

import yaml

from harness import PROFILE_DIR, REPO_PROFILE_DIR

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
