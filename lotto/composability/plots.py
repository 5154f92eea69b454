"""Seaborn-styled figures from the tidy tables of :mod:`lotto.composability.analysis` (no torch, no pyplot state).

:func:`draw` renders one figure and writes ``<out_prefix>.png``, ``<out_prefix>.pdf`` and ``<out_prefix>.csv``
(the table itself), each atomically. Figures are drawn on an explicit Agg canvas (never through pyplot's
figure manager, so nothing leaks between figures); importing this module selects the Agg backend unless pyplot
was already imported by the caller.
"""

from __future__ import annotations

from pathlib import Path

from lotto.figures import (  # first: selects Agg
    CHANCE_COLOR, DENSE_COLOR, REFERENCE, data_values, fit_ylim, legend_below, off_plot, panel_title, panels, reference_label,
    replicate_note, save, series_styles, style, title,
)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from lotto.composability import ACCURACY_VIEWS, is_composition, xscale_for  # noqa: E402
from lotto.composability.analysis import ACCURACY_COLUMNS, FIGURES, OVERLAP_COLUMNS, ticket_rank  # noqa: E402
from lotto.names import display  # noqa: E402

X_LABEL_TARGET = "target sparsity $s$ (fraction pruned)"
X_LABEL_SPARSITY = "sparsity of the mask (fraction pruned)"
Y_LABEL_OVERLAP = "overlap (fraction of pruned\nweights pruned by all k)"
Y_LABEL_ACCURACY = "test accuracy"

LABEL_ONESHOT = display("ticket", "oneshot")
LABEL_RANDOM = display("ticket", "random")
LABEL_DENSE = display("ticket", "dense")

# line style per ticket kind: (linestyle, marker)
_STYLE = {
    "composed": ("-", "o"),
    "oneshot": ("-.", "^"),
    "random": ("--", "X"),
    "dense": (":", None),
}
# baselines in greys: the palette's colours stand for what a figure compares (t, k or the composition)
_BASELINE_COLOR = {"oneshot": "0.3", "random": "0.6"}

_LOGIT_TICKS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999,
                0.9995, 0.9999)


# --------------------------------------------------------------------------- helpers
def _aggregate(df: pd.DataFrame, keys: list[str], x: str, y: str) -> pd.DataFrame:
    """Mean and sd (ddof=1) of x and y over replicates, per group; sorted by the mean x."""
    g = df.groupby(keys, dropna=False, sort=True)
    out = g.agg(x=(x, "mean"), x_sd=(x, "std"), y=(y, "mean"), y_sd=(y, "std"), n=("replicate", "nunique"))
    return out.reset_index().sort_values("x", kind="stable")


def _errorbar(ax, agg: pd.DataFrame, *, color, linestyle, marker, label=None, xerr: bool = False, markersize=3.5,
              **kw):
    """Mean over replicates with ± sd error bars where there are several (x too, for compositions: their
    sparsity varies by replicate)."""
    many = bool((agg["n"] > 1).any())
    yerr = agg["y_sd"].fillna(0.0).to_numpy() if many else None
    xe = agg["x_sd"].fillna(0.0).to_numpy() if (many and xerr) else None
    ax.errorbar(agg["x"].to_numpy(), agg["y"].to_numpy(), yerr=yerr, xerr=xe, color=color, linestyle=linestyle,
                marker=marker, markersize=markersize, linewidth=1.2, elinewidth=0.8, label=label, **kw)


def _grid_xscale(t: pd.DataFrame) -> str:
    """'auto': the scale :func:`lotto.composability.xscale_for` gives the table's sparsity grid (its target
    sparsities), which every figure of a run shares."""
    grid = t.loc[t["target_sparsity"] > 0, "target_sparsity"] if "ticket" in t else t["target_sparsity"]
    return xscale_for(grid) if len(grid) else "linear"


def _choose_xscale(ax, xs: np.ndarray, xscale: str) -> None:
    """Linear or logit axis (``xscale``); limits from the points ``xs``; logit ticks as plain decimals."""
    xs = np.asarray(xs, dtype=float)
    xs = xs[np.isfinite(xs)]
    if xscale == "logit" and len(xs) and not (xs.min() > 0.0 and xs.max() < 1.0):
        raise ValueError("a logit x axis needs sparsities strictly between 0 and 1 (use --xscale linear)")
    if xscale == "logit":
        ax.set_xscale("logit")
        lo, hi = xs.min(), xs.max()
        left, right = lo / (1.0 + 0.25), 1.0 - (1.0 - hi) / (1.0 + 0.25)
        ax.set_xlim(left, right)
        # plain decimal ticks (the default logit labels read "1-10^-1", "1/2")
        ticks = [v for v in _LOGIT_TICKS if left <= v <= right]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    elif xscale == "linear":
        if len(xs):
            pad = 0.03 * max(xs.max() - xs.min(), 0.05)
            ax.set_xlim(max(0.0, xs.min() - pad), min(1.0, xs.max() + pad))
    else:
        raise ValueError(f"xscale must be 'auto', 'linear' or 'logit', got {xscale!r}")


def _xlabel(text: str, ax) -> str:
    # a logit axis must say so: its spacing is not proportional to the sparsity
    return f"{text}, logit scale" if ax.get_xscale() == "logit" else text


def _chance_grid(lo: float, hi: float, logit: bool) -> np.ndarray:
    if logit:
        return 1.0 / (1.0 + np.exp(-np.linspace(np.log(lo / (1 - lo)), np.log(hi / (1 - hi)), 400)))
    return np.linspace(lo, hi, 400)


def _prepare(name: str, table: pd.DataFrame) -> pd.DataFrame:
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {list(FIGURES)}")
    cols = OVERLAP_COLUMNS if name in ("fig1a", "fig1b") else ACCURACY_COLUMNS
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: table lacks columns {missing} (expected {cols})")
    if table.empty:
        raise ValueError(f"{name}: table is empty, nothing to plot")
    t = table.copy()
    # a table read back from its CSV has k as float (NaN for baselines); normalise
    t["k"] = pd.array([None if pd.isna(v) else int(v) for v in t["k"]], dtype="Int64")
    return t


def _k_label(k: int) -> str:
    return f"k = {int(k)}"


def _t_label(t: int) -> str:
    return f"t = {int(t)}"


def _line(style_: dict, label: str, **kw) -> Line2D:
    return Line2D([], [], label=label, **{**style_, **kw})


# --------------------------------------------------------------------------- figures
def _draw_overlap(name: str, t: pd.DataFrame, fig: Figure, ax, xscale: str, context: dict | None) -> None:
    if name == "fig1a":
        group, keys, labeler, legend_title = "pretrain_steps", sorted(t["pretrain_steps"].unique()), _t_label, \
            "pretraining steps t"
        ks = sorted(t["k"].dropna().unique())
        what = f"Overlap of the pruned weights of k = {' and '.join(str(int(k)) for k in ks)} sibling masks"
    else:
        group, keys, labeler, legend_title = "k", sorted(t["k"].unique()), _k_label, "sibling masks k"
        ts = sorted(t["pretrain_steps"].unique())
        what = f"Overlap of the pruned weights of k sibling masks at {', '.join(_t_label(v) for v in ts)}"
    styles = series_styles(keys)
    _choose_xscale(ax, t["target_sparsity"].to_numpy(), xscale)
    logit = ax.get_xscale() == "logit"

    handles = []
    for key in keys:
        agg = _aggregate(t[t[group] == key], ["target_sparsity"], "target_sparsity", "overlap")
        st = dict(styles[key], linestyle="-")
        _errorbar(ax, agg, **st, zorder=3)
        handles.append(_line(st, labeler(key)))

    lo, hi = float(t["target_sparsity"].min()), float(t["target_sparsity"].max())
    grid = _chance_grid(lo, hi, logit) if hi > lo else np.array([lo])
    chance = {}
    for k in sorted(t["k"].unique()):
        chance[int(k)] = grid ** (int(k) - 1)
    hidden = fit_ylim(ax, data_values(ax), {k: v for k, v in chance.items()}, upper=1.0)
    for k, values in chance.items():
        color = CHANCE_COLOR if name == "fig1a" else styles[k]["color"]
        ax.plot(grid, values, color=color, linestyle="--", linewidth=1.0, zorder=1, gid=REFERENCE)
        power = k - 1
        expr = "s" if power == 1 else f"s^{{{power}}}"
        label = f"chance ${expr}$" + ("" if name == "fig1a" else f" ({_k_label(k)})")
        if k in hidden:
            label = off_plot(label, values, ax)
        elif values.min() < ax.get_ylim()[0]:
            label += " (partly below the plot)"
        handles.append(Line2D([], [], color=color, linestyle="--", linewidth=1.0, label=label))

    ax.set_xlabel(_xlabel(X_LABEL_TARGET, ax))
    ax.set_ylabel(Y_LABEL_OVERLAP)
    title(fig, what, context, _replicate_note(t))
    legend_below(fig, handles, title=legend_title)


def _replicate_note(t: pd.DataFrame) -> str:
    return replicate_note(t["replicate"].nunique())


def _baselines(ax, base: pd.DataFrame, handles: list | None) -> None:
    """One-shot and random-ticket lines in greys (the palette's colours stand for what the figure compares)."""
    for ticket, label in (("oneshot", LABEL_ONESHOT), ("random", LABEL_RANDOM)):
        bsub = base[base["ticket"] == ticket]
        if len(bsub):
            ls, mk = _STYLE[ticket]
            agg = _aggregate(bsub, ["target_sparsity"], "sparsity", "test_accuracy")
            _errorbar(ax, agg, color=_BASELINE_COLOR[ticket], linestyle=ls, marker=mk, zorder=2)
            if handles is not None:
                handles.append(Line2D([], [], color=_BASELINE_COLOR[ticket], linestyle=ls, marker=mk, label=label))


def _dense_values(dense: pd.DataFrame) -> pd.Series:
    """The dense network's accuracy per replicate (the mean over its siblings)."""
    return dense.groupby("replicate")["test_accuracy"].mean()


def _draw_dense(ax, dense: pd.DataFrame) -> None:
    """The dense line at the mean over replicates, with a ± sd band when there are several."""
    if dense.empty:
        return
    values = _dense_values(dense)
    mean, sd = float(values.mean()), float(values.std()) if len(values) > 1 else 0.0
    if sd > 0:
        ax.axhspan(mean - sd, mean + sd, color=DENSE_COLOR, alpha=0.08, linewidth=0, zorder=0)
    ax.axhline(mean, color=DENSE_COLOR, linestyle=_STYLE["dense"][0], linewidth=1.2, zorder=1, gid=REFERENCE)


def _dense_handle(ax, dense: pd.DataFrame, name: str) -> Line2D | None:
    """The dense line's legend entry: its value (mean ± sd, n), and where it is when out of the y range."""
    if dense.empty:
        return None
    values = _dense_values(dense)
    label = off_plot(reference_label(name, values), [values.mean()], ax)
    return Line2D([], [], color=DENSE_COLOR, linestyle=_STYLE["dense"][0], linewidth=1.2, label=label)


def _draw_accuracy(name: str, t: pd.DataFrame, xscale: str, context: dict | None) -> Figure:
    op, view = ACCURACY_VIEWS[name]
    comp = t[t["ticket"].map(is_composition).astype(bool)] if view == "by_op" else t[t["ticket"] == op]
    base = t[t["ticket"].isin(("oneshot", "random"))]
    dense = t[t["ticket"] == "dense"]
    sparse = t[t["ticket"] != "dense"]
    ts = sorted(t["pretrain_steps"].unique())
    ks = sorted(comp["k"].dropna().unique())
    op_text = display("ticket", op)
    k_text = " and ".join(str(int(k)) for k in ks)

    if view == "by_t":
        # one panel per t (shared axes): the composition against its own one-shot and random tickets and dense
        fig, axes = panels(context, len(ts), sharex=True, sharey=True)
        style_c = dict(series_styles(["composed"])["composed"], linestyle=_STYLE["composed"][0])
        for ax, tv in zip(axes, ts):
            _choose_xscale(ax, sparse["sparsity"].to_numpy(), xscale)
            sub = comp[comp["pretrain_steps"] == tv]
            if len(sub):
                agg = _aggregate(sub, ["target_sparsity"], "sparsity", "test_accuracy")
                _errorbar(ax, agg, **style_c, xerr=True, zorder=3)
            _baselines(ax, base[base["pretrain_steps"] == tv], None)
            d = dense[dense["pretrain_steps"] == tv]
            _draw_dense(ax, d)
            dense_text = f" · dense {reference_label('', _dense_values(d))[2:]}" if len(d) else ""
            panel_title(ax, f"{_t_label(tv)}{dense_text}")
            ax.set_xlabel(_xlabel(X_LABEL_SPARSITY, ax))
        axes[0].set_ylabel(Y_LABEL_ACCURACY)
        refs = {tv: _dense_values(dense[dense["pretrain_steps"] == tv]).mean() for tv in ts
                if (dense["pretrain_steps"] == tv).any()}
        hidden = fit_ylim(axes[0], data_values(*axes), {tv: [v] for tv, v in refs.items()}, upper=1.0)
        handles = [_line(style_c, f"{op_text} of k = {k_text} masks")]
        handles += [Line2D([], [], color=_BASELINE_COLOR[b], linestyle=_STYLE[b][0], marker=_STYLE[b][1], label=lab)
                    for b, lab in (("oneshot", LABEL_ONESHOT), ("random", LABEL_RANDOM)) if (base["ticket"] == b).any()]
        if refs:  # its value differs per t: in each panel's title
            label = f"{LABEL_DENSE} (value in the panel's title" + (
                ", ± sd band)" if dense["replicate"].nunique() > 1 else ")")
            if hidden:
                label += f"; off the plot at {', '.join(_t_label(h) for h in sorted(hidden))}"
            handles.append(Line2D([], [], color=DENSE_COLOR, linestyle=_STYLE["dense"][0], linewidth=1.2,
                                  label=label))
        what = f"{op_text.capitalize()} of k = {k_text} sibling masks: test accuracy after retraining, per t"
        title(fig, what, context, _replicate_note(t))
        legend_below(fig, handles)
        return fig

    fig, (ax,) = panels(context, 1)
    _choose_xscale(ax, sparse["sparsity"].to_numpy(), xscale)
    t_text = ", ".join(_t_label(v) for v in ts)
    handles: list[Line2D] = []
    if view == "by_op":
        ops = sorted(comp["ticket"].unique(), key=ticket_rank)
        styles = series_styles(ops)
        # matched compositions can be the same mask (an intersection grown back by mean |w| is often the
        # mean_magnitude mask): markers of their own, each smaller than the one drawn before, keep them visible
        sizes = {o: 3.5 + 1.2 * (len(ops) - 1 - i) for i, o in enumerate(ops)}
        for o in ops:
            st = dict(styles[o], linestyle=_STYLE["composed"][0])
            agg = _aggregate(comp[comp["ticket"] == o], ["target_sparsity"], "sparsity", "test_accuracy")
            _errorbar(ax, agg, **st, markersize=sizes[o], xerr=True, zorder=3)
            handles.append(_line(st, display("ticket", o)))
        what = f"Compositions of k = {k_text} sibling masks at {t_text}: test accuracy after retraining"
        legend_title = "composition"
    else:
        styles = series_styles(ks)
        for k in ks:
            st = dict(styles[k], linestyle=_STYLE["composed"][0])
            agg = _aggregate(comp[comp["k"] == k], ["target_sparsity"], "sparsity", "test_accuracy")
            _errorbar(ax, agg, **st, xerr=True, zorder=3)
            handles.append(_line(st, f"{op_text} of {_k_label(k)} masks"))
        what = f"{op_text.capitalize()} of k sibling masks at {t_text}: test accuracy after retraining"
        legend_title = None
    _baselines(ax, base, handles)
    _draw_dense(ax, dense)
    if len(dense):
        fit_ylim(ax, data_values(ax), {"dense": [_dense_values(dense).mean()]}, upper=1.0)
    else:
        fit_ylim(ax, data_values(ax), upper=1.0)
    dense_handle = _dense_handle(ax, dense, f"{LABEL_DENSE}, {t_text}")
    if dense_handle is not None:
        handles.append(dense_handle)
    ax.set_xlabel(_xlabel(X_LABEL_SPARSITY, ax))
    ax.set_ylabel(Y_LABEL_ACCURACY)
    title(fig, what, context, _replicate_note(t))
    legend_below(fig, handles, title=legend_title)
    return fig


# --------------------------------------------------------------------------- entry point
def render(name: str, table: pd.DataFrame, xscale: str = "auto", context: dict | None = None) -> Figure:
    """Build the matplotlib Figure for ``name`` from its table (no files written)."""
    t = _prepare(name, table)
    if xscale == "auto":
        xscale = _grid_xscale(t)
    if name in ("fig1a", "fig1b"):
        fig, (ax,) = panels(context, 1)
        _draw_overlap(name, t, fig, ax, xscale, context)
        return fig
    return _draw_accuracy(name, t, xscale, context)


def draw(name: str, table: pd.DataFrame, out_prefix: str | Path, xscale: str = "auto",
         context: dict | None = None) -> dict[str, Path]:
    """Render figure ``name`` from ``table`` and write ``<out_prefix>.png/.pdf/.csv`` atomically.

    Replicates are drawn as mean ± sd (error bars only when there is more than one replicate).
    ``xscale``: "linear", "logit" or "auto" (:func:`lotto.composability.xscale_for` of the table's sparsity
    grid, so every figure of one run gets the same scale; the workflow passes the config grid's scale).
    ``context``: {"model", "dataset", "experiment", "figure": {"width", "wide_width"}}: the title's names and the
    figure's size (lotto.figures). Returns the three paths.
    """
    with style():
        fig = render(name, table, xscale=xscale, context=context)
        return save(fig, table, out_prefix)

