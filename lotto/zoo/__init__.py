"""The pruning-method zoo (Paganini & Forde 2020): iterative pruning with many methods and ways of handling the
surviving weights, mask similarity (Jaccard), effective sparsity, ensembles and pret-a-porter tickets moved
between tasks.

Import-light on purpose (no torch, no pandas): the Snakefile reads the figure list from here at parse time.
``cli`` holds the subcommands, ``iterative`` the weight handlings, ``similarity`` and ``effective`` the mask
measures, ``analysis`` the tidy tables and ``plots`` the figures.
"""

from lotto.family import Family, Figure, Paper

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


_SECTIONS = {  # figure -> (report subcategory, the paper figure it mirrors)
    "zoo_accuracy": ("1 Accuracy and sparsity", "Paganini & Forde 2020a, Fig. 2; 2020b, Figs. 1, 2, 10"),
    "zoo_effective": ("1 Accuracy and sparsity", "Paganini & Forde 2020a, Table 1; 2020b, Fig. 12"),
    "zoo_jaccard_methods": ("2 Mask similarity", "Paganini & Forde 2020a, Fig. 4"),
    "zoo_jaccard_layers": ("2 Mask similarity", "Paganini & Forde 2020a, Fig. 3; 2020b, Figs. 3, 4"),
    "zoo_jaccard_handlings": ("2 Mask similarity", "Paganini & Forde 2020b, Figs. 9, 11"),
    "zoo_jaccard_tasks": ("2 Mask similarity", "Paganini & Forde 2020a, Fig. 5"),
    "zoo_stability": ("3 Weights of the tickets", "Paganini & Forde 2020a, Fig. 20; 2020b, Figs. 6-8"),
    "zoo_transfer": ("4 Transfer and ensembles", "Paganini & Forde 2020a, Fig. 6"),
    "zoo_ensemble": ("4 Transfer and ensembles", "Paganini & Forde 2020b, Table 2, Fig. 14"),
    "zoo_training_curves": ("5 Training curves", "no paper figure (a check of every training)"),
}

def figure_context(config: dict) -> dict:
    """What the zoo's figures need besides their tables: each task's data set (for the tasks' display names)."""
    zoo = config["zoo"]
    return {"tasks": {zoo.get("main_task") or config["data"]["dataset"]: config["data"]["dataset"],
                      **{t["name"]: t["dataset"] for t in zoo.get("tasks", [])}}}


FAMILY = Family(
    name="zoo",
    package=__name__,
    title="Pruning zoo",
    paper="Paganini & Forde (2020)",
    papers=(Paper("Paganini & Forde (2020a), Bespoke vs. prêt-à-porter lottery tickets: exploiting mask similarity "
                  "for trainable sub-network finding", "https://arxiv.org/abs/2007.04091"),
            Paper("Paganini & Forde (2020b), On iterative neural network pruning, reinitialization, and the "
                  "similarity of masks", "https://arxiv.org/abs/2001.05050")),
    figures=tuple(Figure(name, shows, *_SECTIONS[name]) for name, shows in FIGURES.items()),
    figures_target="zoo_figures",
    display="pruning-method zoo",
    names={"ticket": {"consensus": "consensus", "random": "random ticket"},
           # what the surviving weights start from after a pruning round (lotto/zoo/iterative.py HANDLINGS)
           "handling": {"rewind_init": "rewind to init", "rewind_t": "rewind to step t", "finetune": "fine-tune",
                        "reinit_sign": "sign-preserving reinit"}},
    context="lotto.zoo:figure_context",
    problems="lotto.zoo.checks:problems",
    schedule_problems="lotto.zoo.checks:schedule_problems",
)
