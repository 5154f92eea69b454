"""The light jobs never import torch: `lotto prune`, `imp-prune`, `compose`, `random-ticket` and `zoo-consensus`
run here with torch made unimportable, as the workflow's rules call them, and write the masks the torch path
(the library on torch tensors, in this process) gives, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lotto import io, masks as M, models, pruning
from lotto.imp import pruning as imp
from lotto.zoo import similarity

ROOT = Path(__file__).resolve().parents[1]
LOTTO = str(Path(sys.executable).parent / "lotto")
SHAPE = dict(in_channels=1, num_classes=10, image_size=28)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("light")
    # a torch package that refuses to load, first on the path of the commands below
    (d / "blocker" / "torch").mkdir(parents=True)
    (d / "blocker" / "torch" / "__init__.py").write_text(
        'raise ImportError("torch is blocked here: light jobs must not import it")\n')
    for name, seed in (("a", 1), ("b", 2)):
        model = models.build_model({"name": "lenet"}, SHAPE["in_channels"], SHAPE["num_classes"],
                                   SHAPE["image_size"], init_seed=seed)
        meta = {"kind": "trained", "step": 3, "seeds": {"init": seed}, "prunable": models.prunable_names(model),
                "model": {"name": "lenet", **SHAPE}}
        io.save_checkpoint(d / f"{name}.safetensors", model.state_dict(), meta)
    return d


def light(work: Path, *args: str) -> float:
    """Run one lotto command with torch unimportable (in ``work``); return its wall time."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(work / "blocker"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    t = time.perf_counter()
    res = subprocess.run([LOTTO, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t
    assert res.returncode == 0, f"lotto {' '.join(args)}:\n{res.stderr[-3000:]}"
    return wall


def torch_state(path: Path) -> tuple[dict, dict]:
    state, meta = io.load_checkpoint(path)  # torch tensors: the path these commands took before
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    return state, meta


def test_torch_is_really_blocked(work):
    env = {**os.environ, "PYTHONPATH": str(work / "blocker")}
    res = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "torch is blocked here" in res.stderr


def test_prune_without_torch_matches_the_torch_path(work):
    labels = '{"pretrain_steps":0,"replicate":0,"sibling":1}'
    times = [light(work, "prune", "--threads", "1", "--checkpoint", f"{n}.safetensors", "--sparsity", "0.8000",
                   "--labels", labels, "--out", f"{n}.mask") for n in ("a", "b")]
    for n in ("a", "b"):
        state, meta = torch_state(work / f"{n}.safetensors")
        ref = pruning.global_magnitude(pruning.prunable_weights(state, meta["prunable"]), 0.8).with_meta(
            checkpoint=f"{n}.safetensors", step=meta.get("step"), seeds=meta.get("seeds"),
            pretrain_steps=0, replicate=0, sibling=1)
        ref.save(work / f"{n}.ref.mask")
        assert (work / f"{n}.mask").read_bytes() == (work / f"{n}.ref.mask").read_bytes()
    print(f"lotto prune without torch: {min(times):.2f} s wall")


def test_imp_prune_without_torch_matches_the_torch_path(work):
    light(work, "imp-prune", "--threads", "1", "--checkpoint", "a.safetensors", "--fraction", "0.2",
          "--out", "imp1.mask")
    light(work, "imp-prune", "--threads", "1", "--checkpoint", "b.safetensors", "--mask", "imp1.mask",
          "--fraction", "0.2", "--labels", '{"level":2}', "--out", "imp2.mask")
    state_a, meta = torch_state(work / "a.safetensors")
    state_b, _ = torch_state(work / "b.safetensors")
    ref1 = imp.prune_remaining(pruning.prunable_weights(state_a, meta["prunable"]), 0.2).with_meta(
        checkpoint="a.safetensors", parent=None)
    ref2 = imp.prune_remaining(pruning.prunable_weights(state_b, meta["prunable"]), 0.2, ref1).with_meta(
        checkpoint="b.safetensors", parent="imp1.mask", level=2)
    for got, ref in (("imp1.mask", ref1), ("imp2.mask", ref2)):
        ref.save(work / f"ref-{got}")
        assert (work / got).read_bytes() == (work / f"ref-{got}").read_bytes(), got
    assert M.Mask.load(work / "imp2.mask").sparsity() == pytest.approx(0.36, abs=1e-4)


def test_mask_algebra_jobs_without_torch(work):
    """compose, random-ticket and zoo-consensus (numpy only already) stay torch-free."""
    if not (work / "b.mask").exists():
        test_prune_without_torch_matches_the_torch_path(work)
    a, b = M.Mask.load(work / "a.mask"), M.Mask.load(work / "b.mask")
    light(work, "compose", "--op", "union", "--sparsity", "0.8000", "--labels", '{"replicate":0}', "--sidecar",
          "c.json", "--out", "c.mask", "a.mask", "b.mask")
    assert M.Mask.load(work / "c.mask").bits.tobytes() == M.compose([a, b], "union").bits.tobytes()
    assert io.read_json(work / "c.json")["overlap"] == M.overlap_ratio([a, b], 0.8)
    light(work, "random-ticket", "--mask", "a.mask", "--replicate", "0", "--seed-parts", "0", "0.8000",
          "--out", "r.mask")
    from lotto.seeds import derive_seed

    ref = M.shuffle_within_layers(a, derive_seed(0, "random-ticket", "0", "0.8000"))
    assert M.Mask.load(work / "r.mask").bits.tobytes() == ref.bits.tobytes()
    light(work, "zoo-consensus", "--min", "2", "--labels", '{"ticket":"consensus"}', "--out", "z.mask",
          "a.mask", "b.mask", "r.mask")
    r = M.Mask.load(work / "r.mask")
    assert M.Mask.load(work / "z.mask").bits.tobytes() == similarity.consensus([a, b, r], 2).bits.tobytes()


def test_numpy_checkpoints_hold_the_torch_values(work):
    pt, meta_pt = io.load_checkpoint(work / "a.safetensors")
    np_state, meta_np = io.load_arrays(work / "a.safetensors")
    assert meta_np == meta_pt and np_state.keys() == pt.keys()
    assert all((np_state[k] == pt[k].numpy()).all() and np_state[k].dtype == pt[k].numpy().dtype for k in pt)
