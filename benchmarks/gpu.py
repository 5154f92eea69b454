"""The ``gpu`` section of benchmarks/run.py: what one GPU does with ResNet-20 / CIFAR-10, and how to set
``training.precision``, ``training.compile`` and ``resources.trainings_per_gpu`` for it.

    python benchmarks/run.py --sections gpu          # about 4-5 minutes on one GPU; a minute on a CPU

On a CUDA device it prints
1. images/s of lotto's trainer (``lotto.train.train`` on ``DeviceData``) at batch 128 for plain fp32 (NCHW),
   bf16 autocast, channels_last, torch.compile (one switch at a time against fp32) and bf16 + channels_last,
   with each variant's peak GPU memory and compile time;
2. the aggregate images/s of 1, 2, 4 and 8 trainings sharing the GPU: separate processes, each a lotto
   training with the config's switches (as the DAG runs them; --precision / --channels-last / --compile
   override them), started together; with each training's peak memory (torch's, and the device memory a
   training process holds, CUDA context included);
3. the GPU-hours of config.yaml's trainings projected from those figures, at each sharing level;
4. a fidelity check of bf16 against fp32 (real CIFAR-10 only): three short trainings from one init, fp32 and
   bf16 with one data order and fp32 with another: test accuracy and the Jaccard similarity of their 80%
   global-magnitude masks. bf16 matches when it is no further from fp32 than a second fp32 run is;
5. the tiny DAG (workflow/configs/tiny.yaml) with ``training.device: cuda`` and 2 trainings per GPU, run for
   real: its masks, claims table and every training's device slot must be there;
and what that means for the config (docs/cluster.md, "Trainings per GPU"). Without CUDA it says why, measures
the CPU figures of 1 and 2 (1 thread per training, no compile: minutes on a CPU), and exits 0.

Data: CIFAR-10 as the other sections find it (--cifar, $LOTTO_CIFAR10, data/cifar10, torchvision's files),
else synthetic CIFAR-shaped images (throughput does not depend on pixel values; the fidelity check is then
skipped). The report says which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 128
SHARING = (1, 2, 4, 8)
CPU_SHARING = (1, 2)
#: one switch at a time against plain fp32, and the two cheap ones together
VARIANTS = (
    ("fp32", {"precision": "fp32", "channels_last": False, "compile": False}),
    ("bf16 autocast", {"precision": "bf16", "channels_last": False, "compile": False}),
    ("channels_last", {"precision": "fp32", "channels_last": True, "compile": False}),
    ("compile", {"precision": "fp32", "channels_last": False, "compile": True}),
    ("bf16 + channels_last", {"precision": "bf16", "channels_last": True, "compile": False}),
)
#: a bigger sharing level counts as better only when it adds this much aggregate throughput
SHARING_GAIN = 0.05
MODEL_CFG = {"name": "resnet20", "bn_init": "uniform"}


def _run_module():
    sys.path.insert(0, str(HERE))
    import run  # benchmarks/run.py: its data loader and the schema's training defaults

    return run


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _test_split(origin: str, tv_root):
    """The CIFAR-10 test images beside the training ones found by load_cifar (None for synthetic data)."""
    import numpy as np

    if tv_root is not None:
        import torchvision

        ds = torchvision.datasets.CIFAR10(str(tv_root), train=False, download=False)
        return ds.data, np.asarray(ds.targets, dtype=np.int64)
    f = Path(origin)
    if f.name == "train.npz" and (f.parent / "test.npz").is_file():
        with np.load(f.parent / "test.npz", allow_pickle=False) as z:
            return z["x"], z["y"].astype(np.int64)
    return None


def device_data(args, device, limit: int | None, with_test: bool = False, test_limit: int | None = None):
    """(DeviceData, origin, real): CIFAR-10 (or synthetic images) on ``device``; ``real``: with its test set."""
    import numpy as np

    from lotto.data import DeviceData

    x, y, origin, tv_root = _run_module().load_cifar(args.cifar, limit)
    real = not origin.startswith("synthetic")
    test = _test_split(origin, tv_root) if (with_test and real) else None
    xt, yt = (test[0][:test_limit], test[1][:test_limit]) if test is not None else (x[:256], y[:256])
    mean = (x.reshape(-1, 3) / 255.0).mean(0).astype(np.float32)
    std = (x.reshape(-1, 3) / 255.0).std(0).astype(np.float32)
    data = DeviceData(x, y, xt, yt, mean, std, {"dataset": "cifar10", "num_classes": 10}, device=device,
                      augment=True)
    return data, origin, real and test is not None


def _switches(args) -> dict:
    """The training switches the DAG would use (schema defaults, config.yaml's values), with the overrides."""
    tcfg = _run_module().training_defaults()
    for key in ("channels_last", "compile", "precision"):
        if getattr(args, key, None) is not None:
            tcfg[key] = getattr(args, key)
    return tcfg


def _trainer(data, device, tcfg, seed=0):
    from lotto import train as lt
    from lotto.models import build_model

    model = build_model(MODEL_CFG, 3, 10, 32, seed).to(device)
    # a long schedule (lotto.train.train refuses steps past its end); the step count of a round is not known
    schedule = lt.Schedule.from_config({**tcfg, "batch_size": BATCH, "epochs": 10_000}, data.num_train)
    kw = dict(device=device, log=lambda _m: None, log_every=10 ** 9, channels_last=tcfg["channels_last"],
              compile=tcfg["compile"], precision=tcfg["precision"])
    pos = [0]

    def steps(n):
        """Train n more steps (the schedule goes on where it stopped); seconds, synchronised."""
        t = time.perf_counter()
        lt.train(model, data, schedule, pos[0], pos[0] + n, 11, 12, **kw)
        _sync(device)
        pos[0] += n
        return time.perf_counter() - t

    return steps


def measure(steps, seconds: float, warmup: int, chunk: int) -> dict:
    """images/s of ``steps`` over about ``seconds``, after ``warmup`` steps (compilation, cuDNN autotuning)."""
    warm_s = steps(warmup)
    pilot = chunk / steps(chunk)
    n = max(chunk, int(pilot * seconds))
    return {"images_per_s": n * BATCH / steps(n), "warmup_s": warm_s, "steps": n}


# ---------------------------------------------------------------------------------------------------------
# one training per process, several processes: the worker
# ---------------------------------------------------------------------------------------------------------
def worker_main(argv=None) -> None:
    """``python benchmarks/gpu.py --worker ...``: one training process of the sharing measurement.

    Prints one JSON line when ready, then per ``go SECONDS`` line on stdin trains for that long and prints
    {images, start, end, peak_allocated_mb, peak_reserved_mb}; ``quit`` ends it."""
    import argparse

    t0 = time.time()
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--cifar", default=None)
    p.add_argument("--precision", default=None)
    p.add_argument("--channels-last", dest="channels_last", default=None)
    p.add_argument("--compile", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    args = p.parse_args(argv)
    for key in ("channels_last", "compile"):
        if getattr(args, key) is not None:
            setattr(args, key, getattr(args, key).lower() in ("1", "true", "yes"))
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    device = torch.device(args.device)
    data, _, _ = device_data(args, device, 10000)
    steps = _trainer(data, device, _switches(args), seed=os.getpid() % 1000)
    steps(args.warmup)
    print(json.dumps({"ready": True, "startup_s": time.time() - t0}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        seconds = float(cmd[1])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.time()
        n = 0
        chunk = 25 if device.type == "cuda" else 1  # a lotto.train.train call per chunk: its set-up amortised
        while time.time() - start < seconds:
            steps(chunk)
            n += chunk
        end = time.time()
        mb = 2 ** 20
        print(json.dumps({
            "images": n * BATCH, "start": start, "end": end,
            "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / mb if device.type == "cuda" else None,
            "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / mb if device.type == "cuda" else None,
        }), flush=True)


def sharing(args, device, levels, seconds: float, log) -> dict:
    """Aggregate images/s of K trainings side by side, K in ``levels``: max(levels) worker processes are
    started once; each round sets the first K of them training together."""
    import torch

    n = max(levels)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--device", device.type, "--threads", "1",
           "--warmup", "20" if device.type == "cuda" else "1"]
    for key, flag in (("cifar", "--cifar"), ("precision", "--precision"), ("channels_last", "--channels-last"),
                      ("compile", "--compile")):
        if getattr(args, key, None) is not None:
            cmd += [flag, str(getattr(args, key))]
    free_before = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for _ in range(n)]
    try:
        ready = []
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("{"):
                raise RuntimeError("a sharing worker failed to start (run benchmarks/gpu.py --worker by hand to see why)")
            ready.append(json.loads(line))
        log(f"gpu: {n} training processes ready after {time.perf_counter() - t:.1f}s")
        held_mb = None
        if device.type == "cuda":  # what one idle training process holds: CUDA context + cached blocks
            held_mb = (free_before - torch.cuda.mem_get_info(device)[0]) / n / 2 ** 20
        rounds = {}
        for k in levels:
            for p in procs[:k]:
                p.stdin.write(f"go {seconds}\n")
                p.stdin.flush()
            got = [json.loads(p.stdout.readline()) for p in procs[:k]]
            wall = max(g["end"] for g in got) - min(g["start"] for g in got)
            agg = sum(g["images"] for g in got) / wall
            rounds[k] = {
                "aggregate_images_per_s": agg,
                "per_training_images_per_s": agg / k,
                "peak_allocated_mb": max((g["peak_allocated_mb"] or 0) for g in got) or None,
                "peak_reserved_mb": max((g["peak_reserved_mb"] or 0) for g in got) or None,
            }
            log(f"  {k} side by side: {agg:.0f} images/s in all")
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    p.stdin.write("quit\n")
                    p.stdin.flush()
                except BrokenPipeError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    base = rounds[levels[0]]["aggregate_images_per_s"]
    for r in rounds.values():
        r["vs_one"] = r["aggregate_images_per_s"] / base
    best = levels[0]
    for k in levels[1:]:  # a bigger level only for a real gain over the best so far
        if rounds[k]["aggregate_images_per_s"] >= (1 + SHARING_GAIN) * rounds[best]["aggregate_images_per_s"]:
            best = k
    return {"levels": list(levels), "seconds_per_round": seconds, "rounds": {str(k): v for k, v in rounds.items()},
            "process_startup_s": sorted(r["startup_s"] for r in ready)[len(ready) // 2],
            "idle_process_gpu_mb": held_mb, "best_trainings_per_gpu": best}


# ---------------------------------------------------------------------------------------------------------
# what config.yaml trains
# ---------------------------------------------------------------------------------------------------------
_RULE_RE = re.compile(r"^(?:local)?rule (\w+):$")
_WILDCARDS_RE = re.compile(r"^\s+wildcards: (.*)$")


def config_workload(config: str = "config.yaml") -> dict:
    """The trainings of ``config`` (its `snakemake -n`) and the images they train: pretraining 0 -> t,
    siblings and retrainings t -> end of the schedule (the composability family, which config.yaml runs)."""
    import yaml

    from lotto import datasets
    from lotto.config import validate
    from lotto.train import Schedule

    cfg = validate(yaml.safe_load((ROOT / config).read_text()))
    n_train = cfg["data"].get("train_size") or datasets.CATALOG[cfg["data"]["dataset"]].train
    total = Schedule.from_config(cfg["training"], n_train).total_steps
    with tempfile.TemporaryDirectory(prefix="lotto-gpu-dry-") as tmp:
        work = Path(tmp)
        for name in ("Snakefile", config):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, work / name)
        for extra in ("workflow", "envs", "profiles"):
            if (ROOT / extra).exists():
                shutil.copytree(ROOT / extra, work / extra, symlinks=True)
        out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--configfile", config],
                             cwd=work, capture_output=True, text=True,
                             env={**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep
                                  + os.environ.get("PATH", "")})
    if out.returncode:
        raise RuntimeError(f"snakemake -n --configfile {config} failed:\n{out.stderr[-2000:]}")
    steps, counts, rule = 0, {}, None
    for line in out.stdout.splitlines():
        m = _RULE_RE.match(line.strip())
        if m:
            rule = m.group(1)
            continue
        m = _WILDCARDS_RE.match(line)
        if m and rule in ("pretrain", "sibling", "retrain"):
            w = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
            pre = int(w["pre"])
            steps += pre if rule == "pretrain" else total - pre
            counts[rule] = counts.get(rule, 0) + 1
            rule = None
    return {"config": config, "trainings": sum(counts.values()), "by_rule": counts, "steps": steps,
            "images": steps * cfg["training"]["batch_size"], "schedule_steps": total,
            "batch_size": cfg["training"]["batch_size"]}


# ---------------------------------------------------------------------------------------------------------
# bf16 against fp32
# ---------------------------------------------------------------------------------------------------------
def fidelity(args, device, epochs: int, log, limit: int | None = None) -> dict:
    """Three short trainings from one init: fp32 and bf16 with data order A, fp32 with order B (on the first
    ``limit`` training and test images; all by default)."""
    from lotto import train as lt
    from lotto.masks import jaccard_distance
    from lotto.models import build_model, prunable_names
    from lotto.pruning import global_magnitude

    data, origin, real = device_data(args, device, limit, with_test=True, test_limit=limit)
    if not real:
        return {"skipped": f"no real CIFAR-10 test set ({origin}): accuracies of synthetic images mean nothing"}
    base = _switches(args)
    runs = {}
    for name, precision, seeds in (("fp32 A", "fp32", (11, 12)), ("bf16 A", "bf16", (11, 12)),
                                   ("fp32 B", "fp32", (21, 22))):
        tcfg = {**base, "precision": precision, "compile": False, "epochs": epochs,
                "milestones": [epochs * 0.5, epochs * 0.75]}
        model = build_model(MODEL_CFG, 3, 10, 32, 0).to(device)
        schedule = lt.Schedule.from_config(tcfg, data.num_train)
        t = time.perf_counter()
        lt.train(model, data, schedule, 0, schedule.total_steps, *seeds, device=device, log=lambda _m: None,
                 log_every=10 ** 9, channels_last=tcfg["channels_last"], precision=precision)
        _sync(device)
        acc = lt.evaluate(model, data.test_batches(1000), device)["accuracy"]
        sd = model.state_dict()
        mask = global_magnitude({k: sd[k].detach().float().cpu() for k in prunable_names(model)}, 0.8)
        runs[name] = {"accuracy": acc, "mask": mask, "seconds": time.perf_counter() - t}
        log(f"  fidelity {name}: test accuracy {acc:.4f} after {epochs} epochs ({runs[name]['seconds']:.0f}s)")
    sim = lambda a, b: 1.0 - jaccard_distance(runs[a]["mask"], runs[b]["mask"])  # noqa: E731
    acc = {k: v["accuracy"] for k, v in runs.items()}
    bf16_gap, seed_gap = abs(acc["bf16 A"] - acc["fp32 A"]), abs(acc["fp32 B"] - acc["fp32 A"])
    j_bf16, j_seed = sim("fp32 A", "bf16 A"), sim("fp32 A", "fp32 B")
    return {
        "data": origin, "epochs": epochs, "test_accuracy": acc,
        "accuracy_gap_bf16": bf16_gap, "accuracy_gap_other_data_order": seed_gap,
        "mask_jaccard_fp32_bf16": j_bf16, "mask_jaccard_fp32_other_data_order": j_seed,
        # bf16 is no further from fp32 than fp32 with another data order (half a point of slack on accuracy)
        "bf16_matches_fp32": bool(bf16_gap <= max(seed_gap, 0.005) and j_bf16 >= j_seed),
        "sparsity": 0.8,
    }


# ---------------------------------------------------------------------------------------------------------
# the tiny DAG on the GPU
# ---------------------------------------------------------------------------------------------------------
def tiny_dag(per_gpu: int, log, device: str = "cuda") -> dict:
    """`snakemake --resources gpu=1` on workflow/configs/tiny.yaml with ``training.device`` (cuda) and
    ``per_gpu`` trainings per GPU, in a scratch copy of this checkout: its masks, claims table, metrics on that
    device and every training's device slot must be there."""
    with tempfile.TemporaryDirectory(prefix="lotto-gpu-tiny-") as tmp:
        work = Path(tmp)
        shutil.copy(ROOT / "Snakefile", work / "Snakefile")
        shutil.copy(ROOT / "config.yaml", work / "config.yaml")
        for extra in ("workflow", "envs", "profiles"):
            if (ROOT / extra).exists():
                shutil.copytree(ROOT / extra, work / extra, symlinks=True)
        text = (work / "workflow/configs/tiny.yaml").read_text()
        for old, new in (("training:\n", f"training:\n  device: {device}\n"),
                         ("train_gpus: 0", f"train_gpus: 1\n  trainings_per_gpu: {per_gpu}")):
            if old not in text:
                raise RuntimeError(f"workflow/configs/tiny.yaml has no {old.strip()!r} line to change")
            text = text.replace(old, new, 1)
        (work / "tiny-cuda.yaml").write_text(text)
        cores = min(8, os.cpu_count() or 1)
        cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores), "--resources", "gpu=1",
               "--configfile", "tiny-cuda.yaml"]
        env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        log(f"gpu: {' '.join(cmd[1:])} (tiny config, training.device: {device}, {per_gpu} trainings per GPU)")
        t = time.perf_counter()
        out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        root = work / "results" / "tiny"
        masks = sorted(root.rglob("*.mask"))
        claims = root / "tables" / "claims.csv"
        metrics = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
        slots = [m.groups() for p in root.rglob("*.log")
                 for m in re.finditer(r"device slot: GPU (\S+) = cuda:(\d+), slot (\d+)", p.read_text())]
        res = {
            "command": " ".join(cmd[1:]), "returncode": out.returncode, "wall_s": wall, "masks": len(masks),
            "claims_table": claims.is_file(),
            "claims_rows": max(0, len(claims.read_text().splitlines()) - 1) if claims.is_file() else 0,
            "metrics_files": len(metrics),
            "metrics_on_cuda": sum(str(m.get("device", "")).startswith("cuda") for m in metrics),
            "metrics_on_cpu": sum(str(m.get("device", "")) == "cpu" for m in metrics),
            "trainings_with_a_slot": len(slots),
            "slots_used": sorted({f"GPU {g} slot {s}" for g, _, s in slots}),
        }
        on = res["metrics_on_cuda"] if device == "cuda" else res["metrics_on_cpu"] + res["metrics_on_cuda"]
        res["ok"] = bool(out.returncode == 0 and masks and res["claims_rows"] and metrics and on == len(metrics)
                         and len(slots) >= len(metrics))
        if out.returncode:
            res["output_tail"] = (out.stdout + out.stderr)[-3000:]
    return res


# ---------------------------------------------------------------------------------------------------------
def section_gpu(args, device, log) -> dict:
    import torch

    t_start = time.perf_counter()
    res = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
           "trainings_per_gpu_levels": list(SHARING)}
    on_gpu = device.type == "cuda"
    if not on_gpu:
        if not torch.cuda.is_available():
            why = (f"torch {torch.__version__} ({f'CUDA {torch.version.cuda} build' if torch.version.cuda else 'CPU-only build'}) "
                   f"finds no CUDA device" + (f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})"
                                              if "CUDA_VISIBLE_DEVICES" in os.environ else ""))
        else:
            why = "--device cpu was given"
        res["gpu_skipped"] = why
        log(f"gpu: NO GPU: {why}. The GPU figures are skipped; measuring the CPU figures instead (a minute).")
    else:
        res["gpu"] = torch.cuda.get_device_name(device)
        res["gpu_memory_mb"] = torch.cuda.get_device_properties(device).total_memory / 2 ** 20
        log(f"gpu: {res['gpu']}, torch {torch.__version__}, CUDA {torch.version.cuda}")

    # 1. one training, each switch (on a CPU with one thread, as each CPU training of the DAG and the sharing
    # workers below: a thread pool spinning on a busy machine measures the machine, not the switches)
    threads = torch.get_num_threads()
    if not on_gpu:
        torch.set_num_threads(1)
    data, origin, _ = device_data(args, device, 10000)
    res["data"] = origin
    res["switches_of_the_config"] = {k: _switches(args)[k] for k in ("precision", "channels_last", "compile")}
    variants = {}
    for name, sw in VARIANTS:
        if sw["compile"] and not on_gpu:
            variants[name] = {"skipped": "torch.compile takes minutes on a CPU"}
            continue
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        steps = _trainer(data, device, {**_switches(args), **sw})
        r = measure(steps, seconds=2.0, warmup=20 if on_gpu else 1, chunk=25 if on_gpu else 2)
        if on_gpu:
            r["peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        variants[name] = r
        log(f"  {name}: {r['images_per_s']:.0f} images/s (warm-up {r['warmup_s']:.1f}s)")
    torch.set_num_threads(threads)
    fp32 = variants["fp32"]["images_per_s"]
    for r in variants.values():
        if "images_per_s" in r:
            r["vs_fp32"] = r["images_per_s"] / fp32
    res["variants"] = variants

    # 2. trainings sharing the device
    levels = SHARING if on_gpu else CPU_SHARING
    log(f"gpu: {', '.join(map(str, levels))} trainings side by side (separate processes, 1 thread each, "
        f"switches {res['switches_of_the_config']})")
    res["sharing"] = sharing(args, device, levels, seconds=4.0 if on_gpu else 3.0, log=log)

    # 3. config.yaml's GPU-hours
    work = config_workload()
    res["config_workload"] = work
    if on_gpu:
        res["projected_gpu_hours"] = {
            k: work["images"] / r["aggregate_images_per_s"] / 3600 for k, r in res["sharing"]["rounds"].items()}
        comp = variants["compile"]
        per_training = work["images"] / max(work["trainings"], 1)
        # compilation is paid once per training process: it pays off when it saves more than it costs
        res["compile_net_s_per_training"] = per_training / fp32 - per_training / comp["images_per_s"] - (
            comp["warmup_s"] - variants["fp32"]["warmup_s"])
        # 4. bf16 against fp32, 5. the tiny DAG on the GPU
        res["fidelity"] = fidelity(args, device, args.gpu_fidelity_epochs, log)
        res["tiny_dag"] = tiny_dag(2, log)
    else:
        from lotto.config import ConfigError
        from lotto.train import pick_device

        try:
            pick_device("cuda")
            res["tiny_dag"] = {"skipped": "no GPU"}
        except ConfigError as exc:  # what the tiny DAG with training.device: cuda would stop with, at once
            res["tiny_dag"] = {"skipped": "no GPU", "lotto_train_would_say": f"lotto: error: {exc}"}
    res["elapsed_s"] = time.perf_counter() - t_start
    return res


def _f(x, fmt="{:.0f}"):
    return "-" if x is None else fmt.format(x)


def print_gpu(res, table):
    if "gpu_skipped" in res:
        print(f"GPU: none. {res['gpu_skipped']}: the GPU figures (fp32/bf16/channels_last/compile on the GPU, "
              "1/2/4/8 trainings per GPU, GPU memory, GPU-hours of config.yaml, bf16 fidelity, the tiny DAG on "
              "CUDA) were NOT measured. CPU figures follow.\n")
    else:
        print(f"GPU: {res['gpu']} ({res['gpu_memory_mb'] / 1024:.0f} GiB), torch {res['torch']}, CUDA {res['torch_cuda']}\n")
    dev = "CPU" if "gpu_skipped" in res else "GPU"
    rows = []
    for name, r in res["variants"].items():
        if "skipped" in r:
            rows.append([name, "-", "-", "-", f"skipped: {r['skipped']}"])
        else:
            rows.append([name, _f(r["images_per_s"]), _f(r["vs_fp32"], "{:.2f}x"), _f(r.get("peak_allocated_mb")),
                         f"warm-up {r['warmup_s']:.1f}s"])
    table(rows, [f"ResNet-20, batch {BATCH}, one training on the {dev} ({res['data']})", "images/s", "vs fp32",
                 "peak MB", ""])
    sh = res["sharing"]
    rows = []
    for k, r in sh["rounds"].items():
        hours = res.get("projected_gpu_hours", {}).get(k)
        mem = None if r["peak_reserved_mb"] is None else r["peak_reserved_mb"]
        rows.append([k, _f(r["aggregate_images_per_s"]), _f(r["per_training_images_per_s"]),
                     _f(r["vs_one"], "{:.2f}x"), _f(r["peak_allocated_mb"]), _f(mem),
                     _f(hours, "{:.1f}")])
    table(rows, ["trainings side by side", "images/s, all", "per training", "vs 1", "peak MB (torch)",
                 "reserved MB", "GPU-hours, config.yaml"])
    work = res["config_workload"]
    extra = [f"config.yaml: {work['trainings']} trainings ({', '.join(f'{v} {k}' for k, v in work['by_rule'].items())}), "
             f"{work['images'] / 1e9:.2f} billion training images at batch {work['batch_size']}"]
    if sh.get("idle_process_gpu_mb") is not None:
        extra.append(f"GPU memory one training process holds before it trains (CUDA context + cache): "
                     f"{sh['idle_process_gpu_mb']:.0f} MB; start-up of a training process "
                     f"{sh['process_startup_s']:.1f}s")
    extra.append(f"best measured trainings per {dev} (each level kept only for > {SHARING_GAIN:.0%} more "
                 f"images/s in all): {sh['best_trainings_per_gpu']}")
    if "compile_net_s_per_training" in res:
        net = res["compile_net_s_per_training"]
        extra.append(f"torch.compile per config.yaml training: {'saves' if net > 0 else 'costs'} "
                     f"{abs(net):.0f}s net of its compilation")
    fid = res.get("fidelity")
    if fid and "skipped" in fid:
        extra.append(f"bf16 fidelity: skipped ({fid['skipped']})")
    elif fid:
        a = fid["test_accuracy"]
        extra.append(
            f"bf16 fidelity ({fid['epochs']} epochs, {fid['data']}): test accuracy fp32 {a['fp32 A']:.4f}, bf16 "
            f"{a['bf16 A']:.4f}, fp32 with another data order {a['fp32 B']:.4f}; 80% mask Jaccard fp32-bf16 "
            f"{fid['mask_jaccard_fp32_bf16']:.3f} vs fp32-fp32 {fid['mask_jaccard_fp32_other_data_order']:.3f}: "
            f"bf16 {'MATCHES' if fid['bf16_matches_fp32'] else 'does NOT match'} fp32")
    tiny = res["tiny_dag"]
    if "skipped" in tiny:
        extra.append(f"tiny DAG with training.device: cuda: skipped ({tiny['skipped']})"
                     + (f"; it would stop at its first training with: {tiny['lotto_train_would_say']}"
                        if "lotto_train_would_say" in tiny else ""))
    else:
        extra.append(f"tiny DAG with training.device: cuda, 2 per GPU: {'OK' if tiny['ok'] else 'FAILED'} "
                     f"(exit {tiny['returncode']}, {tiny['wall_s']:.0f}s, {tiny['masks']} masks, claims table "
                     f"{tiny['claims_rows']} rows, {tiny['metrics_on_cuda']}/{tiny['metrics_files']} metrics on "
                     f"CUDA, slots {', '.join(tiny['slots_used'])})")
        if not tiny["ok"] and tiny.get("output_tail"):
            extra.append(tiny["output_tail"])
    extra.append(f"gpu section: {res['elapsed_s']:.0f}s (on a GPU: at most 5 minutes)")
    print("\n".join(extra) + "\n")


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_main()
    else:
        sys.exit("run it through benchmarks/run.py --sections gpu")
