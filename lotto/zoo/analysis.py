"""Tidy tables behind the zoo family's figures, from metrics records and mask files (no torch).

Each figure name maps to one table; :func:`figure_table` builds it from the figure rule's inputs (``.json``
metrics records and/or ``.mask`` files, told apart by extension). Records carry their coordinates as labels:
iterative-pruning rounds ``task, method, handling, iteration, replicate`` (the dense network is
``method = handling = "dense"``, ``iteration = 0``), transfer runs ``ticket, target, replicate``.
"""

from __future__ import annotations

from pathlib import Path

from lotto.zoo import RECORD_FIGURES

_JACCARD = {
    "zoo_jaccard_methods": ("method", ["replicate", "task", "handling", "iteration"]),
    "zoo_jaccard_layers": ("method", ["replicate", "task", "handling", "iteration"]),
    "zoo_jaccard_handlings": ("handling", ["replicate", "task", "method", "iteration"]),
    "zoo_jaccard_tasks": ("task", ["replicate", "method", "handling", "iteration"]),
}
_COORDS = ["task", "method", "handling", "iteration", "replicate"]


def _records(paths):
    from lotto.io import read_json

    return [read_json(p) for p in paths]


def jaccard_table(name: str, mask_paths):
    import pandas as pd

    from lotto.masks import Mask
    from lotto.zoo.similarity import pairwise_rows

    by, group = _JACCARD[name]
    items = []
    for p in mask_paths:
        mask = Mask.load(p)
        missing = [k for k in _COORDS if k not in mask.meta]
        if missing:
            raise ValueError(f"{p}: mask lacks the labels {missing} (not written by lotto zoo-iterate?)")
        items.append(({k: mask.meta[k] for k in _COORDS}, mask))
    rows = pairwise_rows(items, by=by, group=group)
    if not rows:
        raise ValueError(f"{name}: no two masks differ in {by!r} within the same {', '.join(group)}")
    return pd.DataFrame(rows).sort_values(group + ["a", "b", "layer"], kind="stable").reset_index(drop=True)


def rounds_table(records):
    """One row per iterative-pruning round (dense rounds repeated for every method x handling of their task)."""
    import pandas as pd

    rounds = [r for r in records if "iteration" in r and "method" in r]
    dense = [r for r in rounds if r["method"] == "dense"]
    pruned = [r for r in rounds if r["method"] != "dense"]
    if not pruned:
        raise ValueError("no iterative-pruning records among the inputs")
    cols = ["task", "method", "handling", "iteration", "replicate", "test_accuracy", "kept", "total",
            "effective_kept", "remaining", "effective_remaining", "sparsity"]
    rows = [{c: r.get(c) for c in cols} for r in pruned]
    totals = {r["task"]: r["total"] for r in pruned}
    runs = {(r["task"], r["method"], r["handling"]) for r in pruned}
    for d in dense:
        total = totals.get(d["task"])
        for task, method, handling in sorted(runs):
            if task == d["task"]:
                rows.append({**{c: d.get(c) for c in cols}, "method": method, "handling": handling, "iteration": 0,
                             "kept": total, "total": total, "effective_kept": total, "remaining": 1.0,
                             "effective_remaining": 1.0, "sparsity": 0.0})
    return pd.DataFrame(rows).sort_values(["task", "method", "handling", "replicate", "iteration"],
                                          kind="stable").reset_index(drop=True)


def stability_table(records):
    import pandas as pd

    rows = []
    for r in records:
        for layer in r.get("layers", []):
            rows.append({**{c: r.get(c) for c in _COORDS}, **layer,
                         "init_std_ratio": layer["init_std_kept"] / layer["init_std_layer"]})
    if not rows:
        raise ValueError("no per-layer statistics among the inputs (records of lotto zoo-iterate carry them)")
    return pd.DataFrame(rows).sort_values(_COORDS + ["layer"], kind="stable").reset_index(drop=True)


def transfer_table(records):
    """Ticket x target accuracy; a bespoke ticket on its own task comes from its iterative-pruning record."""
    import pandas as pd

    rows = []
    for r in records:
        if "ticket" in r and "target" in r:
            rows.append({"ticket": r["ticket"], "target": r["target"], "replicate": r.get("replicate"),
                         "test_accuracy": r["test_accuracy"], "sparsity": r.get("sparsity")})
        elif "iteration" in r and "task" in r:
            rows.append({"ticket": f"bespoke_{r['task']}", "target": r["task"], "replicate": r.get("replicate"),
                         "test_accuracy": r["test_accuracy"], "sparsity": r.get("sparsity")})
        else:
            raise ValueError("a transfer input is neither a transfer record nor an iterative-pruning record")
    return pd.DataFrame(rows).sort_values(["ticket", "target", "replicate"], kind="stable").reset_index(drop=True)


def figure_table(name: str, inputs):
    paths = [Path(p) for p in inputs]
    if name in _JACCARD:
        return jaccard_table(name, [p for p in paths if p.suffix == ".mask"])
    records = _records([p for p in paths if p.suffix == ".json"])
    if name in ("zoo_effective", "zoo_accuracy"):
        return rounds_table(records)
    if name == "zoo_stability":
        return stability_table(records)
    if name == "zoo_transfer":
        return transfer_table(records)
    raise ValueError(f"unknown zoo figure {name!r}; known: {', '.join(RECORD_FIGURES)}")
