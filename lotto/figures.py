"""Figure helpers shared by every family: the one matplotlib set-up, the house style, and atomic saving.

Figures are drawn on explicit ``Figure`` objects with an Agg canvas (never through pyplot's figure manager, so
nothing leaks between figures). Importing this module selects the Agg backend unless pyplot was already
imported by the caller (seaborn imports pyplot: it must never pick a GUI backend on a cluster node).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lotto.io import atomic_write  # noqa: E402

DPI = 150


def new_figure(figsize=(8.0, 4.8), layout: str | None = "constrained") -> Figure:
    """An empty figure with its own Agg canvas."""
    fig = Figure(figsize=figsize, dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


@contextlib.contextmanager
def style(font_scale: float = 0.85):
    """The house style (seaborn whitegrid, embeddable PDF fonts); draw and save inside it."""
    rc = {"pdf.fonttype": 42, "ps.fonttype": 42, "axes.titlesize": "medium", "savefig.dpi": DPI}
    with matplotlib.rc_context(rc), sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=font_scale):
        yield


def save(fig: Figure, table: pd.DataFrame, out_prefix: str | Path) -> dict[str, Path]:
    """Write ``<out_prefix>.png/.pdf`` of ``fig`` and ``<out_prefix>.csv`` of the table it plots, each atomically.

    Call it inside the style context the figure was drawn in (savefig reads some rc values). The PDF carries
    no dates, so rebuilding an unchanged figure gives the same bytes.
    """
    prefix = str(out_prefix)
    paths = {ext: Path(f"{prefix}.{ext}") for ext in ("png", "pdf", "csv")}
    with atomic_write(paths["png"], suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    with atomic_write(paths["pdf"], suffix=".pdf") as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    with atomic_write(paths["csv"], suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    return paths


def subtitle(context: dict | None) -> str:
    """'model on dataset, experiment' from a figure's context, for titles (empty when unknown)."""
    if not context:
        return ""
    parts = []
    if context.get("model") or context.get("dataset"):
        parts.append(f"{context.get('model', '?')} on {context.get('dataset', '?')}")
    if context.get("experiment"):
        parts.append(str(context["experiment"]))
    return ", ".join(parts)
