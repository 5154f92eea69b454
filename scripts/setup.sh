#!/usr/bin/env bash
# Create .venv and install lotto with everything it needs, at the exact versions the tests ran with
# (constraints.txt; idempotent; about 3-4 minutes the first time).
# To install lotto into an existing environment instead (a cluster's torch module, newer releases):
# activate it and run `pip install -e ".[slurm]"`, which takes the ranges of pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and on its own: pip then resolves the locked CUDA-enabled wheels (they also run on CPU)
.venv/bin/python -m pip install -q -c constraints.txt torch torchvision
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,slurm]"
echo "lotto installed in $(pwd)/.venv  (activate with: . .venv/bin/activate)"
