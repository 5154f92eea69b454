"""IMP with weight rewinding and linear mode connectivity (Paul, Chen, Larsen, Frankle, Ganguli & Dziugaite 2022):
error barriers between successive IMP levels, 2-D slices of the error landscape, and the adaptive pruning ratio.

Import-light on purpose (no torch, no pandas): the Snakefile reads the figure list from here at parse time.
``cli`` holds the subcommands, ``pruning`` the IMP step and the adaptive heuristic, ``connectivity`` linear
paths and planes through trained networks, ``analysis`` the tidy tables and ``plots`` the figures.
"""

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
