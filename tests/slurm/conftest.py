"""Make the Slurm harness importable as ``harness`` and its fixture visible to
the tests in this directory (whatever pytest's import mode)."""

import sys
from pathlib import Path

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)

from harness import slurm_cluster  # noqa: E402,F401  (re-exported fixture)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slurm: needs the local Slurm cluster (tests/slurm/start-cluster.sh; root)"
    )
