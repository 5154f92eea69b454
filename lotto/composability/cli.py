"""Subcommands of the composability family (Movva, Frankle & Carbin 2021): compose sibling masks, draw the
family's figures and write its summary tables. Registered into ``lotto``'s parser by :mod:`lotto.families`."""

from __future__ import annotations

from pathlib import Path

from lotto.composability import RECORD_FIGURES, is_composition
from lotto.runner import log, parse_labels


def cmd_compose(args) -> None:
    from lotto import io, masks as M, pruning

    if not is_composition(args.op):
        raise ValueError(f"--op {args.op!r}: valid: union, intersection, vote<m> (m >= 1) or mean_magnitude")
    loaded = [M.Mask.load(p) for p in args.masks]
    M.check_same_layout(loaded)
    k = len(loaded)
    s = float(args.sparsity)
    labels = parse_labels(args.labels)
    weights = None
    if args.op == "mean_magnitude" or args.match_sparsity:
        if len(args.checkpoints or []) != k:
            need = "mean_magnitude" if args.op == "mean_magnitude" else "--match-sparsity"
            raise ValueError(f"{need} needs the {k} sibling checkpoints of the masks (--checkpoints), "
                             f"got {len(args.checkpoints or [])}")
        names = loaded[0].names
        weights = [io.load_arrays(c, names)[0] for c in args.checkpoints]
        for c, w in zip(args.checkpoints, weights):
            M.check_fits(loaded[0], w, f"checkpoint {c}")
    if args.op == "mean_magnitude":
        raw = pruning.mean_magnitude(weights, s)
    else:
        raw = M.compose(loaded, args.op)
    d = raw.total
    target_kept = pruning.kept_at(d, s)
    # matching ranks by the same score mean_magnitude prunes by: the siblings' mean |w|
    final = pruning.match_kept(raw, pruning.mean_abs(weights), target_kept) if args.match_sparsity else raw
    parents = [str(p) for p in args.masks]
    final.with_meta(op=args.op, parents=parents, checkpoints=[str(c) for c in args.checkpoints or []],
                    match_sparsity=bool(args.match_sparsity), raw_kept=raw.kept(), **labels).save(args.out)
    record = {
        **labels,
        "ticket": args.op,
        "k": k,
        "target_sparsity": s,
        "match_sparsity": bool(args.match_sparsity),
        "raw_sparsity": raw.sparsity(),
        "raw_kept": raw.kept(),
        "sparsity": final.sparsity(),
        "kept": final.kept(),
        "target_kept": target_kept,
        "total": d,
        "overlap": M.overlap_ratio(loaded, s),
        # chance for random masks with the siblings' per-layer pruned counts (global pruning's layers differ)
        "chance": M.chance_overlap_exact(loaded, s),
        "chance_uniform": M.chance_overlap(s, k),
        "parents": parents,
        "checkpoints": [str(c) for c in args.checkpoints or []],
    }
    if args.sidecar:
        io.write_json(args.sidecar, record)
    matched = f" (raw {record['raw_sparsity']:.4f}, matched)" if args.match_sparsity else ""
    log(f"{args.op} of {k} siblings at s={s}: sparsity {record['sparsity']:.4f}{matched}, overlap "
        f"{record['overlap']:.4f} (chance {record['chance']:.4f}) -> {args.out}")


def cmd_figure(args) -> None:
    from lotto.composability import analysis, plots

    records = analysis.load_records(args.inputs)
    table = analysis.figure_table(args.name, records)
    plots.draw(args.name, table, args.out_prefix, xscale=args.xscale, context=parse_labels(args.context, "--context"))
    log(f"{args.name}: {len(table)} rows -> {args.out_prefix}.png/.pdf/.csv")


def cmd_tables(args) -> None:
    from lotto.composability import analysis
    from lotto.io import atomic_write

    records = analysis.load_records(args.inputs)
    for name, table in analysis.summary_tables(records).items():
        path = Path(args.out_dir) / f"{name}.csv"
        with atomic_write(path, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
        log(f"{name}: {len(table)} rows -> {path}")


def register(add, common) -> None:
    sp = add("compose", cmd_compose,
             "Compose k sibling masks: union (keep what any keeps), intersection (what all keep), vote<m> (what at "
             "least m keep) or mean_magnitude (global magnitude pruning of the siblings' mean |w|, from their "
             "checkpoints); optionally brought to exactly the target sparsity. The sidecar JSON records the raw "
             "and final sparsity and kept counts, and the overlap of pruned weights vs chance.")
    sp.add_argument("--op", required=True, metavar="OP",
                    help="union, intersection, vote<m> (m >= 1) or mean_magnitude")
    sp.add_argument("--checkpoints", nargs="+", default=None,
                    help="the siblings' trained checkpoints, in the masks' order (mean_magnitude, --match-sparsity)")
    sp.add_argument("--match-sparsity", action="store_true",
                    help="prune (union) or grow back (intersection, vote) by the siblings' mean |w| until exactly "
                    "round(s * d) weights are pruned")
    sp.add_argument("--sparsity", required=True, help="the sparsity the sibling masks were pruned to")
    sp.add_argument("--labels", default=None, help="JSON object copied into the mask metadata and the sidecar")
    sp.add_argument("--sidecar", default=None, help="JSON record to write (sparsity, overlap, chance)")
    sp.add_argument("--out", required=True, help="composed mask file to write")
    sp.add_argument("masks", nargs="+", help="sibling mask files")

    sp = add("figure", cmd_figure, "Draw one named composability figure (PNG, PDF and the CSV it plots) from "
             "metric records.")
    sp.add_argument("name", choices=list(RECORD_FIGURES), help="figure name")
    sp.add_argument("--out-prefix", required=True, help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv")
    sp.add_argument("--xscale", choices=["auto", "linear", "logit"], default="auto",
                    help="x axis of sparsity; auto: logit when the records' sparsity grid goes past 0.95 (the "
                    "workflow passes the config grid's scale, one for every figure)")
    sp.add_argument("--context", default=None,
                    help='JSON object naming the run for the title: {"model":..,"dataset":..,"experiment":..}')
    sp.add_argument("inputs", nargs="+", help="JSON records (compose sidecars, metrics)")

    sp = add("tables", cmd_tables, "Summary tables (mean/std over replicates) of every record given.")
    sp.add_argument("--out-dir", required=True, help="folder for overlap.csv and accuracy.csv")
    sp.add_argument("inputs", nargs="+", help="JSON records (compose sidecars, metrics)")
