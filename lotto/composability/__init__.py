"""Mask composability (Movva, Frankle & Carbin 2021): sibling masks from one rewind point, their overlap, and
their compositions retrained from it: union and intersection (the paper's), m-of-k votes and the mask of their
mean weight magnitude (``composability.ops``), optionally all brought to exactly the target sparsity.

This module is import-light on purpose (no torch, no pandas): the Snakefile reads the figure list from it at
parse time. ``cli`` holds the family's subcommands, ``analysis`` its tidy tables and ``plots`` its figures.
"""

from lotto.family import Family, Figure, Paper

PAPER = "Movva, Frankle & Carbin (2021): the consistency and composability of lottery-ticket pruning masks"

#: figure name -> what it shows (each is a Snakemake target by that name)
FIGURES: dict[str, str] = {
    "fig1a": "overlap of the pruned weights of k=2 sibling masks vs target sparsity, one line per pretraining t, with chance s",
    "fig1b": "overlap of the pruned weights of k sibling masks vs target sparsity at the largest t, one line per k, with chance s**(k-1)",
    "fig2a": "test accuracy of the union of k=2 sibling masks vs its sparsity, one line per t, with one-shot, random-ticket and dense baselines",
    "fig2b": "test accuracy of the intersection of k=2 sibling masks vs its sparsity, one line per t, with one-shot, random-ticket and dense baselines",
    "fig2c": "test accuracy of the union of k sibling masks vs its sparsity at the largest t, one line per k, with baselines",
    "fig2d": "test accuracy of the intersection of k sibling masks vs its sparsity at the largest t, one line per k, with baselines",
    "fig2e": "test accuracy of every composition of k=2 sibling masks (composability.ops) vs its sparsity at the largest t, one line per composition, with baselines",
    "training_curves": "training loss and accuracy vs step of every training of the family (pretraining, siblings, "
    "each kind of retrained ticket): median and range over the runs of each group",
}

#: figures drawn from metric records (``lotto figure``); ``training_curves`` is drawn by ``lotto training-curves``
RECORD_FIGURES: tuple[str, ...] = ("fig1a", "fig1b", "fig2a", "fig2b", "fig2c", "fig2d", "fig2e")


def xscale_for(sparsities) -> str:
    """The one x scale of every sparsity figure of a run, from its sparsity grid (composability.sparsities).

    Logit when the grid goes past 0.95 (0.98, 0.99 and 0.999 would crowd a linear axis's right edge), else
    linear. Decided from the grid, not from a figure's own points: an intersection's mask is sparser than its
    grid point, and fig2b must not get another scale than fig2a.
    """
    return "logit" if max(float(s) for s in sparsities) > 0.95 else "linear"


#: compositions of k sibling masks (besides ``vote<m>``, kept by at least m of them): mask operations, and
#: global magnitude pruning of the siblings' mean |w|
OPS = ("union", "intersection", "mean_magnitude")
#: the composition of an accuracy view that shows them all
EVERY_OP = "every"


def is_composition(ticket) -> bool:
    """Whether ``ticket`` names a composition of sibling masks (union, intersection, vote<m>, mean_magnitude)."""
    from lotto.masks import vote_threshold

    return isinstance(ticket, str) and (ticket in OPS or vote_threshold(ticket) is not None)


#: which composition each accuracy figure shows, and its view: k=2 at every t (by_t), the largest t at every k
#: (by_k), or every composition at k=2 and the largest t (by_op)
ACCURACY_VIEWS: dict[str, tuple[str, str]] = {
    "fig2a": ("union", "by_t"),
    "fig2b": ("intersection", "by_t"),
    "fig2c": ("union", "by_k"),
    "fig2d": ("intersection", "by_k"),
    "fig2e": (EVERY_OP, "by_op"),
}

#: summary tables written by the `tables` target (results/<experiment>/tables/<name>.csv)
TABLES = ("overlap", "accuracy")


_SECTIONS = {  # figure -> (report subcategory, the paper figure it mirrors)
    "fig1a": ("1 Overlap of pruned weights", "Movva et al. 2021, Fig. 1a"),
    "fig1b": ("1 Overlap of pruned weights", "Movva et al. 2021, Fig. 1b"),
    "fig2a": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2a"),
    "fig2b": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2b"),
    "fig2c": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2c"),
    "fig2d": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2d"),
    "fig2e": ("2 Accuracy of composed masks", "extends Movva et al. 2021, Fig. 2"),
    "training_curves": ("3 Training curves", "no paper figure (a check of every training)"),
}

FAMILY = Family(
    name="composability",
    package=__name__,
    title="Composability",
    paper="Movva, Frankle & Carbin (2021)",
    papers=(Paper("Movva, Frankle & Carbin (2021), Studying the consistency and composability of lottery ticket "
                  "pruning masks", "https://arxiv.org/abs/2104.14753"),),
    figures=tuple(Figure(name, shows, *_SECTIONS[name]) for name, shows in FIGURES.items()),
    figures_target="figures",
    display="mask composability",
    names={"ticket": {"union": "union", "intersection": "intersection", "mean_magnitude": "mean magnitude",
                      "oneshot": "one-shot (rewind)", "random": "random ticket", "dense": "dense"}},
    tables=(("overlap", "table_overlap"), ("accuracy", "table_accuracy")),
    problems="lotto.composability.checks:problems",
    schedule_problems="lotto.composability.checks:schedule_problems",
)
