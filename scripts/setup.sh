#!/usr/bin/env bash
# Create .venv and install lotto with everything it needs (idempotent; about 3-4 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and on its own: pip then resolves the pinned CUDA-enabled wheels (they also run on CPU)
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[test,slurm]"
echo "lotto installed in $(pwd)/.venv  (activate with: . .venv/bin/activate)"
