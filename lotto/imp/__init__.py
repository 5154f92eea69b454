"""IMP with weight rewinding and linear mode connectivity (Paul, Chen, Larsen, Frankle, Ganguli & Dziugaite 2022):
error barriers between successive IMP levels, 2-D slices of the error landscape, and the adaptive pruning ratio.

Import-light on purpose (no torch, no pandas): the Snakefile reads the figure list from here at parse time.
``cli`` holds the subcommands, ``pruning`` the IMP step and the adaptive heuristic, ``connectivity`` linear
paths and planes through trained networks, ``analysis`` the tidy tables and ``plots`` the figures.
"""

from lotto.family import Family, Figure, Paper

PAPER = "Paul, Chen, Larsen, Frankle, Ganguli & Dziugaite (2022): Unmasking the lottery ticket hypothesis"

FIGURES: dict[str, str] = {
    "imp_paths": "test error along the linear path between successive IMP levels, one panel per rewind point",
    "imp_heatmap": "maximum test error on the linear path between every pair of IMP levels",
    "imp_slices": "test error on the plane through w_L, m_{L+1} * w_L and w_{L+1}, with the matching contour",
    "imp_adaptive": "test accuracy and retraining rounds vs sparsity: adaptive pruning ratio vs fixed ratio",
    "imp_training_curves": "training loss and accuracy vs step of every training of the family (pretraining, dense "
    "level 0, fixed-ratio and adaptive-ratio levels): median and range over the runs of each group",
}

#: figures ``lotto imp-figure`` draws from records (the curves are drawn by ``lotto training-curves``)
RECORD_FIGURES: tuple[str, ...] = tuple(f for f in FIGURES if f != "imp_training_curves")


_SECTIONS = {  # figure -> (report subcategory, the paper figure it mirrors)
    "imp_paths": ("1 Linear mode connectivity", "Paul et al. 2022, Fig. 2 (left, middle)"),
    "imp_heatmap": ("1 Linear mode connectivity", "Paul et al. 2022, Fig. 2 (right)"),
    "imp_slices": ("2 Error landscape slices", "Paul et al. 2022, Fig. 3"),
    "imp_adaptive": ("3 Adaptive pruning ratio", "Paul et al. 2022, Fig. 4"),
    "imp_training_curves": ("4 Training curves", "no paper figure (a check of every training)"),
}

FAMILY = Family(
    name="imp",
    package=__name__,
    title="IMP",
    paper="Paul et al. (2022)",
    papers=(Paper("Paul, Chen, Larsen, Frankle, Ganguli & Dziugaite (2022), Unmasking the lottery ticket "
                  "hypothesis: what's encoded in a winning ticket's mask?", "https://arxiv.org/abs/2210.03044"),),
    figures=tuple(Figure(name, shows, *_SECTIONS[name]) for name, shows in FIGURES.items()),
    figures_target="imp_figures",
    display="IMP and linear mode connectivity",
    names={"chain": {"fixed": "fixed ratio", "adaptive": "adaptive ratio"}},
    tables=(("imp_adaptive", "table_imp_adaptive"),),
    problems="lotto.imp.checks:problems",
    schedule_problems="lotto.imp.checks:schedule_problems",
)
