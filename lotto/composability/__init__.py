"""Mask composability (Movva, Frankle & Carbin 2021): sibling masks from one rewind point, their overlap, and
their unions and intersections retrained from it.

This module is import-light on purpose (no torch, no pandas): the Snakefile reads the figure list from it at
parse time. ``cli`` holds the family's subcommands, ``analysis`` its tidy tables and ``plots`` its figures.
"""

PAPER = "Movva, Frankle & Carbin (2021): the consistency and composability of lottery-ticket pruning masks"

#: figure name -> what it shows (each is a Snakemake target by that name)
FIGURES: dict[str, str] = {
    "fig1a": "overlap of the pruned weights of k=2 sibling masks vs target sparsity, one line per pretraining t, with chance s",
    "fig1b": "overlap of the pruned weights of k sibling masks vs target sparsity at the largest t, one line per k, with chance s**(k-1)",
    "fig2a": "test accuracy of the union of k=2 sibling masks vs its sparsity, one line per t, with one-shot, random-ticket and dense baselines",
    "fig2b": "test accuracy of the intersection of k=2 sibling masks vs its sparsity, one line per t, with one-shot, random-ticket and dense baselines",
    "fig2c": "test accuracy of the union of k sibling masks vs its sparsity at the largest t, one line per k, with baselines",
    "fig2d": "test accuracy of the intersection of k sibling masks vs its sparsity at the largest t, one line per k, with baselines",
}

#: which composition each accuracy figure shows, and whether it is the k=2 / every-t view or the largest-t / every-k one
ACCURACY_VIEWS: dict[str, tuple[str, str]] = {
    "fig2a": ("union", "by_t"),
    "fig2b": ("intersection", "by_t"),
    "fig2c": ("union", "by_k"),
    "fig2d": ("intersection", "by_k"),
}

#: summary tables written by the `tables` target (results/<experiment>/tables/<name>.csv)
TABLES = ("overlap", "accuracy")
