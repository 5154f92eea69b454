"""How results are laid out in the Snakemake report (``snakemake --report report.html``); import-light (no torch,
no pandas) because the rule files read it at parse time.

The report lists its categories alphabetically, so each is numbered in reading order: the claims table first,
then one category per experiment family in the config, then the run's config and provenance. Every figure has a
caption file ``workflow/report/<figure>.rst`` (what it shows, how to read it, which paper figure it mirrors) and a
subcategory here; tests/test_report.py checks that every figure of every family has both.
"""

from __future__ import annotations

from lotto.families import FAMILIES

CLAIMS, RUN = "claims", "run"

#: the title of each report section (a family's is followed by its paper)
TITLES = {CLAIMS: "Claims", "composability": "Composability", "zoo": "Pruning zoo", "imp": "IMP", RUN: "Run"}

#: family -> figure -> (subcategory, the paper figure it mirrors); subcategories are numbered for the same reason
FIGURES: dict[str, dict[str, tuple[str, str]]] = {
    "composability": {
        "fig1a": ("1 Overlap of pruned weights", "Movva et al. 2021, Fig. 1a"),
        "fig1b": ("1 Overlap of pruned weights", "Movva et al. 2021, Fig. 1b"),
        "fig2a": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2a"),
        "fig2b": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2b"),
        "fig2c": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2c"),
        "fig2d": ("2 Accuracy of composed masks", "Movva et al. 2021, Fig. 2d"),
        "fig2e": ("2 Accuracy of composed masks", "extends Movva et al. 2021, Fig. 2"),
        "training_curves": ("3 Training curves", "no paper figure (a check of every training)"),
    },
    "zoo": {
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
    },
    "imp": {
        "imp_paths": ("1 Linear mode connectivity", "Paul et al. 2022, Fig. 2 (left, middle)"),
        "imp_heatmap": ("1 Linear mode connectivity", "Paul et al. 2022, Fig. 2 (right)"),
        "imp_slices": ("2 Error landscape slices", "Paul et al. 2022, Fig. 3"),
        "imp_adaptive": ("3 Adaptive pruning ratio", "Paul et al. 2022, Fig. 4"),
        "imp_training_curves": ("4 Training curves", "no paper figure (a check of every training)"),
    },
}

#: summary tables: family -> (results/<experiment>/tables/<name>.csv, its caption file's stem)
TABLES: dict[str, list[tuple[str, str]]] = {
    "composability": [("overlap", "table_overlap"), ("accuracy", "table_accuracy")],
    "imp": [("imp_adaptive", "table_imp_adaptive")],
}
TABLES_SUBCATEGORY = "9 Summary tables"


def sections(config: dict) -> list[str]:
    """The report's sections in reading order: claims, each family the config runs, the run itself."""
    return [CLAIMS, *(f for f in FAMILIES if config.get(f)), RUN]


def category(section: str, config: dict) -> str:
    """The category name of a section, e.g. "2. Composability - Movva, Frankle & Carbin (2021)".

    No colons or quotes: Snakemake turns category names into reStructuredText link targets and JavaScript calls.
    """
    number = sections(config).index(section) + 1
    title = TITLES[section]
    if section in FAMILIES:
        title = f"{title} - {FAMILIES[section].paper}"
    return f"{number}. {title}"


def figure_labels(family: str, name: str) -> dict[str, str]:
    """The columns the report's result list shows for a figure."""
    return {"figure": name, "mirrors": FIGURES[family][name][1]}


def caption(stem: str) -> str:
    """A caption file, relative to workflow/rules/ (where Snakemake resolves the report() captions of rule files)."""
    return f"../report/{stem}.rst"


def register_rst_directives() -> None:
    """Add the ``lotto-image`` reStructuredText directive to docutils: an image embedded in the page as a data URI.

    The report's landing page (workflow/report/workflow.rst) shows every figure inline; Snakemake's own
    ``embeddedimage`` directive leaves the file path in the page (its data URI is set after the image node is
    built), which a report opened anywhere else cannot load. Registered when the rule files are read, which is
    also when ``snakemake --report`` renders the page.
    """
    import base64
    import mimetypes

    from docutils.parsers.rst import directives
    from docutils.parsers.rst.directives.images import Image

    class EmbeddedImage(Image):
        def run(self):
            path = directives.uri(self.arguments[0])
            mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
            with open(path, "rb") as fh:
                self.arguments[0] = f"data:{mime};base64,{base64.b64encode(fh.read()).decode()}"
            return super().run()

    directives.register_directive("lotto-image", EmbeddedImage)
