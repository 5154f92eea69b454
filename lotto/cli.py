"""The ``lotto`` command line: the core stages (validate, stage-data, init, train, prune, random-ticket) plus
every experiment family's own subcommands, found through the one registry :data:`lotto.families.FAMILIES`.
Snakemake rules call these; so can you.

Heavy imports (torch, seaborn) happen inside the subcommands, so ``lotto --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from lotto import __version__, config as configmod
from lotto.families import FAMILIES
from lotto.runner import log, parse_labels


# --- subcommands --------------------------------------------------------------------------------
def cmd_validate(args) -> None:
    cfg = configmod.load(args.config)
    print(json.dumps(cfg, indent=2) if args.show else "config is valid")


def cmd_stage_data(args) -> None:
    from lotto import data

    cfg = configmod.load(args.config, partial=True)
    log(f"staging {cfg['data']['dataset']} from {cfg['data']['source']} -> {args.out}")
    data.stage(cfg["data"], args.out)
    log("done")


def cmd_init(args) -> None:
    from lotto import runner

    runner.setup_torch(args.threads)
    cfg = configmod.load(args.config, partial=True)
    runner.initialise(cfg, args.data, args.replicate, args.out)


def cmd_train(args) -> None:
    from lotto import runner

    runner.setup_torch(args.threads)
    cfg = configmod.load(args.config, partial=True)
    runner.run_training(
        cfg, args.data, args.source, args.out, replicate=args.replicate, noise=args.noise, end=args.end,
        mask_path=args.mask, kind=args.kind, metrics_path=args.metrics, labels=parse_labels(args.labels),
        resume_state=args.resume_state,
    )


def cmd_prune(args) -> None:
    from lotto import io, pruning

    s = float(args.sparsity)
    if not 0.0 < s < 1.0:
        raise ValueError(f"--sparsity must be in (0, 1), got {args.sparsity}")
    # numpy, not torch: ranking weights needs no autograd, and a mask job then starts in ~0.3 s instead of ~3
    state, meta = io.load_checkpoint(args.checkpoint, framework="numpy")
    weights = pruning.prunable_weights(state, meta["prunable"])
    mask = pruning.global_magnitude(weights, s).with_meta(
        checkpoint=str(args.checkpoint), step=meta.get("step"), seeds=meta.get("seeds"), **parse_labels(args.labels)
    )
    mask.save(args.out)
    log(f"pruned {mask.pruned()} of {mask.total} weights (sparsity {mask.sparsity():.6f}) -> {args.out}")


def cmd_random_ticket(args) -> None:
    from lotto import masks as M
    from lotto.seeds import derive_seed

    mask = M.Mask.load(args.mask)
    seed = derive_seed(args.replicate, "random-ticket", *args.seed_parts)
    shuffled = M.shuffle_within_layers(mask, seed).with_meta(source=str(args.mask), **parse_labels(args.labels))
    shuffled.save(args.out)
    log(f"random ticket (seed {seed}) from {args.mask}: sparsity {shuffled.sparsity():.4f} -> {args.out}")


# --- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lotto",
        description="Lottery-ticket pruning experiments, one stage per subcommand. The Snakemake workflow "
        "calls these; each can be run by hand. CONFIG is a YAML file (like config.yaml) or an inline JSON "
        "object holding the sections the stage needs.",
    )
    p.add_argument("--version", action="version", version=f"lotto {__version__}")
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
                    help="SGD-noise stream: pretrain, retrain, sibling:<i> or custom:<name> (data order + "
                    "augmentation seeds)")
    sp.add_argument("--mask", default=None, help="mask file to apply (pruned weights held at zero)")
    sp.add_argument("--kind", default="trained", help="what the checkpoint is, recorded in its metadata")
    sp.add_argument("--metrics", default=None, help="write test metrics JSON here")
    sp.add_argument("--labels", default=None, help="JSON object copied into the metrics (experiment coordinates)")
    sp.add_argument("--resume-state", default=None,
                    help="file for resumable state, saved every training.checkpoint_every steps and picked up "
                    "on rerun; removed when the run finishes")
    sp.add_argument("--out", required=True, help="checkpoint to write")

    sp = add("prune", cmd_prune,
             "One-shot global magnitude pruning of a checkpoint: remove exactly round(s*d) of its d prunable "
             "weights (all conv and linear weights).")
    sp.add_argument("--threads", type=int, default=None,
                    help="accepted for older command lines and ignored: pruning runs on numpy, one thread")
    sp.add_argument("--checkpoint", required=True, help="trained checkpoint whose weights are ranked")
    sp.add_argument("--sparsity", required=True, help="fraction of prunable weights to remove, in (0, 1)")
    sp.add_argument("--labels", default=None, help="JSON object stored in the mask's metadata")
    sp.add_argument("--out", required=True, help="mask file to write")

    sp = add("random-ticket", cmd_random_ticket,
             "Shuffle a mask within each layer with a seed (same kept count per layer).")
    sp.add_argument("--mask", required=True, help="mask whose per-layer kept counts the ticket copies")
    sp.add_argument("--replicate", type=int, required=True, help="replicate seed")
    sp.add_argument("--seed-parts", nargs="*", default=[], help="extra words mixed into the seed")
    sp.add_argument("--labels", default=None, help="JSON object stored in the mask's metadata")
    sp.add_argument("--out", required=True, help="mask file to write")

    # every family registers its own subcommands; imported here (not lazily) so `lotto --help` lists them all
    for family in FAMILIES.values():
        importlib.import_module(family.cli).register(add, common)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = os.environ.get("LOTTO_DEBUG") not in (None, "", "0")
    try:
        args.func(args)
    except configmod.ConfigError as exc:
        print(f"lotto: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as exc:
        if debug:
            raise
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
