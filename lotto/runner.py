"""The public training runner: every family trains through :func:`run_training`, and ``lotto train`` is a thin
shell around it. Also the small pieces every command that touches a model needs (seeds of a noise stream,
a model from a checkpoint, the log line format).

torch is imported inside the functions, so that importing this module (and ``lotto --help``) stays cheap.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

from lotto.seeds import derive_seed


def log(msg: str) -> None:
    """One time-stamped line on stderr (the rules redirect it to the job's log file)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_labels(text: str | dict | None, option: str = "--labels") -> dict:
    """A ``--labels`` JSON object (experiment coordinates copied into records); {} when absent.

    ``option`` names the flag in the error (``--context`` of the figure commands is read the same way).
    """
    if not text:
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object, got {text!r}")
    return value


def noise_seeds(replicate: int, noise: str) -> tuple[int, int]:
    """(data-order seed, augmentation seed) of a training run's SGD-noise stream.

    ``noise``: 'pretrain', 'retrain', 'sibling:<i>' or 'custom:<name>' (a family's own stream).
    """
    role, _, index = noise.partition(":")
    if role == "sibling":
        if not index.isdigit():
            raise ValueError(f"--noise sibling needs an index, like sibling:1 (got {noise!r})")
        parts = (replicate, "sibling", int(index))
    elif role in ("pretrain", "retrain") and not index:
        parts = (replicate, role)
    elif role == "custom" and index:
        parts = (replicate, "custom", index)
    else:
        raise ValueError(f"--noise must be pretrain, retrain, sibling:<i> or custom:<name> (got {noise!r})")
    return derive_seed(*parts, "data"), derive_seed(*parts, "aug")


def setup_torch(threads: int | None = None):
    """Import torch, with ``threads`` CPU threads when given; returns the module."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch


def model_from_checkpoint(state: dict, meta: dict, model_cfg: dict, path: str | Path = "the checkpoint"):
    """The network a lotto checkpoint holds, rebuilt from its recorded shape and loaded with its weights.

    ``model_cfg`` (the config's ``model`` section) must name the checkpoint's network (an ArtifactError naming
    ``path`` otherwise); the tensors themselves were checked against it by ``io.load_checkpoint``.
    """
    from lotto import io, models

    m = meta.get("model")
    if m is None:
        raise io.ArtifactError(f"{path}: its metadata does not say which network it holds (no 'model' key); lotto "
                               "trains only checkpoints written by lotto init / lotto train")
    if model_cfg.get("name") != m["name"]:
        raise io.ArtifactError(
            f"{path}: the checkpoint holds a {m['name']}, but the config's model.name is "
            f"{model_cfg.get('name')!r}; use the config the checkpoint was made with, or rerun the jobs that make it"
        )
    model = models.build_model(model_cfg, m["in_channels"], m["num_classes"], m["image_size"], 0)
    model.load_state_dict(state)
    return model


def initialise(cfg: dict, data_path: str | Path, replicate: int, out: str | Path, log: Callable[[str], None] = log):
    """Build the configured model with the replicate's initialisation seed and save it (theta_0)."""
    from lotto import io, models
    from lotto.data import DeviceData

    data = DeviceData.load(data_path, device="cpu", augment=False)
    seed = derive_seed(replicate, "init")
    model = models.build_model(cfg["model"], data.in_channels, data.num_classes, data.image_size, seed)
    meta = {
        "kind": "init",
        "step": 0,
        "seeds": {"replicate": replicate, "init": seed},
        "config": {"model": cfg["model"]},
        "prunable": models.prunable_names(model),
        "model": {
            "name": cfg["model"]["name"],
            "in_channels": data.in_channels,
            "num_classes": data.num_classes,
            "image_size": data.image_size,
        },
    }
    io.save_checkpoint(out, model.state_dict(), meta)
    n = sum(p.numel() for p in model.parameters())
    d = sum(dict(model.named_parameters())[k].numel() for k in meta["prunable"])
    log(f"initialised {cfg['model']['name']} ({n} parameters, {d} prunable) with seed {seed} -> {out}")


def run_training(
    cfg: dict,
    data_path: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    replicate: int,
    noise: str,
    end: int | str = "end",
    mask_path: str | Path | None = None,
    kind: str = "trained",
    metrics_path: str | Path | None = None,
    labels: dict | None = None,
    resume_state: str | Path | None = None,
    curve_path: str | Path | None = None,
    log: Callable[[str], None] = log,
) -> dict | None:
    """Train the checkpoint ``source`` from its own step to ``end`` of the configured schedule and save ``out``.

    ``cfg`` holds (at least) the validated ``model`` and ``training`` sections. With ``mask_path`` the pruned
    weights stay exactly zero. With ``metrics_path`` the trained network is evaluated on the test set and the
    record (``labels`` + accuracy, loss, sparsity, training statistics) is written there and returned.
    ``resume_state``: a file for resumable state, picked up on rerun and removed when the run finishes.
    ``curve_path``: the run's training curve (``lotto.curves``: a CSV row per ``training.log_every`` steps),
    written when the run finishes; a resumed run writes the rows of an uninterrupted one.
    Raises ``lotto.train.Interrupted`` after saving that state when SIGTERM arrives.
    """
    from lotto import curves, evidence, io, train
    from lotto.data import DeviceData
    from lotto.masks import Mask, check_fits
    from lotto.provenance import provenance

    tcfg = cfg["training"]
    labels = dict(labels or {})
    device = train.pick_device(tcfg["device"], exclusive=True, log=log)
    train.autocast_dtype(tcfg["precision"], device)  # an impossible precision fails before the data is loaded
    state, meta = io.load_checkpoint(source)
    data = DeviceData.load(data_path, device=device, augment=tcfg["augment"])
    schedule = train.Schedule.from_config(tcfg, data.num_train)
    start = int(meta["step"])
    end = schedule.total_steps if end == "end" else int(end)
    if end < start:
        raise ValueError(f"--end {end} is before the checkpoint's step {start} ({source})")
    if end > schedule.total_steps:
        raise ValueError(
            f"--end {end} is past the schedule's last step {schedule.total_steps} "
            f"({tcfg['epochs']} epochs x {schedule.steps_per_epoch} steps)"
        )
    mask = Mask.load(mask_path) if mask_path else None
    if mask is not None:
        check_fits(mask, {n: state[n] for n in meta["prunable"]}, f"checkpoint {source}")
    data_seed, aug_seed = noise_seeds(replicate, noise)
    model = model_from_checkpoint(state, meta, cfg["model"], source)
    # inputs by content, not path: a rerun after an upstream change must not pick up a stale state
    fp = train.fingerprint(
        source=train.file_digest(source), source_step=start, end=end, config=cfg,
        mask=train.file_digest(mask_path) if mask_path else None, noise=noise, replicate=replicate,
        data=train.file_digest(data_path),
    ) if resume_state else ""
    log(
        f"training {meta['model']['name']} on {device} from step {start} to {end} "
        f"(schedule {schedule.total_steps} steps, {schedule.steps_per_epoch}/epoch), noise {noise}, "
        f"mask {mask_path or 'none'}{f' (sparsity {mask.sparsity():.4f})' if mask else ''}"
    )
    try:
        stats = train.train(
            model, data, schedule, start, end, data_seed, aug_seed, mask=mask, device=device, log=log,
            log_every=tcfg["log_every"], resume_path=resume_state, checkpoint_every=tcfg["checkpoint_every"],
            run_fingerprint=fp, channels_last=tcfg["channels_last"], compile=tcfg["compile"],
            precision=tcfg["precision"],
        )
    except FloatingPointError as exc:
        raise FloatingPointError(f"{exc} (training {source} -> {out}, which was not written)") from exc
    out_meta = {
        "kind": kind,
        "step": end,
        "seeds": {**meta.get("seeds", {}), "data": data_seed, "aug": aug_seed, "noise": noise},
        "config": {k: cfg[k] for k in ("model", "training") if k in cfg},
        "prunable": meta["prunable"],
        "model": meta["model"],
        "source": str(source),
        "mask": str(mask_path) if mask_path else None,
        "labels": labels,
    }
    curve = stats.pop("curve")
    io.save_checkpoint(out, model.state_dict(), out_meta)  # refuses non-finite weights: then no curve either
    if curve_path:
        curves.write(curve_path, curve)
    record = None
    if metrics_path:
        result = train.evaluate(model, data.test_batches(tcfg["eval_batch_size"]), device)
        record = {
            **labels,
            "test_accuracy": result["accuracy"],
            "test_loss": result["loss"],
            "test_examples": result["examples"],
            # which test examples it got right: the claims pair models example by example (lotto.evidence)
            evidence.KEY: evidence.pack(result["correct"], data.test_set_id()),
            "step": end,
            "checkpoint": str(out),
            "sparsity": mask.sparsity() if mask else 0.0,
            "kept": mask.kept() if mask else None,
            "total": mask.total if mask else None,
            **stats,
            "device": str(device),
            "provenance": provenance(),
        }
        io.write_json(metrics_path, record)
        log(f"test accuracy {result['accuracy']:.4f} loss {result['loss']:.4f} -> {metrics_path}")
    train.clear_resume(resume_state)
    # steps and seconds: the training compute of a run that writes no metrics (pretraining), for the benchmark
    log(f"saved {out} ({stats['steps_trained']} steps in {stats['elapsed_s']:.3f} s, "
        f"{stats['images_per_s']:.1f} images/s)")
    return record
