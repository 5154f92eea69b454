"""Make the Slurm harness importable as ``harness`` and its fixture visible to
the tests in this directory (whatever pytest's import mode)."""

import sys
from pathlib import Path

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)

import pytest  # noqa: E402

from harness import require_module, slurm_cluster  # noqa: E402,F401  (re-exported fixture)


@pytest.fixture(scope="module", autouse=True)
def _needs_plugin():
    """Every test here submits through Snakemake's Slurm executor plugin."""
    require_module("snakemake")
    require_module("snakemake_executor_plugin_slurm")


@pytest.fixture
def gpu_cluster(slurm_cluster):
    """The local cluster, for tests that need a GPU GRES on its node."""
    if slurm_cluster.gpus < 1:
        pytest.skip("the local cluster was started with LOTTO_TEST_SLURM_GPUS=0")
    return slurm_cluster


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slurm: needs the local Slurm cluster (tests/slurm/start-cluster.sh; root)"
    )
