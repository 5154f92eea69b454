"""Subcommands of the composability family (Movva, Frankle & Carbin 2021): compose sibling masks, draw the
family's figures and write its summary tables. Registered into ``lotto``'s parser by :mod:`lotto.families`."""

from __future__ import annotations

from pathlib import Path

from lotto.composability import FIGURES
from lotto.runner import log, parse_labels


def cmd_compose(args) -> None:
    from lotto import io, masks as M

    loaded = [M.Mask.load(p) for p in args.masks]
    s = float(args.sparsity)
    labels = parse_labels(args.labels)
    composed = M.compose(loaded, args.op).with_meta(op=args.op, parents=[str(p) for p in args.masks], **labels)
    composed.save(args.out)
    k = len(loaded)
    record = {
        **labels,
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
    log(f"{args.op} of {k} masks at s={s}: sparsity {record['sparsity']:.4f}, overlap {record['overlap']:.4f} "
        f"(chance {record['chance']:.4f}) -> {args.out}")


def cmd_figure(args) -> None:
    from lotto.composability import analysis, plots

    records = analysis.load_records(args.inputs)
    table = analysis.figure_table(args.name, records)
    plots.draw(args.name, table, args.out_prefix)
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
             "Compose sibling masks by union (keep what any keeps) or intersection (keep what all keep); "
             "the sidecar JSON records the composed sparsity and the overlap of pruned weights vs chance.")
    sp.add_argument("--op", choices=["union", "intersection"], required=True, help="how the masks are combined")
    sp.add_argument("--sparsity", required=True, help="the sparsity the sibling masks were pruned to")
    sp.add_argument("--labels", default=None, help="JSON object copied into the mask metadata and the sidecar")
    sp.add_argument("--sidecar", default=None, help="JSON record to write (sparsity, overlap, chance)")
    sp.add_argument("--out", required=True, help="composed mask file to write")
    sp.add_argument("masks", nargs="+", help="sibling mask files")

    sp = add("figure", cmd_figure, "Draw one named composability figure (PNG, PDF and the CSV it plots) from "
             "metric records.")
    sp.add_argument("name", choices=list(FIGURES), help="figure name")
    sp.add_argument("--out-prefix", required=True, help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv")
    sp.add_argument("inputs", nargs="+", help="JSON records (compose sidecars, metrics)")

    sp = add("tables", cmd_tables, "Summary tables (mean/std over replicates) of every record given.")
    sp.add_argument("--out-dir", required=True, help="folder for overlap.csv and accuracy.csv")
    sp.add_argument("inputs", nargs="+", help="JSON records (compose sidecars, metrics)")
