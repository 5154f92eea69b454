"""The ``lotto`` command line: one subcommand per stage. Snakemake rules call these; so can you.

Heavy imports (torch, seaborn) happen inside the subcommands, so ``lotto --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from lotto import config as configmod
from lotto.seeds import derive_seed


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _labels(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"lotto: --labels must be a JSON object: {exc}")
    if not isinstance(value, dict):
        raise SystemExit("lotto: --labels must be a JSON object")
    return value


def noise_seeds(replicate: int, noise: str) -> tuple[int, int]:
    """(data-order seed, augmentation seed) of a training run: 'pretrain', 'retrain' or 'sibling:<i>'."""
    role, _, index = noise.partition(":")
    if role == "sibling":
        if not index.isdigit():
            raise SystemExit(f"lotto: --noise sibling needs an index, like sibling:1 (got {noise!r})")
        parts = (replicate, "sibling", int(index))
    elif role in ("pretrain", "retrain") and not index:
        parts = (replicate, role)
    elif role == "custom" and index:
        parts = (replicate, "custom", index)
    else:
        raise SystemExit(f"lotto: --noise must be pretrain, retrain, sibling:<i> or custom:<name> (got {noise!r})")
    return derive_seed(*parts, "data"), derive_seed(*parts, "aug")


def _setup_torch(threads: int | None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch


# --- subcommands --------------------------------------------------------------------------------
def cmd_validate(args) -> None:
    cfg = configmod.load(args.config)
    print(json.dumps(cfg, indent=2) if args.show else "config is valid")


def cmd_stage_data(args) -> None:
    from lotto import data

    cfg = configmod.load(args.config, partial=True)
    _log(f"staging {cfg['data']['dataset']} from {cfg['data']['source']} -> {args.out}")
    data.stage(cfg["data"], args.out)
    _log("done")


def _load_data(path, train_cfg, device):
    from lotto.data import DeviceData

    return DeviceData.load(path, device=device, augment=train_cfg["augment"])


def cmd_init(args) -> None:
    torch = _setup_torch(args.threads)
    from lotto import io, models

    cfg = configmod.load(args.config, partial=True)
    from lotto.data import DeviceData

    data = DeviceData.load(args.data, device="cpu", augment=False)
    seed = derive_seed(args.replicate, "init")
    model = models.build_model(cfg["model"], data.in_channels, data.num_classes, data.image_size, seed)
    meta = {
        "kind": "init",
        "step": 0,
        "seeds": {"replicate": args.replicate, "init": seed},
        "config": {"model": cfg["model"]},
        "prunable": models.prunable_names(model),
        "model": {
            "name": cfg["model"]["name"],
            "in_channels": data.in_channels,
            "num_classes": data.num_classes,
            "image_size": data.image_size,
        },
    }
    io.save_checkpoint(args.out, model.state_dict(), meta)
    n = sum(p.numel() for p in model.parameters())
    d = sum(dict(model.named_parameters())[k].numel() for k in meta["prunable"])
    _log(f"initialised {cfg['model']['name']} ({n} parameters, {d} prunable) with seed {seed} -> {args.out}")
    del torch


def _model_from_checkpoint(state, meta, model_cfg):
    from lotto import models

    m = meta["model"]
    model = models.build_model(model_cfg, m["in_channels"], m["num_classes"], m["image_size"], 0)
    model.load_state_dict(state)
    return model


def cmd_train(args) -> None:
    torch = _setup_torch(args.threads)
    from lotto import io, train
    from lotto.masks import Mask

    cfg = configmod.load(args.config, partial=True)
    tcfg = cfg["training"]
    device = train.pick_device(tcfg["device"], exclusive=True, log=_log)
    try:  # an impossible precision (fp16 on the CPU) fails here, before the data is loaded
        train.autocast_dtype(tcfg["precision"], device)
    except ValueError as exc:
        raise SystemExit(f"lotto: {exc}") from None
    state, meta = io.load_checkpoint(args.source)
    data = _load_data(args.data, tcfg, device)
    schedule = train.Schedule.from_config(tcfg, data.num_train)
    start = int(meta["step"])
    end = schedule.total_steps if args.end == "end" else int(args.end)
    if end < start:
        raise SystemExit(f"lotto: --end {end} is before the checkpoint's step {start} ({args.source})")
    if end > schedule.total_steps:
        raise SystemExit(
            f"lotto: --end {end} is past the schedule's last step {schedule.total_steps} "
            f"({tcfg['epochs']} epochs x {schedule.steps_per_epoch} steps)"
        )
    mask = Mask.load(args.mask) if args.mask else None
    if mask is not None and mask.names != meta["prunable"]:
        raise SystemExit(f"lotto: mask {args.mask} does not fit checkpoint {args.source} (different layers)")
    data_seed, aug_seed = noise_seeds(args.replicate, args.noise)
    model = _model_from_checkpoint(state, meta, cfg["model"])
    labels = _labels(args.labels)
    # inputs by content, not path: a rerun after an upstream change must not pick up a stale state
    fp = train.fingerprint(
        source=train.file_digest(args.source), source_step=start, end=end, config=cfg,
        mask=train.file_digest(args.mask) if args.mask else None, noise=args.noise, replicate=args.replicate,
        data=train.file_digest(args.data),
    ) if args.resume_state else ""
    _log(
        f"training {meta['model']['name']} on {device} from step {start} to {end} "
        f"(schedule {schedule.total_steps} steps, {schedule.steps_per_epoch}/epoch), noise {args.noise}, "
        f"mask {args.mask or 'none'}{f' (sparsity {mask.sparsity():.4f})' if mask else ''}"
    )
    stats = train.train(
        model, data, schedule, start, end, data_seed, aug_seed, mask=mask, device=device, log=_log,
        log_every=tcfg["log_every"], resume_path=args.resume_state, checkpoint_every=tcfg["checkpoint_every"],
        run_fingerprint=fp, channels_last=tcfg["channels_last"], compile=tcfg["compile"],
        precision=tcfg["precision"],
    )
    out_meta = {
        "kind": args.kind,
        "step": end,
        "seeds": {**meta.get("seeds", {}), "data": data_seed, "aug": aug_seed, "noise": args.noise},
        "config": {k: cfg[k] for k in ("model", "training") if k in cfg},
        "prunable": meta["prunable"],
        "model": meta["model"],
        "source": str(args.source),
        "mask": str(args.mask) if args.mask else None,
        "labels": labels,
    }
    io.save_checkpoint(args.out, model.state_dict(), out_meta)
    if args.metrics:
        result = train.evaluate(model, data.test_batches(tcfg["eval_batch_size"]), device)
        record = {
            **labels,
            "test_accuracy": result["accuracy"],
            "test_loss": result["loss"],
            "test_examples": result["examples"],
            "step": end,
            "checkpoint": str(args.out),
            "sparsity": mask.sparsity() if mask else 0.0,
            "kept": mask.kept() if mask else None,
            "total": mask.total if mask else None,
            **stats,
            "device": str(device),
        }
        io.write_json(args.metrics, record)
        _log(f"test accuracy {result['accuracy']:.4f} loss {result['loss']:.4f} -> {args.metrics}")
    train.clear_resume(args.resume_state)
    _log(f"saved {args.out} ({stats['images_per_s']:.1f} images/s)")
    del torch


def cmd_evaluate(args) -> None:
    _setup_torch(args.threads)
    from lotto import io, train

    cfg = configmod.load(args.config, partial=True)
    device = train.pick_device(cfg["training"]["device"])
    state, meta = io.load_checkpoint(args.checkpoint)
    model = _model_from_checkpoint(state, meta, cfg["model"]).to(device)
    data = _load_data(args.data, cfg["training"], device)
    result = train.evaluate(model, data.test_batches(cfg["training"]["eval_batch_size"]), device)
    record = {**_labels(args.labels), "test_accuracy": result["accuracy"], "test_loss": result["loss"],
              "checkpoint": str(args.checkpoint), "step": meta.get("step")}
    if args.out:
        io.write_json(args.out, record)
    print(json.dumps(record, indent=2))


def cmd_prune(args) -> None:
    _setup_torch(args.threads)
    from lotto import io, pruning

    state, meta = io.load_checkpoint(args.checkpoint)
    s = float(args.sparsity)
    if not 0.0 < s < 1.0:
        raise SystemExit(f"lotto: --sparsity must be in (0, 1), got {args.sparsity}")
    weights = pruning.prunable_weights(state, meta["prunable"])
    mask = pruning.global_magnitude(weights, s).with_meta(
        checkpoint=str(args.checkpoint), step=meta.get("step"), seeds=meta.get("seeds"), **_labels(args.labels)
    )
    mask.save(args.out)
    _log(f"pruned {mask.pruned()} of {mask.total} weights (sparsity {mask.sparsity():.6f}) -> {args.out}")


def cmd_compose(args) -> None:
    from lotto import io, masks as M

    loaded = [M.Mask.load(p) for p in args.masks]
    s = float(args.sparsity)
    composed = M.compose(loaded, args.op).with_meta(op=args.op, parents=[str(p) for p in args.masks],
                                                   **_labels(args.labels))
    composed.save(args.out)
    k = len(loaded)
    record = {
        **_labels(args.labels),
        "ticket": args.op,
        "k": k,
        "target_sparsity": s,
        "sparsity": composed.sparsity(),
        "kept": composed.kept(),
        "total": composed.total,
        "overlap": M.overlap_ratio(loaded, s),
        "chance": M.chance_overlap(s, k),
        "parents": [str(p) for p in args.masks],
    }
    if args.sidecar:
        io.write_json(args.sidecar, record)
    _log(f"{args.op} of {k} masks at s={s}: sparsity {record['sparsity']:.4f}, overlap {record['overlap']:.4f} "
         f"(chance {record['chance']:.4f}) -> {args.out}")


def cmd_random_ticket(args) -> None:
    from lotto import masks as M

    mask = M.Mask.load(args.mask)
    seed = derive_seed(args.replicate, "random-ticket", *args.seed_parts)
    shuffled = M.shuffle_within_layers(mask, seed).with_meta(source=str(args.mask), **_labels(args.labels))
    shuffled.save(args.out)
    _log(f"random ticket (seed {seed}) from {args.mask}: sparsity {shuffled.sparsity():.4f} -> {args.out}")


def cmd_figure(args) -> None:
    from lotto import analysis, plots

    records = analysis.load_records(args.inputs)
    table = analysis.figure_table(args.name, records)
    plots.draw(args.name, table, args.out_prefix)
    _log(f"{args.name}: {len(table)} rows -> {args.out_prefix}.png/.pdf/.csv")


def cmd_tables(args) -> None:
    from lotto import analysis
    from lotto.io import atomic_write

    records = analysis.load_records(args.inputs)
    for name, table in analysis.summary_tables(records).items():
        path = Path(args.out_dir) / f"{name}.csv"
        with atomic_write(path, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
        _log(f"{name}: {len(table)} rows -> {path}")


# --- parser -------------------------------------------------------------------------------------
FAMILY_CLIS: tuple[str, ...] = ("lotto.zoo_cli", "lotto.imp_cli")
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lotto",
        description="Lottery-ticket pruning experiments, one stage per subcommand. The Snakemake workflow "
        "calls these; each can be run by hand. CONFIG is a YAML file (like config.yaml) or an inline JSON "
        "object holding the sections the stage needs.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    def common(sp, config=True, threads=True):
        if config:
            sp.add_argument("--config", required=True, help="YAML config file or inline JSON object")
        if threads:
            sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")

    sp = add("validate", cmd_validate, "Validate a config file against the schema and print the problems.")
    sp.add_argument("config", help="config YAML file")
    sp.add_argument("--show", action="store_true", help="print the config with defaults filled in")

    sp = add("stage-data", cmd_stage_data,
             "Turn the configured data source (torchvision download, local copy or the embedded MNIST) into "
             "the staged .npz file every training job reads. The only stage that may touch the network.")
    common(sp, threads=False)
    sp.add_argument("--out", required=True, help="staged data file (.npz) to write")

    sp = add("init", cmd_init, "Build the configured model with the replicate's initialisation seed (theta_0).")
    common(sp)
    sp.add_argument("--data", required=True, help="staged data file (gives input shape and classes)")
    sp.add_argument("--replicate", type=int, required=True, help="replicate seed")
    sp.add_argument("--out", required=True, help="checkpoint (.safetensors) to write")

    sp = add("train", cmd_train,
             "Train a checkpoint from its own step to --end of the configured schedule, optionally under a "
             "mask that keeps pruned weights at exactly zero; optionally evaluate on the test set.")
    common(sp)
    sp.add_argument("--data", required=True, help="staged data file")
    sp.add_argument("--from", dest="source", required=True, help="checkpoint to start from (its step is the start)")
    sp.add_argument("--end", default="end", help="last step (an integer, or 'end' for the schedule's end)")
    sp.add_argument("--replicate", type=int, required=True, help="replicate seed")
    sp.add_argument("--noise", required=True,
                    help="SGD-noise stream: pretrain, retrain or sibling:<i> (data order + augmentation seeds)")
    sp.add_argument("--mask", default=None, help="mask file to apply (pruned weights held at zero)")
    sp.add_argument("--kind", default="trained", help="what the checkpoint is, recorded in its metadata")
    sp.add_argument("--metrics", default=None, help="write test metrics JSON here")
    sp.add_argument("--labels", default=None, help="JSON object copied into the metrics (experiment coordinates)")
    sp.add_argument("--resume-state", default=None,
                    help="file for resumable state, saved every training.checkpoint_every steps and picked up "
                    "on rerun; removed when the run finishes")
    sp.add_argument("--out", required=True, help="checkpoint to write")

    sp = add("evaluate", cmd_evaluate, "Test loss and accuracy of a checkpoint.")
    common(sp)
    sp.add_argument("--data", required=True)
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--labels", default=None)
    sp.add_argument("--out", default=None, help="metrics JSON to write (also printed)")

    sp = add("prune", cmd_prune,
             "One-shot global magnitude pruning of a checkpoint: remove exactly round(s*d) of its d prunable "
             "weights (all conv and linear weights).")
    sp.add_argument("--threads", type=int, default=None)
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--sparsity", required=True, help="fraction of prunable weights to remove, in (0, 1)")
    sp.add_argument("--labels", default=None)
    sp.add_argument("--out", required=True, help="mask file to write")

    sp = add("compose", cmd_compose,
             "Compose sibling masks by union (keep what any keeps) or intersection (keep what all keep); "
             "the sidecar JSON records the composed sparsity and the overlap of pruned weights vs chance.")
    sp.add_argument("--op", choices=["union", "intersection"], required=True)
    sp.add_argument("--sparsity", required=True, help="the sparsity the sibling masks were pruned to")
    sp.add_argument("--labels", default=None)
    sp.add_argument("--sidecar", default=None, help="JSON record to write")
    sp.add_argument("--out", required=True)
    sp.add_argument("masks", nargs="+", help="sibling mask files")

    sp = add("random-ticket", cmd_random_ticket,
             "Shuffle a mask within each layer with a seed (same kept count per layer).")
    sp.add_argument("--mask", required=True)
    sp.add_argument("--replicate", type=int, required=True)
    sp.add_argument("--seed-parts", nargs="*", default=[], help="extra words mixed into the seed")
    sp.add_argument("--labels", default=None)
    sp.add_argument("--out", required=True)

    sp = add("figure", cmd_figure, "Draw one named figure (PNG, PDF and the CSV it plots) from metric records.")
    sp.add_argument("name", help="fig1a, fig1b, fig2a, fig2b, fig2c or fig2d")
    sp.add_argument("--out-prefix", required=True, help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv")
    sp.add_argument("inputs", nargs="+", help="JSON records (compose sidecars, metrics)")

    sp = add("tables", cmd_tables, "Summary tables (mean/std over replicates) of every record given.")
    sp.add_argument("--out-dir", required=True)
    sp.add_argument("inputs", nargs="+")

    # Other experiment families keep their subcommands in their own module, each with
    # `register(add, common)`; imported here (not lazily) so `lotto --help` lists them all.
    for name in FAMILY_CLIS:
        importlib.import_module(name).register(add, common)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except configmod.ConfigError as exc:
        print(f"lotto: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"lotto: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        trainer = sys.modules.get("lotto.train")  # only imported by the subcommands that train
        if trainer is not None and isinstance(exc, trainer.Interrupted):
            print(f"lotto: {exc}", file=sys.stderr)
            return 128 + 15  # what a process killed by SIGTERM reports
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
