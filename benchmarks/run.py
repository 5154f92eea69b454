#!/usr/bin/env python
"""lotto's speed against what researchers use today, measured side by side in one process.

    python benchmarks/run.py                      # every section; prints tables, writes benchmarks/results/*.json
    python benchmarks/run.py --sections training --rounds 7

Sections
--------
training  ResNet-20, batch 128, SGD (lr 0.1, momentum 0.9, wd 1e-4), images/s of
          (a) lotto's trainer (``lotto.train.train`` on ``DeviceData``, the config schema's default switches);
          (b) an OpenLTH-style reference loop: a torchvision CIFAR-10 dataset yielding PIL images through
              RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize and a DataLoader,
              same model, optimizer, batch size and per-step learning-rate schedule, plain fp32;
          (c) the model-only bound: (a)'s training steps on batches made beforehand, already on the device;
          (c0) the same bound with (b)'s model settings (plain NCHW fp32), which splits a/b into
              data path (c0/b) and model-side switches (c/c0).
          The variants run in interleaved rounds (order rotated every round); ratios are medians of the
          per-round ratios. Also: the data pipeline alone, lotto's batches vs the DataLoader's, images/s.
threads   CPU only: two 1-thread trainings side by side vs one 2-thread training (separate processes,
          started together), total images/s.
masks     ResNet-50 scale (25.5M prunable weights): global magnitude threshold of one network; union,
          intersection, overlap and the pairwise Jaccard matrix of 10 masks; bits per weight of .mask files.
checkpoints
          Reading a checkpoint (ResNet-20, ResNet-18) with both readers (torch: load_checkpoint; numpy: load_arrays,
          the light jobs') and, timed on its own, the check of its tensor digests (sha256 of every tensor's bytes,
          issue 21) within it; and sha256 of the file's bytes alone, MB/s.
workflow  Snakefile parse time (a fresh interpreter; torch must not be imported) and ``snakemake -n`` on every
          paper-scale config (``--workflow-configs``: config.yaml, workflow/configs/imp-paper.yaml,
          workflow/configs/zoo-paper.yaml), each with its job count and its own parse + DAG time target.
workflow_efficiency
          Not in the default set (it runs a whole experiment: minutes of every core it is given). The demo
          config (workflow/configs/demo.yaml) for real, ``snakemake --cores N`` (``--efficiency-cores``, 2) in a
          scratch copy of this checkout: the DAG's efficiency is the training compute (the ``elapsed_s`` of
          every metrics JSON plus the pretraining runs' times from their logs) divided by N, over the wall time
          of the whole run. What is lost is per-job overhead: interpreter and torch start-up, data and model
          loading, evaluation, Snakemake's own scheduling (its process's CPU time is reported), and the light
          jobs (masks, compositions). Run twice, side by side: with the fork server a local run starts
          (lotto/forkserver.py: torch imported once, a forked child per job) and with LOTTO_FORKSERVER=off
          (every job its own interpreter), checking that both write the same masks, byte for byte.
          Meaningful on an otherwise idle machine only.
gpu       Not in the default set. ResNet-20 / CIFAR-10 on one GPU in about 5 minutes (benchmarks/gpu.py): images/s
          at batch 128 for fp32, bf16 autocast, channels_last and torch.compile; the aggregate images/s of 1, 2, 4
          and 8 trainings sharing the GPU (separate processes) with their peak GPU memory; the GPU-hours of
          config.yaml projected from them; bf16 against fp32 (accuracy, masks); the tiny DAG with
          training.device: cuda. Without a GPU: says so, prints the CPU figures (a minute) and exits 0.
          How to read it for a config: docs/cluster.md, "Trainings per GPU".

Data: CIFAR-10 from --cifar (a directory with train.npz holding x uint8 N x 32 x 32 x 3 and y), else
$LOTTO_CIFAR10, else data/cifar10, else torchvision's files under data/torchvision, else synthetic uint8 images
(the timings do not depend on pixel values). Runs unchanged on CUDA (``--device auto`` picks it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {
    "a_over_b": (">=", 1.15),
    "a_over_c": (">=", 0.85),
    "data_pipeline_over_dataloader": (">=", 5.0),
    "global_magnitude_s": ("<", 0.2),
    "mask_ops_10_s": ("<", 0.5),
    "mask_bits_per_weight": ("<=", 1.2),
    "checkpoint_digest_overhead_ms": ("<", 5.0),
    "snakefile_parse_s": ("<", 1.0),
    "dry_run_s": ("<", 10.0),
    "dag_efficiency": (">=", 0.5),
}
# --cifar, else $LOTTO_CIFAR10, else data/cifar10 (where the README suggests linking a local copy)
CIFAR_CANDIDATES = [Path(p) for p in (os.environ.get("LOTTO_CIFAR10"),) if p] + [ROOT / "data" / "cifar10"]


def _median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def _meets(name, value):
    op, bound = TARGETS[name]
    return {"<": value < bound, "<=": value <= bound, ">=": value >= bound}[op]


def _table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print()


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
def load_cifar(path: str | None, limit: int | None):
    """(x uint8 NHWC, y int64, origin, torchvision root or None)."""
    import numpy as np

    candidates = [Path(path)] if path else CIFAR_CANDIDATES
    for c in candidates:
        f = c / "train.npz" if c.is_dir() else c
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                x, y = z["x"], z["y"].astype(np.int64)
            return x[:limit], y[:limit], str(f), None
    tv_root = ROOT / "data" / "torchvision"
    if (tv_root / "cifar-10-batches-py").is_dir():
        import torchvision

        ds = torchvision.datasets.CIFAR10(str(tv_root), train=True, download=False)
        return ds.data[:limit], np.asarray(ds.targets, dtype=np.int64)[:limit], "torchvision CIFAR10", tv_root
    rng = np.random.default_rng(0)
    n = limit or 50000
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64),
            "synthetic uint8 images", None)


def reference_dataset(x, y, tv_root, transform):
    """What OpenLTH trains on: a torchvision CIFAR-10 dataset yielding PIL images through ``transform``."""
    import torch
    from PIL import Image

    if tv_root is not None:
        import torchvision

        return torchvision.datasets.CIFAR10(str(tv_root), train=True, download=False, transform=transform)

    class ArrayCIFAR(torch.utils.data.Dataset):
        # torchvision.datasets.CIFAR10.__getitem__ on arrays already in memory: Image.fromarray, then transform
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return transform(Image.fromarray(x[i])), int(y[i])

    return ArrayCIFAR()


# ---------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------
def training_defaults() -> dict:
    from lotto.config import validate

    cfg = {"experiment": "bench", "data": {"dataset": "cifar10"}, "model": {"name": "resnet20", "bn_init": "uniform"},
           "training": {}}
    return validate(cfg, partial=True)["training"]


def section_training(args, device, log) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision.transforms as T

    from lotto import train as lt
    from lotto.data import DeviceData
    from lotto.models import build_model

    tcfg = training_defaults()
    for key in ("channels_last", "compile", "precision"):
        if getattr(args, key) is not None:
            tcfg[key] = getattr(args, key)
    x, y, origin, tv_root = load_cifar(args.cifar, args.train_images)
    mean = (x.reshape(-1, 3) / 255.0).mean(0).astype(np.float32)
    std = (x.reshape(-1, 3) / 255.0).std(0).astype(np.float32)
    meta = {"dataset": "cifar10", "num_classes": 10}
    data = DeviceData(x, y, x[:1000], y[:1000], mean, std, meta, device=device, augment=True)
    schedule = lt.Schedule.from_config(tcfg, data.num_train)
    bs = schedule.batch_size
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = args.steps or (50 if device.type == "cuda" else 4)
    data_steps = max(steps * 10, 40)
    workers = args.workers if args.workers is not None else (0 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    model_cfg = {"name": "resnet20", "bn_init": "uniform"}

    def fresh_model(seed):
        return build_model(model_cfg, 3, 10, 32, seed).to(device)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                               weight_decay=schedule.weight_decay, nesterov=schedule.nesterov)

    # (a) lotto's trainer; each round continues the schedule where the previous one stopped
    model_a = fresh_model(1)
    a_pos = [0]

    def run_a(n):
        start = a_pos[0]
        t = time.perf_counter()
        lt.train(model_a, data, schedule, start, start + n, data_seed=11, aug_seed=12, device=device,
                 log=lambda _m: None, log_every=10 ** 9, channels_last=tcfg["channels_last"],
                 compile=tcfg["compile"], precision=tcfg["precision"])
        sync()
        a_pos[0] = start + n
        return n * bs / (time.perf_counter() - t)

    # (b) OpenLTH-style: PIL transforms through a DataLoader, LambdaLR stepped every iteration
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean.tolist(), std.tolist())])
    dataset = reference_dataset(x, y, tv_root, transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=False,
                                         persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(0))
    loader_iter = [iter(loader)]

    def next_ref_batch():
        try:
            return next(loader_iter[0])
        except StopIteration:
            loader_iter[0] = iter(loader)
            return next(loader_iter[0])

    model_b = fresh_model(2)
    opt_b = sgd(model_b)
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda it: schedule.lr_at(it) / schedule.lr)
    model_b.train()

    def run_b(n):
        t = time.perf_counter()
        for _ in range(n):
            xb, yb = next_ref_batch()
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt_b.zero_grad()
            loss = F.cross_entropy(model_b(xb), yb)
            loss.backward()
            opt_b.step()
            sched_b.step()
        sync()
        return n * bs / (time.perf_counter() - t)

    # (c) model-only bound with (a)'s switches; (c0) with (b)'s plain settings
    def model_only(channels_last, precision, compile_):
        model = fresh_model(3)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        fwd = torch.compile(model, dynamic=False) if compile_ else model
        opt = sgd(model)
        amp = lt.autocast_dtype(precision, device)
        batches = [data.train_batch(s, bs, 21, 22, channels_last=channels_last) for s in range(4)]
        model.train()

        def run(n):
            sync()
            t = time.perf_counter()
            for i in range(n):
                xb, yb = batches[i % len(batches)]
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = F.cross_entropy(fwd(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync()
            return n * bs / (time.perf_counter() - t)

        return run

    run_c = model_only(tcfg["channels_last"], tcfg["precision"], tcfg["compile"])
    run_c0 = model_only(False, "fp32", False)

    # the data paths alone
    def run_data_lotto(n):
        sync()
        t = time.perf_counter()
        for s in range(n):
            xb, yb = data.train_batch(s, bs, 31, 32, channels_last=tcfg["channels_last"])
        sync()
        return n * bs / (time.perf_counter() - t)

    def run_data_loader(n):
        t = time.perf_counter()
        for _ in range(n):
            xb, yb = next_ref_batch()
            xb = xb.to(device, non_blocking=True)
        sync()
        return n * bs / (time.perf_counter() - t)

    variants = {
        "a": lambda: run_a(steps),
        "b": lambda: run_b(steps),
        "c": lambda: run_c(steps),
        "c0": lambda: run_c0(steps),
        "data_lotto": lambda: run_data_lotto(data_steps),
        "data_loader": lambda: run_data_loader(max(steps, 8)),
    }
    log(f"training: ResNet-20, batch {bs}, {steps} steps per variant per round, {args.rounds} rounds (+1 warm-up), "
        f"device {device}, torch threads {torch.get_num_threads()}, DataLoader workers {workers}, data: {origin}; "
        f"lotto switches: channels_last={tcfg['channels_last']} compile={tcfg['compile']} "
        f"precision={tcfg['precision']}")
    names = list(variants)
    per_round = {k: [] for k in names}
    for r in range(args.rounds + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        got = {k: variants[k]() for k in order}
        if r == 0:
            continue  # warm-up: allocator, caches, cuDNN autotuning, compilation
        for k in names:
            per_round[k].append(got[k])
        log("  round {}: ".format(r) + ", ".join(f"{k} {got[k]:.0f}" for k in names))
    ratio = lambda p, q: _median([u / v for u, v in zip(per_round[p], per_round[q])])  # noqa: E731
    result = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "dataloader_workers": workers,
        "data": origin,
        "num_train": int(data.num_train),
        "steps_per_round": steps,
        "rounds": args.rounds,
        "lotto_switches": {k: tcfg[k] for k in ("channels_last", "compile", "precision")},
        "images_per_s_median": {k: _median(v) for k, v in per_round.items()},
        "images_per_s_rounds": per_round,
        "a_over_b": ratio("a", "b"),
        "a_over_c": ratio("a", "c"),
        "c_over_c0": ratio("c", "c0"),
        "c0_over_b": ratio("c0", "b"),
        "data_pipeline_over_dataloader": ratio("data_lotto", "data_loader"),
    }
    return result


def print_training(res):
    m = res["images_per_s_median"]
    rows = [
        ["(a) lotto trainer", f"{m['a']:.0f}", ""],
        ["(b) OpenLTH-style DataLoader + PIL loop", f"{m['b']:.0f}", ""],
        ["(c) model-only bound, lotto's switches", f"{m['c']:.0f}", ""],
        ["(c0) model-only bound, plain fp32 NCHW", f"{m['c0']:.0f}", ""],
        ["data: lotto DeviceData.train_batch", f"{m['data_lotto']:.0f}", ""],
        ["data: DataLoader + PIL transforms", f"{m['data_loader']:.0f}", ""],
    ]
    _table(rows, ["training, images/s (median)", "images/s", ""])
    rows = []
    for key, label in (("a_over_b", "a/b"), ("a_over_c", "a/c"),
                       ("data_pipeline_over_dataloader", "data pipeline / DataLoader")):
        op, bound = TARGETS[key]
        rows.append([label, f"{res[key]:.3f}", f"{op} {bound}", "yes" if _meets(key, res[key]) else "NO"])
    rows.append(["c/c0 (model-side switches)", f"{res['c_over_c0']:.3f}", "", ""])
    rows.append(["c0/b (data path + loop)", f"{res['c0_over_b']:.3f}", "", ""])
    _table(rows, ["ratio (median of rounds)", "value", "target", "met"])


# ---------------------------------------------------------------------------------------------------------
# threads: separate processes (each with its own torch thread pool), started together
# ---------------------------------------------------------------------------------------------------------
def thread_worker(args) -> None:
    """Child process: a lotto training run with ``--worker-threads`` threads; reports images/s as JSON."""
    import torch

    torch.set_num_threads(args.worker_threads)
    from lotto import train as lt
    from lotto.data import DeviceData
    from lotto.models import build_model
    import numpy as np

    tcfg = training_defaults()
    x, y, _, _ = load_cifar(args.cifar, 10000)
    mean = (x.reshape(-1, 3) / 255.0).mean(0).astype(np.float32)
    std = (x.reshape(-1, 3) / 255.0).std(0).astype(np.float32)
    data = DeviceData(x, y, x[:100], y[:100], mean, std, {"num_classes": 10}, device="cpu", augment=True)
    schedule = lt.Schedule.from_config(tcfg, data.num_train)
    model = build_model({"name": "resnet20", "bn_init": "uniform"}, 3, 10, 32, 0)
    kw = dict(device="cpu", log=lambda _m: None, log_every=10 ** 9, channels_last=tcfg["channels_last"],
              compile=tcfg["compile"], precision=tcfg["precision"])
    lt.train(model, data, schedule, 0, 2, 1, 2, **kw)  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()  # wait until every worker of this trial is ready
    t = time.perf_counter()
    lt.train(model, data, schedule, 2, 2 + args.steps, 1, 2, **kw)
    print(json.dumps({"images_per_s": args.steps * schedule.batch_size / (time.perf_counter() - t)}), flush=True)


def section_threads(args, log) -> dict:
    def trial(n_procs, threads):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--worker-threads", str(threads),
               "--steps", str(args.thread_steps)] + (["--cifar", args.cifar] if args.cifar else [])
        procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
                 for _ in range(n_procs)]
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("thread benchmark worker failed to start")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        rates = [json.loads(p.stdout.readline())["images_per_s"] for p in procs]
        for p in procs:
            p.wait()
        return sum(rates)

    cores = os.cpu_count() or 1
    two_by_one, one_by_two = [], []
    log(f"threads: {args.thread_rounds} rounds of 2 x 1-thread vs 1 x 2-thread trainings, {args.thread_steps} steps")
    for r in range(args.thread_rounds):
        pair = [lambda: trial(2, 1), lambda: trial(1, 2)]
        if r % 2:
            pair.reverse()
        out = [f() for f in pair]
        if r % 2:
            out.reverse()
        two_by_one.append(out[0])
        one_by_two.append(out[1])
        log(f"  round {r + 1}: 2x1 thread {out[0]:.0f} images/s total, 1x2 threads {out[1]:.0f}")
    return {
        "cpu_count": cores,
        "two_1thread_images_per_s": _median(two_by_one),
        "one_2thread_images_per_s": _median(one_by_two),
        "gain_two_by_one": _median([u / v for u, v in zip(two_by_one, one_by_two)]),
        "rounds": {"two_1thread": two_by_one, "one_2thread": one_by_two},
    }


def print_threads(res):
    _table([["2 trainings x 1 thread, side by side", f"{res['two_1thread_images_per_s']:.0f}"],
            ["1 training x 2 threads", f"{res['one_2thread_images_per_s']:.0f}"],
            ["ratio (2x1 / 1x2, median of rounds)", f"{res['gain_two_by_one']:.3f}"]],
           ["threads (total images/s)", "value"])


# ---------------------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------------------
def section_masks(args, log) -> dict:
    import torch
    import torchvision

    from lotto import masks as M
    from lotto.models import build_model, prunable_names
    from lotto.pruning import global_magnitude

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torchvision.models.resnet50(weights=None)
    weights = {n: p.detach() for n, p in net.named_parameters() if p.dim() > 1}  # conv + fc weights
    d = sum(w.numel() for w in weights.values())
    s = 0.8
    log(f"masks: ResNet-50 layout, {len(weights)} prunable tensors, {d:,} weights, sparsity {s}")
    gm = []
    for _ in range(args.rounds + 1):
        t = time.perf_counter()
        mask = global_magnitude(weights, s)
        gm.append(time.perf_counter() - t)
    assert mask.pruned() == round(s * d)
    g = torch.Generator().manual_seed(1)
    masks = [global_magnitude({n: w + 0.02 * torch.randn(w.shape, generator=g) * w.std() for n, w in weights.items()}, s)
             for _ in range(10)]
    timings = {"union": [], "intersection": [], "overlap": [], "pairwise_jaccard": [], "all": []}
    for _ in range(args.rounds + 1):
        t0 = time.perf_counter()
        M.union(masks)
        t1 = time.perf_counter()
        M.intersection(masks)
        t2 = time.perf_counter()
        ov = M.overlap_ratio(masks, s)
        t3 = time.perf_counter()
        jac = M.pairwise_jaccard(masks)
        t4 = time.perf_counter()
        for k, v in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            timings[k].append(v)
    with tempfile.TemporaryDirectory() as tmp:
        mask.save(Path(tmp) / "r50.mask")
        size50 = (Path(tmp) / "r50.mask").stat().st_size
        t = time.perf_counter()
        M.Mask.load(Path(tmp) / "r50.mask")
        load_s = time.perf_counter() - t
        r20 = build_model({"name": "resnet20"}, 3, 10, 32, 0)
        sd = r20.state_dict()
        m20 = global_magnitude({n: sd[n] for n in prunable_names(r20)}, s)
        m20.save(Path(tmp) / "r20.mask")
        size20 = (Path(tmp) / "r20.mask").stat().st_size
    drop_first = lambda xs: _median(xs[1:])  # noqa: E731  (first call pays page faults)
    return {
        "prunable_weights": d,
        "global_magnitude_s": drop_first(gm),
        "mask_ops_10_s": drop_first(timings["all"]),
        "mask_ops_10_breakdown_s": {k: drop_first(v) for k, v in timings.items() if k != "all"},
        "overlap_ratio_10": ov,
        "mean_pairwise_jaccard": float(jac[~(jac == 0)].mean()) if (jac > 0).any() else 0.0,
        "mask_file_bytes": size50,
        "mask_bits_per_weight": 8 * size50 / d,
        "mask_load_s": load_s,
        "resnet20_mask_file_bytes": size20,
        "resnet20_mask_bits_per_weight": 8 * size20 / m20.total,
    }


def print_masks(res):
    rows = []
    for key, label, fmt in (("global_magnitude_s", "global magnitude threshold, one network (s)", "{:.3f}"),
                            ("mask_ops_10_s", "union+intersection+overlap+pairwise Jaccard, 10 masks (s)", "{:.3f}"),
                            ("mask_bits_per_weight", "mask file, bits per prunable weight", "{:.4f}")):
        op, bound = TARGETS[key]
        rows.append([label, fmt.format(res[key]), f"{op} {bound}", "yes" if _meets(key, res[key]) else "NO"])
    b = res["mask_ops_10_breakdown_s"]
    rows.append(["  of which: union / intersection / overlap / Jaccard (s)",
                 " / ".join(f"{b[k]:.3f}" for k in ("union", "intersection", "overlap", "pairwise_jaccard")), "", ""])
    rows.append(["ResNet-20 mask file, bits per prunable weight", f"{res['resnet20_mask_bits_per_weight']:.4f}", "", ""])
    _table(rows, [f"masks at ResNet-50 scale ({res['prunable_weights']:,} weights)", "value", "target", "met"])


# ---------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------
def section_checkpoints(args, log) -> dict:
    """Reading a checkpoint and the part of it that checks the tensor digests (lotto.io._check_digests: sha256 of
    every tensor read), timed on its own over the state each reader returns (a difference of two whole reads
    drowns in their noise here)."""
    import hashlib

    from safetensors import safe_open

    from lotto import io
    from lotto.models import build_model, prunable_names

    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in (("resnet20", (3, 10, 32)), ("resnet18", (3, 10, 32))):
            model = build_model({"name": name}, *shape, 0)
            meta = {"kind": "init", "step": 0, "prunable": prunable_names(model),
                    "model": {"name": name, "in_channels": shape[0], "num_classes": shape[1], "image_size": shape[2]}}
            path = Path(tmp) / f"{name}.safetensors"
            io.save_checkpoint(path, model.state_dict(), meta)
            with safe_open(str(path), framework="np") as fh:
                header, present = fh.metadata(), list(fh.keys())
            times = {k: [] for k in ("torch_read", "numpy_read", "torch_digests", "numpy_digests")}
            for _ in range(args.rounds + 1):
                for kind, reader in (("torch", io.load_checkpoint), ("numpy", io.load_arrays)):
                    t = time.perf_counter()
                    state, _ = reader(path)
                    times[f"{kind}_read"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    io._check_digests(path, header, present, state)
                    times[f"{kind}_digests"].append(time.perf_counter() - t)
            raw = path.read_bytes()
            t = time.perf_counter()
            for _ in range(5):
                hashlib.sha256(raw).hexdigest()
            sha_mb_s = 5 * len(raw) / 1e6 / (time.perf_counter() - t)
            # the first round pays page faults; the minimum is the work itself, the median adds what the machine's
            # other processes take (on a shared 2-core machine, most of it)
            med = {k: 1e3 * _median(v[1:]) for k, v in times.items()}
            low = {k: 1e3 * min(v[1:]) for k, v in times.items()}
            res[name] = {"file_mb": len(raw) / 1e6, "ms": med, "ms_min": low, "sha256_mb_s": sha_mb_s}
            log(f"checkpoints: {name} {res[name]['file_mb']:.1f} MB: median {med}, min {low}")
    res["checkpoint_digest_overhead_ms"] = max(res["resnet20"]["ms_min"][f"{k}_digests"] for k in ("torch", "numpy"))
    return res


def print_checkpoints(res):
    rows = []
    for name in ("resnet20", "resnet18"):
        r = res[name]
        for kind in ("torch", "numpy"):
            rows.append([f"{name} ({r['file_mb']:.1f} MB), {kind} reader: read / of which digests, min (median) ms",
                         f"{r['ms_min'][f'{kind}_read']:.1f} ({r['ms'][f'{kind}_read']:.1f}) / "
                         f"{r['ms_min'][f'{kind}_digests']:.1f} ({r['ms'][f'{kind}_digests']:.1f})", "", ""])
        rows.append([f"{name}: sha256 of the file's bytes alone (MB/s)", f"{r['sha256_mb_s']:.0f}", "", ""])
    key = "checkpoint_digest_overhead_ms"
    op, bound = TARGETS[key]
    rows.append(["digest check per ResNet-20 read, slower reader, min (ms)", f"{res[key]:.2f}", f"{op} {bound}",
                 "yes" if _meets(key, res[key]) else "NO"])
    _table(rows, ["checkpoint reads", "value", "target", "met"])


# ---------------------------------------------------------------------------------------------------------
# workflow
# ---------------------------------------------------------------------------------------------------------
PARSE_SNIPPET = r"""
import json, sys, time
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings
with SnakemakeApi(OutputSettings(quiet=None)) as api:
    t = time.perf_counter()
    wf = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
                      storage_settings=StorageSettings(), snakefile=Path("Snakefile"), workdir=Path("."))
    rules = wf._workflow.rules  # parsing happens here
    dt = time.perf_counter() - t
print(json.dumps({"parse_s": dt, "rules": len(list(rules)), "torch_imported": "torch" in sys.modules}))
"""


DRY_RUN_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import snakemake.cli  # imports every installed plugin; snakemake-executor-plugin-slurm probes `scontrol` here
t1 = time.perf_counter()
try:
    snakemake.cli.main(["-n", "--quiet", "rules", "--configfile", sys.argv[1]])
except SystemExit as exc:
    code = exc.code
t2 = time.perf_counter()
sys.stderr.flush()
print(json.dumps({"startup_s": t1 - t0, "workflow_s": t2 - t1, "code": code}))
"""


#: the paper-scale configs whose `snakemake -n` is measured (each must meet TARGETS["dry_run_s"])
PAPER_CONFIGS = ("config.yaml", "workflow/configs/imp-paper.yaml", "workflow/configs/zoo-paper.yaml")


def section_workflow(args, log) -> dict:
    parses = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", PARSE_SNIPPET], cwd=ROOT, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"parsing the Snakefile failed:\n{out.stderr[-2000:]}")
        parses.append(json.loads(out.stdout.strip().splitlines()[-1]))
    configs = [c.strip() for c in args.workflow_configs.split(",") if c.strip()]
    runs = {c: [] for c in configs}
    jobs = {c: None for c in configs}
    for _ in range(2):  # interleaved rounds: every config sees the same drift in machine load
        for cfg in configs:
            log(f"workflow: snakemake -n --configfile {cfg}")
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", DRY_RUN_SNIPPET, cfg], cwd=ROOT, capture_output=True,
                                 text=True)
            wall = time.perf_counter() - t
            lines = out.stdout.strip().splitlines()
            rec = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"code": out.returncode}
            if rec["code"]:
                raise RuntimeError(f"snakemake -n --configfile {cfg} failed:\n{out.stderr[-2000:]}")
            runs[cfg].append({**rec, "wall_s": wall})
            m = re.search(r"^total\s+(\d+)", out.stdout + out.stderr, re.M)
            jobs[cfg] = int(m.group(1)) if m else None
    dry_runs = [{
        "config": cfg,
        "jobs": jobs[cfg],
        # parse + DAG + dry-run schedule: what the workflow itself costs
        "dry_run_s": _median([r["workflow_s"] for r in runs[cfg]]),
        # the whole `snakemake -n` command, including snakemake's start-up (plugin imports)
        "dry_run_wall_s": _median([r["wall_s"] for r in runs[cfg]]),
        "snakemake_startup_s": _median([r["startup_s"] for r in runs[cfg]]),
    } for cfg in configs]
    first = dry_runs[0]
    return {
        "snakefile_parse_s": _median([p["parse_s"] for p in parses]),
        "rules": parses[0]["rules"],
        "torch_imported_at_parse": any(p["torch_imported"] for p in parses),
        # one record per paper-scale config; TARGETS["dry_run_s"] applies to each
        "dry_runs": dry_runs,
        "dry_run_max_s": max(d["dry_run_s"] for d in dry_runs),
        # the keys of earlier reports: the first config (config.yaml by default)
        "dry_run_config": first["config"],
        "dry_run_s": first["dry_run_s"],
        "dry_run_wall_s": first["dry_run_wall_s"],
        "snakemake_startup_s": first["snakemake_startup_s"],
        "dry_run_jobs": first["jobs"],
    }


def print_workflow(res):
    rows = []
    op, bound = TARGETS["snakefile_parse_s"]
    rows.append([f"Snakefile parse ({res['rules']} rules) (s)", f"{res['snakefile_parse_s']:.2f}", f"{op} {bound}",
                 "yes" if _meets("snakefile_parse_s", res["snakefile_parse_s"]) else "NO"])
    op, bound = TARGETS["dry_run_s"]
    for d in res["dry_runs"]:
        jobs = f"{d['jobs']:,}" if d["jobs"] is not None else "?"
        rows.append([f"snakemake -n {d['config']}, {jobs} jobs: parse + DAG (s)", f"{d['dry_run_s']:.2f}",
                     f"{op} {bound}", "yes" if _meets("dry_run_s", d["dry_run_s"]) else "NO"])
        rows.append(["  whole command incl. snakemake start-up (s)", f"{d['dry_run_wall_s']:.2f}", "", ""])
    rows.append(["snakemake start-up: imports + plugin probes (s)",
                 f"{_median([d['snakemake_startup_s'] for d in res['dry_runs']]):.2f}", "", ""])
    rows.append(["torch imported while parsing", str(res["torch_imported_at_parse"]), "False",
                 "yes" if not res["torch_imported_at_parse"] else "NO"])
    _table(rows, ["workflow overhead", "value", "target", "met"])


# ---------------------------------------------------------------------------------------------------------
# workflow efficiency: a real run of the demo config
# ---------------------------------------------------------------------------------------------------------
EFFICIENCY_CONFIG = "workflow/configs/demo.yaml"
#: `lotto train`'s last line (steps trained and their time); older versions logged only the images/s
_SAVED_RE = re.compile(r"saved \S+ \((\d+) steps in ([0-9.]+) s")
_SPAN_RE = re.compile(r"from step (\d+) to (\d+)")
_IPS_RE = re.compile(r"saved \S+ \(([0-9.]+|nan) images/s\)")


def _pretrain_seconds(log_text: str, batch_size: int) -> float:
    """Training time of one pretraining job, from its log (it writes no metrics)."""
    m = _SAVED_RE.search(log_text)
    if m:
        return float(m.group(2))
    span, ips = _SPAN_RE.search(log_text), _IPS_RE.search(log_text)
    if not span or not ips:
        raise RuntimeError(f"no training time in a pretraining log:\n{log_text[-1000:]}")
    steps = int(span.group(2)) - int(span.group(1))
    return 0.0 if steps == 0 else steps * batch_size / float(ips.group(1))


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (its own, not its children's); None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _mask_content(path: Path) -> tuple:
    """A mask's bits and metadata less its provenance record (which names the git commit: a commit made while
    the benchmark runs would differ) and its checksum (of those bits); a file's bytes otherwise."""
    from lotto.masks import Mask

    mask = Mask.load(path)
    meta = {k: v for k, v in mask.meta.items() if k not in ("provenance", "sha256")}
    return (json.dumps(meta, sort_keys=True, default=str),
            tuple((name, layer.tobytes()) for name, layer in sorted(mask.layers().items())))


def _efficiency_run(cfg: dict, cores: int, forkserver: bool, log) -> dict:
    """One real run of the demo config in a scratch copy; ``forkserver`` False sets LOTTO_FORKSERVER=off."""
    import shutil

    with tempfile.TemporaryDirectory(prefix="lotto-efficiency-") as tmp:
        work = Path(tmp)
        shutil.copy(ROOT / "Snakefile", work / "Snakefile")
        shutil.copy(ROOT / "config.yaml", work / "config.yaml")
        for extra in ("workflow", "envs", "profiles"):  # profiles/default: the workflow profile
            if (ROOT / extra).exists():
                shutil.copytree(ROOT / extra, work / extra, symlinks=True)
        env = dict(os.environ)
        # the jobs run this checkout's lotto, through the `lotto` entry point beside this interpreter
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("LOTTO_FORKSERVER", None)
        if not forkserver:
            env["LOTTO_FORKSERVER"] = "off"
        cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores), "--configfile",
               EFFICIENCY_CONFIG]
        log(f"workflow_efficiency: {' '.join(cmd[1:])} in {work}, fork server {'on' if forkserver else 'off'} "
            "(minutes)")
        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        t = time.perf_counter()
        with open(work / "snakemake.out", "w+") as sink:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
            main_cpu = None
            while proc.poll() is None:  # Snakemake's own process (not its jobs): its last reading
                main_cpu = _process_cpu_s(proc.pid) or main_cpu
                time.sleep(0.5)
            wall = time.perf_counter() - t
            sink.seek(0)
            output = sink.read()
        if proc.returncode:
            raise RuntimeError(f"the demo run failed:\n{output[-4000:]}")
        root = work / cfg["results_dir"] / cfg["experiment"]
        metrics = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
        trained = sum(m["elapsed_s"] for m in metrics)
        pretrain = [_pretrain_seconds(p.read_text(), cfg["training"]["batch_size"])
                    for p in root.rglob("pretrain.log")]
        m = re.search(r"(\d+) of \1 steps \(100%\) done", output)
        server_log = work / ".snakemake" / "lotto-forkserver.log"
        served = len(re.findall(r"served \d+: pid", server_log.read_text())) if server_log.exists() else 0
        masks = {str(p.relative_to(root)): _mask_content(p) for p in sorted(root.rglob("*.mask"))}
    compute = trained + sum(pretrain)
    return {
        "forkserver": forkserver,
        "jobs": int(m.group(1)) if m else None,
        "commands_served_by_forkserver": served,
        "wall_s": wall,
        "training_runs": len(metrics) + len(pretrain),
        "training_compute_s": compute,
        "dag_efficiency": compute / cores / wall,
        # CPU seconds of the snakemake process itself (scheduling, bookkeeping), read from /proc (Linux)
        "snakemake_process_cpu_s": main_cpu,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "_masks": masks,
    }


def section_workflow_efficiency(args, log) -> dict:
    """The demo run with the fork server (a local run's default) and without it, one after the other."""
    import yaml

    from lotto.config import validate

    cfg = validate(yaml.safe_load((ROOT / EFFICIENCY_CONFIG).read_text()))
    cores = args.efficiency_cores
    on = _efficiency_run(cfg, cores, True, log)
    masks = on.pop("_masks")
    result = {
        "config": EFFICIENCY_CONFIG,
        "cores": cores,
        "jobs": on["jobs"],
        "wall_s": on["wall_s"],
        "training_runs": on["training_runs"],
        "training_compute_s": on["training_compute_s"],
        "dag_efficiency": on["dag_efficiency"],
        "snakemake_process_cpu_s": on["snakemake_process_cpu_s"],
        "with_forkserver": on,
    }
    if not args.efficiency_baseline:
        return result
    off = _efficiency_run(cfg, cores, False, log)
    same = masks == off.pop("_masks")
    result.update({
        "without_forkserver": off,
        "wall_ratio_off_over_on": off["wall_s"] / on["wall_s"],
        "masks_identical_with_and_without_forkserver": same,  # bits and metadata, provenance aside
    })
    return result


def print_workflow_efficiency(res):
    op, bound = TARGETS["dag_efficiency"]
    rows = []
    for key, name in (("with_forkserver", "fork server on (default)"), ("without_forkserver", "LOTTO_FORKSERVER=off")):
        if key not in res:
            continue
        r = res[key]
        rows += [
            [f"{name}: snakemake --cores {res['cores']} on {res['config']}, {r['jobs']} jobs: wall (s)",
             f"{r['wall_s']:.1f}", "", ""],
            [f"{name}: training compute, {r['training_runs']} runs (s)", f"{r['training_compute_s']:.1f}", "", ""],
            [f"{name}: DAG efficiency, compute / cores / wall", f"{r['dag_efficiency']:.1%}", f"{op} {bound:.0%}",
             "yes" if _meets("dag_efficiency", r["dag_efficiency"]) else "NO"],
        ]
        if r.get("snakemake_process_cpu_s") is not None:
            rows.append([f"{name}: snakemake's own process, CPU (s)", f"{r['snakemake_process_cpu_s']:.1f}", "", ""])
        if "commands_served_by_forkserver" in r:
            rows.append([f"{name}: lotto commands run by the fork server", str(r["commands_served_by_forkserver"]),
                         "", ""])
    if "wall_ratio_off_over_on" in res:
        rows.append(["wall time without / with the fork server", f"{res['wall_ratio_off_over_on']:.2f}x", "", ""])
        rows.append(["masks identical with and without (bits and metadata, provenance aside)", str(res["masks_identical_with_and_without_forkserver"]),
                     "True", "yes" if res["masks_identical_with_and_without_forkserver"] else "NO"])
    _table(rows, ["workflow efficiency", "value", "target", "met"])


# ---------------------------------------------------------------------------------------------------------
def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="training,threads,masks,checkpoints,workflow",
                   help="comma-separated subset of training,threads,masks,checkpoints,workflow,workflow_efficiency,gpu "
                        "(workflow_efficiency runs the demo experiment: minutes of --efficiency-cores cores; gpu: "
                        "about 5 minutes of one GPU; neither is in the default)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/<host>-<device>-<time>.json)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    # many short rounds: on a shared machine the load drifts, and fine interleaving lets every variant see it
    p.add_argument("--rounds", type=int, default=12, help="measured rounds (medians over them)")
    p.add_argument("--steps", type=int, default=None, help="training steps per variant per round (4 CPU, 50 CUDA)")
    p.add_argument("--workers", type=int, default=None,
                   help="reference DataLoader workers (default 0 on the CPU, where the model uses every core; "
                        "min(8, cores) with CUDA)")
    p.add_argument("--train-images", type=int, default=None, help="use only the first N training images")
    p.add_argument("--cifar", default=None, help="directory with train.npz (x uint8 N x 32 x 32 x 3, y)")
    p.add_argument("--channels-last", dest="channels_last", type=_bool, default=None,
                   help="override training.channels_last for (a) and (c)")
    p.add_argument("--compile", type=_bool, default=None, help="override training.compile for (a) and (c)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                   help="override training.precision for (a) and (c)")
    p.add_argument("--workflow-configs", default=",".join(PAPER_CONFIGS),
                   help="comma-separated configs whose `snakemake -n` the workflow section times "
                        "(default: every paper-scale config)")
    p.add_argument("--efficiency-cores", type=int, default=2,
                   help="snakemake --cores of the workflow_efficiency run (default 2)")
    p.add_argument("--no-efficiency-baseline", dest="efficiency_baseline", action="store_false",
                   help="workflow_efficiency: skip the second run with LOTTO_FORKSERVER=off (half the time)")
    p.add_argument("--gpu-fidelity-epochs", type=int, default=2,
                   help="gpu: epochs of each of the three bf16-vs-fp32 trainings (real CIFAR-10 only; default 2)")
    p.add_argument("--thread-rounds", type=int, default=3)
    p.add_argument("--thread-steps", type=int, default=8)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        thread_worker(args)
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"training", "threads", "masks", "checkpoints", "workflow", "workflow_efficiency", "gpu"}
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from lotto.config import ConfigError
    from lotto.train import pick_device

    try:
        device = pick_device(args.device)
    except ConfigError as exc:  # --device cuda without CUDA: say so in one line
        print(f"benchmarks/run.py: --device {args.device}: {exc}", file=sys.stderr)
        return 2
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                    "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "targets": {k: f"{op} {b}" for k, (op, b) in TARGETS.items()},
    }
    if "training" in sections:
        report["training"] = section_training(args, device, log)
        print_training(report["training"])
    if "threads" in sections:
        if device.type == "cpu":
            report["threads"] = section_threads(args, log)
            print_threads(report["threads"])
        else:
            log("threads: skipped (CUDA training is not limited by CPU threads)")
    if "masks" in sections:
        report["masks"] = section_masks(args, log)
        print_masks(report["masks"])
    if "checkpoints" in sections:
        report["checkpoints"] = section_checkpoints(args, log)
        print_checkpoints(report["checkpoints"])
    if "workflow" in sections:
        report["workflow"] = section_workflow(args, log)
        print_workflow(report["workflow"])
    if "workflow_efficiency" in sections:
        report["workflow_efficiency"] = section_workflow_efficiency(args, log)
        print_workflow_efficiency(report["workflow_efficiency"])
    if "gpu" in sections:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import gpu  # benchmarks/gpu.py

        report["gpu"] = gpu.section_gpu(args, device, log)
        gpu.print_gpu(report["gpu"], _table)
    report["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = Path(args.out) if args.out else (
        ROOT / "benchmarks" / "results"
        / f"{platform.node() or 'host'}-{device.type}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
