"""The pruning-method zoo (Paganini & Forde 2020): iterative pruning with many methods and ways of handling the
surviving weights, mask similarity (Jaccard), effective sparsity, ensembles and pret-a-porter tickets moved
between tasks.

Import-light on purpose (no torch, no pandas): the Snakefile reads the figure list from here at parse time.
``cli`` holds the subcommands, ``iterative`` the weight handlings, ``similarity`` and ``effective`` the mask
measures, ``analysis`` the tidy tables and ``plots`` the figures.
"""

PAPER = "Paganini & Forde (2020): streamlining tensor and network pruning in PyTorch; on iterative pruning, reinitialisation and the similarity of masks"

#: figure name -> what it shows (each is a Snakemake target by that name)
FIGURES: dict[str, str] = {
    "zoo_jaccard_methods": "Jaccard distance between the last-round masks of different pruning methods (heatmap per handling)",
    "zoo_jaccard_layers": "the same per layer",
    "zoo_jaccard_handlings": "Jaccard distance between masks under different handlings of the surviving weights, per round and layer",
    "zoo_jaccard_tasks": "Jaccard distance between the bespoke tickets of different tasks (same init), per round and layer",
    "zoo_effective": "explicit vs effective remaining weights per round (their Table 1)",
    "zoo_accuracy": "test accuracy per pruning round, method and handling",
    "zoo_stability": "per-layer std of the ticket's initial weights vs the layer's, per round",
    "zoo_transfer": "pret-a-porter: every ticket (bespoke, consensus, random) retrained on every task",
    "zoo_ensemble": "ensembles of the methods' networks: accuracy of averaged predictions and prediction agreement",
    "zoo_training_curves": "training loss and accuracy vs step of every training of the family (pretraining, dense, "
    "the pruning rounds of each handling, transferred tickets): median and range over the runs of each group",
}

#: figures ``lotto zoo-figure`` draws from records and masks (the ensemble and the curves have their own commands)
RECORD_FIGURES: tuple[str, ...] = tuple(f for f in FIGURES if f not in ("zoo_ensemble", "zoo_training_curves"))
