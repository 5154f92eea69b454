"""The command table and dispatcher of ``lotto``: the core stages (validate, stage-data, init, train, prune,
random-ticket), the claims checks (claims, claims-table) and the tools (provenance, verify, ...), plus every
experiment family's own subcommands, found through the one registry :data:`lotto.families.FAMILIES`. Snakemake
rules call these; so can you.

Two entry points run it: ``lotto`` (:mod:`lotto.cli`, a process per command) and the children of a local run's
fork server (:mod:`lotto.forkserver`). Neither is imported here, so the three import in a line, not a circle.

Heavy imports (torch, seaborn) happen inside the subcommands, so ``lotto --help`` is instant.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import signal
import sys
import traceback

from lotto import __version__, config as configmod
from lotto.families import FAMILIES
from lotto.provenance import SourceChanged
from lotto.runner import log, parse_labels


# --- subcommands --------------------------------------------------------------------------------
def cmd_validate(args) -> None:
    cfg = configmod.load(args.config)
    print(json.dumps(cfg, indent=2) if args.show else "config is valid")


def cmd_stage_data(args) -> None:
    from lotto import staging

    cfg = configmod.load(args.config, partial=True)
    log(f"staging {cfg['data']['dataset']} from {cfg['data']['source']} -> {args.out}")
    staging.stage(cfg["data"], args.out)
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
        resume_state=args.resume_state, curve_path=args.curve,
    )


def cmd_prune(args) -> None:
    from lotto import io, pruning

    s = float(args.sparsity)
    if not 0.0 < s < 1.0:
        raise ValueError(f"--sparsity must be in (0, 1), got {args.sparsity}")
    # numpy, not torch: ranking weights needs no autograd, and a mask job then starts in ~0.3 s instead of ~3
    state, meta = io.load_arrays(args.checkpoint)
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


def cmd_export_mask(args) -> None:
    from lotto import masks as M

    mask = M.Mask.load(args.mask)
    M.export_safetensors(mask, args.out)
    log(f"{args.mask}: {len(mask.layout)} boolean tensors, {mask.kept()} of {mask.total} weights kept "
        f"(sparsity {mask.sparsity():.4f}) -> {args.out}")


def cmd_claims(args) -> None:
    from lotto import claims

    if args.family not in FAMILIES:
        raise ValueError(f"--family {args.family!r} is not a lotto experiment family; known: {', '.join(FAMILIES)}")
    module = importlib.import_module(FAMILIES[args.family].claims)
    cfg = configmod.load(args.config, partial=True)
    if args.family not in cfg:
        raise ValueError(f"--config has no {args.family!r} section: the {args.family} claims read it")
    rows = module.evaluate(args.inputs, cfg)
    claims.write_csv(rows, args.out)
    log(f"{args.family}: {len(rows)} claims from {len(args.inputs)} records -> {args.out}")
    print(claims.format_table(rows))


def cmd_claims_table(args) -> None:
    from lotto import claims

    rows = claims.read_csv(args.parts)
    if args.out:
        claims.write_csv(rows, args.out)
        log(f"{len(rows)} claims from {len(args.parts)} tables -> {args.out}")
    if args.html:
        claims.write_html(rows, args.html)
        log(f"the report's claims table -> {args.html}")
    print(claims.format_long(rows) if args.long else claims.format_table(rows))


def cmd_training_curves(args) -> None:
    from lotto import curves

    groups = [(g[0], g[1:]) for g in args.group]
    table = curves.table(groups)
    curves.draw(table, args.out_prefix, args.title, parse_labels(args.context, "--context"))
    log(f"training curves of {sum(len(f) for _, f in groups)} runs in {table['group'].nunique()} groups: "
        f"{len(table)} rows -> {args.out_prefix}.png/.pdf/.csv")


def cmd_provenance(args) -> None:
    from lotto import provenance_table

    files = list(args.files) + [p for root in args.under for p in provenance_table.artifacts_under(root)]
    rows = provenance_table.collect(files)
    provenance_table.write_table(rows, args.out)
    log(f"{len(files)} artifacts, {len(rows)} distinct provenance record(s) -> {args.out}")


def cmd_verify(args) -> int:
    from lotto import verify

    cfg = configmod.load(args.config, partial=True) if args.config else None
    name = args.config or ""
    if name.lstrip().startswith("{"):
        name = "given inline"  # the `verify` rule passes the workflow's config as JSON: pages of it
    report = verify.verify(args.root, cfg, name, args.workdir)
    try:
        print(verify.summary(report, every=args.all), flush=True)
    except BrokenPipeError:  # `lotto verify ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if report.failed else 0


def cmd_report_config(args) -> None:
    import yaml

    from lotto.io import atomic_write

    cfg = configmod.load(args.config, partial=True)
    given = ", ".join(args.source) or "none (config.yaml)"
    with atomic_write(args.out, suffix=".yaml") as tmp:
        tmp.write_text(f"# The configuration this run used: the config file(s) given ({given}) with the schema's "
                       "defaults filled in.\n" + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False))
    log(f"config -> {args.out}")
    if args.papers:
        from lotto.report import papers_html

        with atomic_write(args.papers, suffix=".html") as tmp:
            tmp.write_text(papers_html(cfg))
        log(f"the papers it reproduces -> {args.papers}")


# --- parser -------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other failure (its default prints the usage first)."""

    def error(self, message):
        self.exit(2, f"lotto: error: {message} ({self.prog}); see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lotto",
        description="Lottery-ticket pruning experiments, one stage per subcommand. The Snakemake workflow "
        "calls these; each can be run by hand. CONFIG is a YAML file (like config.yaml) or an inline JSON "
        "object holding the sections the stage needs.",
    )
    p.add_argument("--version", action="version", version=f"lotto {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of a failure too (so does the environment variable LOTTO_DEBUG=1)")
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
    sp.add_argument("--curve", default=None,
                    help="write the training curve here: a CSV row (step, epoch, lr, loss, accuracy, images_per_s, "
                    "elapsed_s) per training.log_every steps and for the last step")
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

    sp = add("export-mask", cmd_export_mask,
             "Write a mask as a safetensors file of boolean tensors keyed by parameter name (True = kept), for "
             "PyTorch code without lotto: safetensors.torch.load_file(FILE), then per tensor "
             "torch.nn.utils.prune.custom_from_mask(model.get_submodule(MODULE), PARAM, mask).")
    sp.add_argument("mask", help="lotto mask file (.mask)")
    sp.add_argument("--out", required=True, help="safetensors file to write")

    sp = add("claims", cmd_claims,
             "Check one family's papers' claims on its records: one row per claim (its kind, the effect with its "
             "confidence interval, the margin of the config's claims section, and a verdict PASS, FAIL or "
             "INCONCLUSIVE with the replicates that would decide it) written as CSV and printed as a table.")
    sp.add_argument("--family", required=True, help=f"experiment family: {', '.join(FAMILIES)}")
    sp.add_argument("--config", required=True,
                    help="YAML config file or inline JSON object with the claims section and the family's")
    sp.add_argument("--out", required=True, help="CSV to write")
    sp.add_argument("inputs", nargs="+", help="the family's records (JSON) and mask files")

    sp = add("claims-table", cmd_claims_table,
             "Merge claims CSVs (lotto claims) into one and print it as a table; without --out, just print.")
    sp.add_argument("--out", default=None, help="merged CSV to write")
    sp.add_argument("--html", default=None, help="the compact HTML table of the report to write")
    sp.add_argument("--long", action="store_true",
                    help="every column of every claim (the claim, the effect, the cell compared, the reason, notes)")
    sp.add_argument("parts", nargs="+", help="claims CSV files")

    sp = add("training-curves", cmd_training_curves,
             "Draw training loss and accuracy against the schedule step (median and range over the runs of each "
             "group) from the curves `lotto train --curve` writes: PNG, PDF and the CSV it plots.")
    sp.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "CURVE"),
                    help="a group of runs: its legend label, then its curve CSV files (repeat per group)")
    sp.add_argument("--title", default="Training curves", help="first line of the figure's title")
    sp.add_argument("--context", default=None,
                    help='JSON object naming the run for the title, e.g. {"model":"lenet","dataset":"mnist",'
                    '"experiment":"tiny"}')
    sp.add_argument("--out-prefix", required=True, help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv")

    sp = add("provenance", cmd_provenance,
             "Tabulate the provenance records (lotto version, git commit, package versions) of checkpoints, "
             "masks and metrics files: one CSV row per distinct record, with how many files carry it.")
    sp.add_argument("--out", required=True, help="CSV table to write")
    sp.add_argument("--under", nargs="*", default=[],
                    help="folders whose every .safetensors, .mask and metrics.json file is read (a run's results "
                    "folder: thousands of paths do not fit on one command line)")
    sp.add_argument("files", nargs="*", help=".safetensors, .mask and metrics .json files")

    sp = add("verify", cmd_verify,
             "Check a run's results folder: every checkpoint (tensor digests, finite values within the bound, the "
             "config's network), mask (checksum, layout), JSON record and staged data file; the lotto commits that "
             "wrote them; leftovers of an interrupted run (temporary files, resume states, outputs Snakemake marks "
             "incomplete). Prints a one-screen summary; exits 1 when anything is damaged or left over, or the tree "
             "mixes lotto commits.")
    sp.add_argument("root", help="the run's results folder, results/<experiment>")
    sp.add_argument("--config", default=None,
                    help="the run's config (YAML file or inline JSON; default: the copy the run wrote, ROOT/config.yaml)")
    sp.add_argument("--workdir", default=None,
                    help="Snakemake's working directory, holding .snakemake (default: the nearest folder above ROOT "
                    "that has one)")
    sp.add_argument("--all", action="store_true",
                    help="list every damaged file (default: the first 12) and every file of each commit but the most "
                    "common one")

    sp = add("report-config", cmd_report_config,
             "Write a config with the schema's defaults filled in as YAML (the report's copy of the run's config).")
    common(sp, threads=False)
    sp.add_argument("--source", nargs="*", default=[], help="the config file(s) it came from, named in the header")
    sp.add_argument("--out", required=True, help="YAML file to write")
    sp.add_argument("--papers", default=None, help="HTML list of the papers the config's families reproduce")

    # every family registers its own subcommands; imported here (not lazily) so `lotto --help` lists them all
    for family in FAMILIES.values():
        importlib.import_module(family.cli).register(add, common)
    return p


def run(argv=None) -> int:
    """Run one subcommand (``argv``: its words; None: the process's command line). Any failure is ONE line on
    stderr, ``lotto: error: <what>, <which file>, <what to do>``, and a non-zero exit: 2 for config errors, 143
    after a SIGTERM that saved the training state, 130 on Ctrl-C, 1 otherwise. The traceback is printed too with
    ``lotto --debug`` or LOTTO_DEBUG=1."""
    try:
        return _run(argv)
    except BrokenPipeError:
        # the reader went away (`lotto claims-table ... | head`): end quietly, as `cat` does, with the status of a
        # process killed by SIGPIPE; stdout goes to /dev/null so that the interpreter's last flush is quiet too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


def _run(argv) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("LOTTO_DEBUG", "") not in ("", "0")
    try:
        code = args.func(args)  # None, or a subcommand's own exit status (lotto verify)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
    except BrokenPipeError:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        if debug:
            traceback.print_exc()
        code, line = _failure(exc, args)
        print(line, file=sys.stderr, flush=True)
        return code
    return code if isinstance(code, int) else 0


def _one_line(text: str) -> str:
    """Multi-line messages (config problems, torch's load_state_dict) folded into one line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {'; '.join(lines[1:])}"
    return "; ".join(lines)


def _files(args) -> list[str]:
    """The file arguments of a command line (the inputs it reads and the outputs it writes)."""
    found = []
    for key, value in vars(args).items():
        if key in ("func", "command", "labels") or value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.lstrip().startswith("{") and ("/" in v or "." in v) and not _number(v):
                found.append(v)
    return found


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _failure(exc: BaseException, args) -> tuple[int, str]:
    """(exit code, the one line) for an exception that ended the subcommand ``args``."""
    trainer = sys.modules.get("lotto.train")  # only imported by the subcommands that train
    if trainer is not None and isinstance(exc, trainer.Interrupted):
        return 128 + 15, f"lotto: {exc}"  # what a process killed by SIGTERM reports
    if isinstance(exc, SourceChanged):
        return 1, f"lotto: error: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, "lotto: error: interrupted (Ctrl-C); outputs not yet complete were not written, rerun to finish"
    if isinstance(exc, configmod.ConfigError):
        what = _one_line(exc)
        config = getattr(args, "config", None)
        if config and not config.lstrip().startswith("{") and config not in what:
            what += f" (config {config})"
        return 2, f"lotto: error: {what}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        where = exc.filename or (getattr(args, "out", None) or "the output")
        return 1, (f"lotto: error: {os.strerror(exc.errno)}, writing {where}, free space on that file system "
                   "(or write elsewhere) and rerun")
    if isinstance(exc, OSError) and exc.filename:
        advice = {errno.ENOENT: "check the path", errno.EACCES: "check its permissions",
                  errno.EPERM: "check its permissions", errno.EROFS: "write elsewhere"}.get(exc.errno, "check it and rerun")
        return 1, f"lotto: error: {exc.strerror or exc}, {exc.filename}, {advice}"
    ours = isinstance(exc, (ValueError, FloatingPointError, OSError))  # raised with lotto's own messages
    what = _one_line(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if not ours:
        what = f"{type(exc).__name__}: {what}" if what else type(exc).__name__
    files = _files(args)
    if not any(f in what for f in files):
        out = getattr(args, "out", None) or getattr(args, "out_prefix", None)
        what += f" (lotto {args.command}{f', writing {out}' if out else ''})"
    if not ours:
        what += "; rerun with lotto --debug (or LOTTO_DEBUG=1) for the traceback"
    return 1, f"lotto: error: {what}"
