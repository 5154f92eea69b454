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


def with_context(title: str, context: dict | None, note: str = "") -> str:
    """A figure title: ``title``, then one line naming model, dataset and experiment, then ``note``."""
    second = " · ".join(p for p in (subtitle(context), note) if p)
    return f"{title}\n{second}" if second else title


def add_context(fig: Figure, context: dict | None) -> None:
    """Append the model/dataset/experiment line to the figure's suptitle (figures with several panels)."""
    fig.suptitle(with_context(fig.get_suptitle(), context))


def reference_line(ax, per_replicate, name: str, color, linestyle: str = ":") -> str:
    """A horizontal reference (e.g. the dense network) at the mean over replicates, a ± sd band when there are
    several, labelled for the legend with its value; returns that label."""
    values = pd.Series(per_replicate, dtype=float)
    mean, sd = float(values.mean()), float(values.std()) if len(values) > 1 else 0.0
    if sd > 0:
        ax.axhspan(mean - sd, mean + sd, color=color, alpha=0.08, linewidth=0, zorder=0)
    label = reference_label(name, values)
    ax.axhline(mean, color=color, linestyle=linestyle, linewidth=1.6, zorder=1, label=label)
    return label


def reference_label(name: str, per_replicate) -> str:
    """Legend text of a reference line: 'dense: 0.921 ± 0.003 (n=3)' (mean ± sd over n replicates), or
    'dense: 0.921' for one replicate.

    The sd (ddof=1) is across replicates, the spread the band around the line shows; one replicate has none.
    """
    values = [float(v) for v in per_replicate]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{name}: {mean:.3f}"
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{name}: {mean:.3f} ± {sd:.3f} (n={len(values)})"
