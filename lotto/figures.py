"""Figure helpers shared by every family: the one matplotlib set-up, the house style, sizes, colours, titles,
legends, fitted y ranges, atomic saving, and the layout check the tests apply to every figure.

Figures are drawn on explicit ``Figure`` objects with an Agg canvas (never through pyplot's figure manager, so
nothing leaks between figures). Importing this module selects the Agg backend unless pyplot was already
imported by the caller (seaborn imports pyplot: it must never pick a GUI backend on a cluster node).

Sizes are those of a printed page: a one-panel figure is one column of a two-column paper wide
(``figures.width`` in the config, 3.4 in by default), a figure with panels side by side the whole text width
(``figures.wide_width``, 7 in), and every text is 7-8 pt at that size, so a figure placed at its own size in a
paper, or shown at 100 % on a screen (the PNG has 200 pixels per inch), needs no scaling to be read. The sizes
reach the figure commands in their ``--context`` JSON (key ``figure``), with the names of the run's model and
data set for the title.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from lotto.io import atomic_write  # noqa: E402
from lotto.names import display  # noqa: E402

DPI = 200
#: inches: one column of a two-column page, and the whole text width (the config's figures section overrides)
WIDTH, WIDE_WIDTH = 3.4, 7.0
#: points: ticks, legends and annotations / labels / titles (the smallest text of a figure is >= MIN_FONT_PT)
SMALL_PT, BASE_PT, TITLE_PT = 7.0, 8.0, 8.0
MIN_FONT_PT = 7.0

#: the categorical palette of every figure: Okabe & Ito's colour-blind-safe colours (black, their eighth, is
#: kept for reference lines; yellow, hard to see on white, comes last)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
#: markers and dashes that tell series apart where colours repeat (more series than colours)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
DASHES = ("-", "--", "-.", ":")
#: the sequential colour map of every ordered quantity (levels, heatmaps, landscapes): perceptually uniform
#: and readable with every common colour-vision deficiency
SEQUENTIAL = "viridis"
#: reference lines, in greys so they never take a series' colour: the dense network, chance, baselines
DENSE_COLOR, CHANCE_COLOR = "0.15", "0.45"


# --------------------------------------------------------------------------- set-up
def new_figure(figsize=(WIDTH, 2.6), layout: str | None = "constrained") -> Figure:
    """An empty figure with its own Agg canvas."""
    fig = Figure(figsize=figsize, dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


@contextlib.contextmanager
def style():
    """The house style (seaborn whitegrid, point sizes for print, embeddable PDF fonts); draw and save inside it."""
    rc = {
        "pdf.fonttype": 42, "ps.fonttype": 42, "savefig.dpi": DPI, "figure.dpi": DPI,
        "font.size": BASE_PT, "axes.titlesize": TITLE_PT, "axes.labelsize": BASE_PT, "figure.titlesize": TITLE_PT,
        "xtick.labelsize": SMALL_PT, "ytick.labelsize": SMALL_PT, "legend.fontsize": SMALL_PT,
        "legend.title_fontsize": SMALL_PT, "lines.linewidth": 1.2, "lines.markersize": 3.5,
        "axes.linewidth": 0.6, "grid.linewidth": 0.4, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
        "xtick.major.pad": 2.0, "ytick.major.pad": 2.0, "axes.labelpad": 2.5, "axes.titlepad": 4.0,
        "legend.handlelength": 2.2, "legend.columnspacing": 1.2, "legend.handletextpad": 0.5,
        "legend.borderaxespad": 0.3, "errorbar.capsize": 1.8,
        "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE)),
        "figure.constrained_layout.h_pad": 0.03, "figure.constrained_layout.w_pad": 0.03,
    }
    with sns.axes_style("whitegrid"), matplotlib.rc_context(rc):
        yield


def sizes(context: dict | None) -> tuple[float, float]:
    """(width, wide width) in inches: the context's ``figure`` entry (the config's figures section), else the
    defaults for a two-column page."""
    spec = (context or {}).get("figure") or {}
    return float(spec.get("width", WIDTH)), float(spec.get("wide_width", WIDE_WIDTH))


def panels(context: dict | None, n: int, ncols: int | None = None, aspect: float = 0.72,
           max_cols: int = 3, sharex=False, sharey=False, extra_height: float = 0.9):
    """A figure of ``n`` panels, at most ``max_cols`` a row: one column wide for a single column of panels,
    the whole text width for several. ``aspect``: panel height / panel width; ``extra_height`` (inches): room
    for the title and a legend below. Returns (fig, the n axes); unused cells are hidden."""
    width, wide = sizes(context)
    ncols = max(1, min(ncols or n, max_cols, n))
    nrows = -(-n // ncols)
    fig_w = width if ncols == 1 else wide
    panel_w = fig_w / ncols
    fig = new_figure((fig_w, nrows * panel_w * aspect + extra_height))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


# --------------------------------------------------------------------------- colours and styles
def colors(keys) -> dict:
    """key -> colour of the one palette, in the order given (cycling past its seven colours)."""
    keys = list(dict.fromkeys(keys))
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def series_styles(keys) -> dict:
    """key -> dict(color, marker, linestyle): the palette's colours, and where they repeat (more than seven
    series) another marker and dash, so that no two series look the same."""
    keys = list(dict.fromkeys(keys))
    out = {}
    for i, k in enumerate(keys):
        turn = i // len(PALETTE)
        out[k] = dict(color=PALETTE[i % len(PALETTE)], marker=MARKERS[(i + turn) % len(MARKERS)],
                      linestyle=DASHES[turn % len(DASHES)])
    return out


# --------------------------------------------------------------------------- titles
def run_line(context: dict | None) -> str:
    """'LeNet on Fashion-MNIST' from a figure's context (readable names; empty when unknown)."""
    if not context or not (context.get("model") or context.get("dataset")):
        return ""
    model = display("model", context.get("model", "?"))
    dataset = display("dataset", context.get("dataset", "?"))
    return f"{model} on {dataset}"


def replicate_note(n: int) -> str:
    """What the error bars or bands of a figure show, for its title."""
    return f"mean ± sd over {n} replicates" if n > 1 else "1 replicate"


def _wrap(text: str, width_in: float, size_pt: float, min_chars: int = 20) -> str:
    """Each line of ``text`` wrapped to ``width_in`` inches at ``size_pt``; never inside $math$ (a formula
    split over two lines is no longer one)."""
    # DejaVu Sans averages ~0.55 em a character: a line of that many fits the width
    chars = max(min_chars, int(width_in * 72.0 / (0.56 * size_pt)))
    out = []
    for line in text.split("\n"):
        parts = line.split("$")
        glued = "$".join(p.replace(" ", "\0") if i % 2 else p.replace(" = ", "\0=\0") for i, p in enumerate(parts))
        out.append(textwrap.fill(glued, chars, break_long_words=False, break_on_hyphens=False).replace("\0", " "))
    return "\n".join(out)


def wrap(text: str, width_in: float, size_pt: float = SMALL_PT) -> str:
    """``text`` wrapped to lines ``width_in`` inches wide at ``size_pt`` (tick labels, short labels)."""
    return _wrap(text, width_in, size_pt, min_chars=6)


def title(fig: Figure, what: str, context: dict | None = None, note: str = "") -> None:
    """The figure's title: what it shows, then a line naming the model and data set and ``note`` (e.g. the
    replicates), each wrapped to the figure's width."""
    second = " · ".join(p for p in (run_line(context), note) if p)
    text = f"{what}\n{second}" if second else what
    fig.suptitle(_wrap(text, fig.get_figwidth() - 0.1, TITLE_PT), fontsize=TITLE_PT)


def panel_title(ax, text: str) -> None:
    """A panel's title, wrapped to the panel's width."""
    width = ax.get_position().width * ax.figure.get_figwidth()  # before the layout: close enough to wrap
    ax.set_title(_wrap(text, width + 0.3, TITLE_PT))


# --------------------------------------------------------------------------- legends
def legend_below(fig: Figure, handles, labels=None, title: str | None = None, ncols: int | None = None):
    """One legend for the whole figure, below its panels (never over data, titles or another legend), in as
    many columns as fit the figure's width. Grows the figure by the legend's height, so the panels keep theirs."""
    if labels is None:
        labels = [h.get_label() for h in handles]
    if not handles:
        return None
    renderer = fig.canvas.get_renderer()
    if ncols is None:
        probe = fig.legend(handles, labels, title=title, ncols=1, frameon=False)
        widths = [t.get_window_extent(renderer).width for t in probe.get_texts()]
        probe.remove()
        em = SMALL_PT * fig.dpi / 72.0
        entry = max(widths) + em * (matplotlib.rcParams["legend.handlelength"]
                                    + matplotlib.rcParams["legend.handletextpad"]
                                    + matplotlib.rcParams["legend.columnspacing"])
        ncols = int(max(1, min(len(labels), (fig.bbox.width * 0.97) // entry)))
        # the same number of entries in every row where it costs no extra row (6 entries: 3 + 3, not 5 + 1)
        rows = -(-len(labels) // ncols)
        ncols = -(-len(labels) // rows)
    legend = fig.legend(handles, labels, title=title, ncols=ncols, loc="outside lower center", frameon=False)
    height = legend.get_window_extent(renderer).height / fig.dpi
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + height)
    return legend


# --------------------------------------------------------------------------- y ranges
#: the gid of lines that are references (dense, chance, thresholds), not data: fit_ylim weighs them apart
REFERENCE = "reference"


def data_values(*axes) -> list[float]:
    """Every y value the data of ``axes`` reach as drawn: line points, error bar ends and band edges; lines
    whose gid is :data:`REFERENCE` left out."""
    from matplotlib.collections import LineCollection, PolyCollection

    out: list[float] = []
    for ax in axes:
        for line in ax.lines:
            if line.get_gid() != REFERENCE:
                out += [float(v) for v in np.asarray(line.get_ydata(), dtype=float).ravel()]
        for coll in ax.collections:
            if coll.get_gid() == REFERENCE:
                continue
            if isinstance(coll, LineCollection):
                out += [float(seg[:, 1].min()) for seg in coll.get_segments() if len(seg)]
                out += [float(seg[:, 1].max()) for seg in coll.get_segments() if len(seg)]
            elif isinstance(coll, PolyCollection):
                for path in coll.get_paths():
                    out += [float(v) for v in path.vertices[:, 1]]
    return [v for v in out if np.isfinite(v)]


def fit_ylim(ax, values, references: dict | None = None, pad: float = 0.08, lower: float | None = None,
             upper: float | None = None, reach: float = 0.6) -> set:
    """Fit the y range to the data ``values`` (padded by ``pad`` of their span), not to 0-1: differences of a
    few points are what the figures are about. A reference (name -> its values, e.g. a dense accuracy or a
    chance curve) is brought into view when that widens the range by at most ``reach`` of the data's span;
    returns the names of those left wholly out of view, for the caller to say so (in the legend).
    ``lower``/``upper``: bounds the range never passes (0 and 1 for fractions)."""
    vals = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    if not len(vals):
        return set()
    lo, hi = float(vals.min()), float(vals.max())
    span = max(hi - lo, 0.02 * max(abs(hi), 1e-3), 1e-3)
    refs = {k: np.asarray(pd.Series(v, dtype=float).dropna(), dtype=float) for k, v in (references or {}).items()}
    for v in refs.values():
        if len(v) and min(lo, float(v.min())) >= lo - reach * span and max(hi, float(v.max())) <= hi + reach * span:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    span = max(hi - lo, span)
    bottom, top = lo - pad * span, hi + pad * span
    if lower is not None:
        bottom = max(bottom, lower - 0.01 * span)
    if upper is not None:
        top = min(top, upper + 0.01 * span)
    ax.set_ylim(bottom, top)
    return {k for k, v in refs.items() if len(v) and (float(v.max()) < bottom or float(v.min()) > top)}


def off_plot(label: str, values, ax) -> str:
    """``label`` with where its reference lies when it is out of the y range ('above the plot')."""
    lo, hi = ax.get_ylim()
    v = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    if len(v) and v.min() > hi:
        return f"{label} (above the plot)"
    if len(v) and v.max() < lo:
        return f"{label} (below the plot)"
    return label


# --------------------------------------------------------------------------- reference lines
def reference_line(ax, per_replicate, name: str, color=DENSE_COLOR, linestyle: str = ":") -> str:
    """A horizontal reference (e.g. the dense network) at the mean over replicates, a ± sd band when there are
    several, labelled for the legend with its value; returns that label."""
    values = pd.Series(per_replicate, dtype=float)
    mean, sd = float(values.mean()), float(values.std()) if len(values) > 1 else 0.0
    if sd > 0:
        ax.axhspan(mean - sd, mean + sd, color=color, alpha=0.08, linewidth=0, zorder=0)
    label = reference_label(name, values)
    ax.axhline(mean, color=color, linestyle=linestyle, linewidth=1.2, zorder=1, label=label, gid=REFERENCE)
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


def plain_log_scale(ax, which: str = "y") -> None:
    """A log scale labelled in plain decimals (0.3, not 3×10⁻¹); of the minor ticks only 2, 3 and 5 (× 10^k),
    or their labels collide."""
    from matplotlib.ticker import FuncFormatter

    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))


# --------------------------------------------------------------------------- heatmaps
def heatmap(ax, mat: pd.DataFrame, vmin=None, vmax=None, annot: bool | pd.DataFrame = True, fmt: str = ".2f",
            cmap: str = SEQUENTIAL, cbar_ax=None, cbar: bool = True, label: str = ""):
    """A seaborn heatmap of ``mat`` in the sequential colour map, its numbers written in the cells (7 pt) where
    they fit; ``annot`` may be a frame of the cell texts. Returns the mesh (for a shared colour bar)."""
    annotate = annot is not False and (isinstance(annot, pd.DataFrame) or mat.shape[0] * mat.shape[1] <= 100)
    sns.heatmap(mat, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, annot=annot if annotate else False,
                fmt="" if isinstance(annot, pd.DataFrame) else fmt, annot_kws={"size": SMALL_PT},
                cbar=cbar, cbar_ax=cbar_ax, cbar_kws={"label": label} if cbar else None,
                linewidths=0.3, linecolor="white")
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", labelrotation=40, length=0)
    ax.tick_params(axis="y", labelrotation=0, length=0)
    for t in ax.get_xticklabels():
        t.set_horizontalalignment("right")
        t.set_rotation_mode("anchor")
    return ax.collections[0]


def varying(keys: list[tuple], names: list[str]) -> tuple[dict, list[str]]:
    """Of the panel keys (tuples named ``names``): the parts shared by every panel ({name: value}, for the
    figure's title) and the names of those that vary (for each panel's title)."""
    shared, varies = {}, []
    for i, name in enumerate(names):
        values = {k[i] for k in keys}
        if len(values) == 1:
            shared[name] = next(iter(values))
        else:
            varies.append(name)
    return shared, varies


# --------------------------------------------------------------------------- saving
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


# --------------------------------------------------------------------------- the layout check
def _texts(fig: Figure) -> list[tuple[str, Text]]:
    """(role, text) of every visible, non-empty text a reader sees: titles, axis and tick labels, annotations,
    legend texts ('legend' role: checked with their legend)."""
    out = []

    def add(role, t):
        if t is not None and t.get_visible() and t.get_text().strip():
            out.append((role, t))

    add("title", fig._suptitle)
    for t in fig.texts:
        add("text", t)
    for legend in fig.legends:
        for t in [legend.get_title(), *legend.get_texts()]:
            add("legend", t)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for t in (ax.title, ax._left_title, ax._right_title):
            add("title", t)
        add("label", ax.xaxis.label)
        add("label", ax.yaxis.label)
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis._update_ticks():  # the ticks drawn: those inside the view
                if tick.get_visible():
                    for lab in (tick.label1, tick.label2):
                        add("tick", lab)
            add("tick", axis.get_offset_text())
        for t in ax.texts:
            add("annotation", t)
        if ax.get_legend() is not None:
            for t in [ax.get_legend().get_title(), *ax.get_legend().get_texts()]:
                add("legend", t)
    return out


def _overlap(a, b, tol: float = 1.0) -> bool:
    """Whether two display boxes overlap by more than ``tol`` pixels each way."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tol and min(a.y1, b.y1) - max(a.y0, b.y0) > tol


def layout_problems(fig: Figure, min_pt: float = MIN_FONT_PT) -> list[str]:
    """What a reader would stumble over in ``fig``, from matplotlib's rendered bounding boxes: text smaller than
    ``min_pt`` points at the figure's own size; text cut off at the figure's edge; a legend over a title, an
    axis or tick label, another legend or any panel's area (where the data are); a title over another text or
    a panel; upright tick labels of one axis over each other. An empty list is a clean figure. Draws the figure (its constrained layout) first."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems: list[str] = []
    texts = _texts(fig)
    frame = fig.bbox
    for role, t in texts:
        if t.get_fontsize() < min_pt - 1e-6:
            problems.append(f"{role} {t.get_text()!r} is {t.get_fontsize():.1f} pt (< {min_pt:g})")
        box = t.get_window_extent(renderer)
        if box.x0 < frame.x0 - 1 or box.y0 < frame.y0 - 1 or box.x1 > frame.x1 + 1 or box.y1 > frame.y1 + 1:
            problems.append(f"{role} {t.get_text()!r} is cut off at the figure's edge")
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_visible() and ax.get_legend()]
    panels_ = [ax for ax in fig.axes if ax.get_visible()]
    others = [(role, t, t.get_window_extent(renderer)) for role, t in texts if role != "legend"]
    for i, legend in enumerate(legends):
        box = legend.get_window_extent(renderer)
        if box.x0 < frame.x0 - 1 or box.y0 < frame.y0 - 1 or box.x1 > frame.x1 + 1 or box.y1 > frame.y1 + 1:
            problems.append(f"legend {i} is cut off at the figure's edge")
        for j, other in enumerate(legends):
            if j > i and _overlap(box, other.get_window_extent(renderer)):
                problems.append(f"legend {i} overlaps legend {j}")
        for ax in panels_:
            if _overlap(box, ax.bbox):
                problems.append(f"legend {i} lies over the panel {ax.get_title() or ax.get_label()!r} (its data)")
        for role, t, tbox in others:
            if _overlap(box, tbox):
                problems.append(f"legend {i} overlaps the {role} {t.get_text()!r}")
    for ax in panels_:  # neighbouring tick labels of one axis (upright ones: rotated boxes always touch)
        for axis in (ax.xaxis, ax.yaxis):
            labels = [tick.label1 for tick in axis._update_ticks() if tick.get_visible() and tick.label1.get_visible()
                      and tick.label1.get_text().strip() and tick.label1.get_rotation() % 90 == 0]
            boxes = [lab.get_window_extent(renderer) for lab in labels]
            for a in range(len(boxes)):
                for b in range(a + 1, len(boxes)):
                    if _overlap(boxes[a], boxes[b]):
                        problems.append(f"tick labels {labels[a].get_text()!r} and {labels[b].get_text()!r} overlap")
    for role, t, tbox in others:
        if role != "title":
            continue
        for role2, t2, tbox2 in others:
            if t2 is not t and _overlap(tbox, tbox2):
                problems.append(f"title {t.get_text()!r} overlaps the {role2} {t2.get_text()!r}")
        for ax in panels_:
            if _overlap(tbox, ax.bbox):
                problems.append(f"title {t.get_text()!r} lies over a panel")
    return problems
