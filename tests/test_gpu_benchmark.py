"""`python benchmarks/run.py --sections gpu` on a machine without a GPU, and its GPU-path checks run on the CPU.

No timing asserts (figures are the benchmark's to print): on a CPU the command says why the GPU part was
skipped, prints what it measured and exits 0; the bf16-vs-fp32 check and the tiny-DAG check it runs on a GPU
run here on the CPU, the latter with a fake allotted GPU (CUDA_VISIBLE_DEVICES) so that slots are claimed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lotto import devices
from workflow_helpers import cifar10_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402  (benchmarks/gpu.py)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the CPU path is not taken")


@no_cuda
def test_gpu_section_on_a_cpu_says_why_and_prints_what_it_measured(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "LOTTO_CIFAR10")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/run.py"), "--sections", "gpu", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "GPU: none. torch" in text and "finds no CUDA device" in text and "were NOT measured" in text, text
    assert "one training on the CPU" in text and "trainings side by side" in text, text
    assert "it would stop at its first training with: lotto: error: config key 'training.device'" in text, text
    res = json.loads(out.read_text())["gpu"]
    assert "finds no CUDA device" in res["gpu_skipped"]
    assert res["data"] in ("synthetic uint8 images",) or res["data"].endswith("train.npz")
    for name in ("fp32", "bf16 autocast", "channels_last", "bf16 + channels_last"):
        assert res["variants"][name]["images_per_s"] > 0, name
    assert "skipped" in res["variants"]["compile"]
    assert set(res["sharing"]["rounds"]) == {"1", "2"}
    assert all(r["aggregate_images_per_s"] > 0 for r in res["sharing"]["rounds"].values())
    # config.yaml: 3 replicates x 3 rewind points: pretraining, 4 siblings, 80 tickets each
    work = res["config_workload"]
    assert work["by_rule"] == {"pretrain": 9, "sibling": 36, "retrain": 720} and work["trainings"] == 765
    assert "projected_gpu_hours" not in res and res["tiny_dag"]["skipped"] == "no GPU"


def test_bf16_fidelity_check_runs(tmp_path):
    """The GPU section's bf16-vs-fp32 check, on the CPU and a slice of the real CIFAR-10."""
    if not (cifar10_dir() / "train.npz").is_file():
        pytest.skip(f"real CIFAR-10 not found at {cifar10_dir()} (set LOTTO_CIFAR10)")
    args = SimpleNamespace(cifar=str(cifar10_dir()), precision=None, channels_last=None, compile=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = gpu.fidelity(args, torch.device("cpu"), 1, lambda _m: None, limit=512)
    finally:
        torch.set_num_threads(threads)
    assert set(res["test_accuracy"]) == {"fp32 A", "bf16 A", "fp32 B"}
    assert all(0.0 <= a <= 1.0 for a in res["test_accuracy"].values())
    assert 0.0 < res["mask_jaccard_fp32_other_data_order"] < 1.0 and 0.0 < res["mask_jaccard_fp32_bf16"] <= 1.0
    assert isinstance(res["bf16_matches_fp32"], bool)
    synthetic = gpu.fidelity(SimpleNamespace(cifar=str(tmp_path), precision=None, channels_last=None,
                                             compile=None), torch.device("cpu"), 1, lambda _m: None, limit=64)
    assert "synthetic" in synthetic["skipped"]


@no_cuda
def test_tiny_dag_check_on_an_allotted_gpu(tmp_path, monkeypatch):
    """The GPU section's tiny-DAG run with training.device: auto and one fake allotted GPU: the same checks
    (masks, claims table, metrics, a slot per training) pass with the trainings on the CPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "locks"))
    res = gpu.tiny_dag(2, lambda _m: None, device="auto")
    assert res["ok"], res
    assert res["masks"] == 32 and res["claims_rows"] > 0 and res["metrics_on_cpu"] == res["metrics_files"] == 30
    assert res["trainings_with_a_slot"] == 32 and set(res["slots_used"]) <= {"GPU 0 slot 0", "GPU 0 slot 1"}
