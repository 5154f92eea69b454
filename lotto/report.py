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

#: the title of each report section; a family's is its spec's, followed by its paper
TITLES = {CLAIMS: "Claims", **{name: f.title for name, f in FAMILIES.items()}, RUN: "Run"}

#: family -> figure -> (subcategory, the paper figure it mirrors), from the families' specs
FIGURES: dict[str, dict[str, tuple[str, str]]] = {
    name: {fig.name: (fig.section, fig.mirrors) for fig in f.figures} for name, f in FAMILIES.items()
}

#: summary tables: family -> (results/<experiment>/tables/<name>.csv, its caption file's stem)
TABLES: dict[str, list[tuple[str, str]]] = {name: list(f.tables) for name, f in FAMILIES.items() if f.tables}
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


def papers_html(config: dict) -> str:
    """The papers a run reproduces, as the landing page lists them: each family the config runs, its papers cited
    with links (from the families' specs)."""
    from html import escape

    items = []
    for name, family in FAMILIES.items():
        if config.get(name):
            cited = "; ".join(f'{escape(p.citation)}, <a href="{escape(p.url)}">{escape(p.url.rsplit("/", 1)[-1])}</a>'
                              for p in family.papers)
            items.append(f"<li>{escape(family.title)}: {cited}</li>")
    return "<p>Papers reproduced:</p>\n<ul>\n" + "\n".join(items) + "\n</ul>\n"


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
