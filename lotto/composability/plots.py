"""Seaborn-styled figures from the tidy tables of :mod:`lotto.composability.analysis` (no torch, no pyplot state).

:func:`draw` renders one figure and writes ``<out_prefix>.png``, ``<out_prefix>.pdf`` and ``<out_prefix>.csv``
(the table itself), each atomically. Figures are drawn on an explicit Agg canvas (never through pyplot's
figure manager, so nothing leaks between figures); importing this module selects the Agg backend unless pyplot
was already imported by the caller.
"""

from __future__ import annotations

from pathlib import Path

from lotto.figures import new_figure, reference_line, save, style, with_context  # first: selects Agg

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from lotto.composability import ACCURACY_VIEWS, is_composition, xscale_for  # noqa: E402
from lotto.composability.analysis import ACCURACY_COLUMNS, FIGURES, OVERLAP_COLUMNS, ticket_rank  # noqa: E402
from lotto.masks import vote_threshold  # noqa: E402

X_LABEL_TARGET = "target sparsity (fraction of weights pruned)"
X_LABEL_SPARSITY = "sparsity of the mask (fraction of weights pruned)"
Y_LABEL_OVERLAP = "overlap (fraction of pruned weights\npruned by all k sibling masks)"
Y_LABEL_ACCURACY = "test accuracy (fraction correct)"

LABEL_ONESHOT = "one-shot (rewind)"
LABEL_RANDOM = "random ticket"
LABEL_DENSE = "dense"

# line style per ticket kind: (linestyle, marker)
_STYLE = {
    "composed": ("-", "o"),
    "oneshot": ("-.", "^"),
    "random": ("--", "X"),
    "dense": (":", None),
}
_BASELINE_COLOR = {"oneshot": "0.15", "random": "0.55"}
_OP_MARKERS = ("o", "s", "D", "v", "P", "h", "<", ">")
_DENSE_COLOR = "0.0"

_LOGIT_TICKS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999,
                0.9995, 0.9999)
FIGSIZE = (8.0, 4.8)


# --------------------------------------------------------------------------- helpers
def _aggregate(df: pd.DataFrame, keys: list[str], x: str, y: str) -> pd.DataFrame:
    """Mean and sd (ddof=1) of x and y over replicates, per group; sorted by the mean x."""
    g = df.groupby(keys, dropna=False, sort=True)
    out = g.agg(x=(x, "mean"), x_sd=(x, "std"), y=(y, "mean"), y_sd=(y, "std"), n=("replicate", "nunique"))
    return out.reset_index().sort_values("x", kind="stable")


def _errorbar(ax, agg: pd.DataFrame, *, color, linestyle, marker, label=None, xerr: bool = False, markersize=5, **kw):
    many = bool((agg["n"] > 1).any())
    yerr = agg["y_sd"].fillna(0.0).to_numpy() if many else None
    xe = agg["x_sd"].fillna(0.0).to_numpy() if (many and xerr) else None
    ax.errorbar(agg["x"].to_numpy(), agg["y"].to_numpy(), yerr=yerr, xerr=xe, color=color, linestyle=linestyle,
                marker=marker, markersize=markersize, linewidth=1.6, elinewidth=0.9, capsize=2.5, label=label, **kw)


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
    return f"k={int(k)}"


def _t_label(t: int) -> str:
    return f"t={int(t)}"


# --------------------------------------------------------------------------- figures
def _draw_overlap(name: str, t: pd.DataFrame, fig: Figure, xscale: str, context: dict | None) -> None:
    ax = fig.add_subplot()
    if name == "fig1a":
        group, palette_keys = "pretrain_steps", sorted(t["pretrain_steps"].unique())
        labeler = _t_label
        ks = sorted(t["k"].dropna().unique())
        title = f"Overlap of pruned weights, {', '.join(_k_label(k) for k in ks)} siblings"
        legend_title = "pretraining steps"
    else:
        group, palette_keys = "k", sorted(t["k"].unique())
        labeler = _k_label
        ts = sorted(t["pretrain_steps"].unique())
        title = f"Overlap of pruned weights of k sibling masks, {', '.join(_t_label(v) for v in ts)}"
        legend_title = "siblings composed"
    colors = dict(zip(palette_keys, sns.color_palette("colorblind", len(palette_keys))))
    _choose_xscale(ax, t["target_sparsity"].to_numpy(), xscale)
    logit = ax.get_xscale() == "logit"

    handles = []
    for key in palette_keys:
        agg = _aggregate(t[t[group] == key], ["target_sparsity"], "target_sparsity", "overlap")
        _errorbar(ax, agg, color=colors[key], linestyle="-", marker="o", label=labeler(key))
        handles.append(Line2D([], [], color=colors[key], linestyle="-", marker="o", label=labeler(key)))

    lo, hi = float(t["target_sparsity"].min()), float(t["target_sparsity"].max())
    grid = _chance_grid(lo, hi, logit) if hi > lo else np.array([lo])
    for k in sorted(t["k"].unique()):
        color = "0.45" if name == "fig1a" else colors[k]
        power = int(k) - 1
        ax.plot(grid, grid ** power, color=color, linestyle="--", linewidth=1.3, zorder=1)
        expr = "s" if power == 1 else f"s^{{{power}}}"
        label = f"chance ${expr}$" + ("" if name == "fig1a" else f" ({_k_label(k)})")
        handles.append(Line2D([], [], color=color, linestyle="--", label=label))

    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(_xlabel(X_LABEL_TARGET, ax))
    ax.set_ylabel(Y_LABEL_OVERLAP)
    ax.set_title(with_context(title, context, _replicate_note(t)))
    fig.legend(handles=handles, title=legend_title, loc="outside right upper", frameon=False)


def _replicate_note(t: pd.DataFrame) -> str:
    n = t["replicate"].nunique()
    return f"mean ± sd over {n} replicates" if n > 1 else "1 replicate"


def _op_label(op: str) -> str:
    m = vote_threshold(op)
    if m is not None:
        return f"vote{m} (kept by >= {m} of the k)"
    return op


def _draw_baselines(ax, base: pd.DataFrame, dense: pd.DataFrame, handles: list, dense_name: str) -> None:
    """One-shot, random and dense lines in grey (the views whose colours stand for compositions or k); the dense
    line's legend entry is ``dense_name`` with its value."""
    for ticket, label in (("oneshot", LABEL_ONESHOT), ("random", LABEL_RANDOM)):
        bsub = base[base["ticket"] == ticket]
        if len(bsub):
            ls, mk = _STYLE[ticket]
            agg = _aggregate(bsub, ["target_sparsity"], "sparsity", "test_accuracy")
            _errorbar(ax, agg, color=_BASELINE_COLOR[ticket], linestyle=ls, marker=mk, zorder=2)
            handles.append(Line2D([], [], color=_BASELINE_COLOR[ticket], linestyle=ls, marker=mk, label=label))
    label = _draw_dense(ax, dense, _DENSE_COLOR, dense_name)
    if label:
        handles.append(Line2D([], [], color=_DENSE_COLOR, linestyle=_STYLE["dense"][0], linewidth=1.6,
                              label=label))


def _draw_accuracy(name: str, t: pd.DataFrame, fig: Figure, xscale: str, context: dict | None) -> None:
    op, view = ACCURACY_VIEWS[name]
    ax = fig.add_subplot()
    comp = t[t["ticket"].map(is_composition).astype(bool)] if view == "by_op" else t[t["ticket"] == op]
    base = t[t["ticket"].isin(("oneshot", "random"))]
    dense = t[t["ticket"] == "dense"]
    sparse = t[t["ticket"] != "dense"]
    _choose_xscale(ax, sparse["sparsity"].to_numpy(), xscale)
    ts = sorted(t["pretrain_steps"].unique())
    ks = sorted(comp["k"].dropna().unique())
    op_text = "Union" if op == "union" else "Intersection"
    ls_c, mk_c = _STYLE["composed"]

    handles: list[Line2D] = []
    if view == "by_t":
        colors = dict(zip(ts, sns.color_palette("colorblind", len(ts))))
        k_text = ", ".join(_k_label(k) for k in ks)
        title = f"{op_text} of {k_text} sibling masks: test accuracy after retraining"
        for tv in ts:
            sub = comp[comp["pretrain_steps"] == tv]
            if len(sub):
                agg = _aggregate(sub, ["target_sparsity"], "sparsity", "test_accuracy")
                _errorbar(ax, agg, color=colors[tv], linestyle=ls_c, marker=mk_c, xerr=True, zorder=3)
            for ticket in ("oneshot", "random"):
                bsub = base[(base["ticket"] == ticket) & (base["pretrain_steps"] == tv)]
                if len(bsub):
                    ls, mk = _STYLE[ticket]
                    agg = _aggregate(bsub, ["target_sparsity"], "sparsity", "test_accuracy")
                    _errorbar(ax, agg, color=colors[tv], linestyle=ls, marker=mk, alpha=0.8, zorder=2)
        for tv in ts:
            handles.append(Line2D([], [], color=colors[tv], linewidth=3, label=_t_label(tv)))
        key_color = "0.3"
        handles.append(Line2D([], [], color=key_color, linestyle=ls_c, marker=mk_c,
                              label=f"{op} of {k_text} masks"))
        for ticket, label in (("oneshot", LABEL_ONESHOT), ("random", LABEL_RANDOM)):
            if (base["ticket"] == ticket).any():
                ls, mk = _STYLE[ticket]
                handles.append(Line2D([], [], color=key_color, linestyle=ls, marker=mk, label=label))
        for tv in ts:  # one dense line (and band) per t, named with its value
            name_t = f"{LABEL_DENSE}, {_t_label(tv)}"
            label = _draw_dense(ax, dense[dense["pretrain_steps"] == tv], colors[tv], name_t)
            if label:
                handles.append(Line2D([], [], color=colors[tv], linestyle=_STYLE["dense"][0], linewidth=1.6,
                                      label=label))
        legend_title = "pretraining steps"
    elif view == "by_op":
        ops = sorted(comp["ticket"].unique(), key=ticket_rank)
        colors = dict(zip(ops, sns.color_palette("colorblind", len(ops))))
        # matched compositions can be the same mask (an intersection grown back by mean |w| is often the
        # mean_magnitude mask): markers of their own, each smaller than the one drawn before, keep them visible
        markers = dict(zip(ops, _OP_MARKERS * len(ops)))
        sizes = {o: 5 + 1.5 * (len(ops) - 1 - i) for i, o in enumerate(ops)}
        k_text = ", ".join(_k_label(k) for k in ks)
        t_text = ", ".join(_t_label(v) for v in ts)
        title = f"Compositions of {k_text} sibling masks at {t_text}: test accuracy after retraining"
        for o in ops:
            agg = _aggregate(comp[comp["ticket"] == o], ["target_sparsity"], "sparsity", "test_accuracy")
            _errorbar(ax, agg, color=colors[o], linestyle=ls_c, marker=markers[o], markersize=sizes[o], xerr=True,
                      zorder=3)
            handles.append(Line2D([], [], color=colors[o], linestyle=ls_c, marker=markers[o], label=_op_label(o)))
        _draw_baselines(ax, base, dense, handles, f"{LABEL_DENSE}, {t_text}")
        legend_title = "composition"
    else:
        colors = dict(zip(ks, sns.color_palette("colorblind", len(ks))))
        t_text = ", ".join(_t_label(v) for v in ts)
        title = f"{op_text} of k sibling masks at {t_text}: test accuracy after retraining"
        for k in ks:
            agg = _aggregate(comp[comp["k"] == k], ["target_sparsity"], "sparsity", "test_accuracy")
            _errorbar(ax, agg, color=colors[k], linestyle=ls_c, marker=mk_c, xerr=True, zorder=3)
            handles.append(Line2D([], [], color=colors[k], linestyle=ls_c, marker=mk_c,
                                  label=f"{_k_label(k)} ({op})"))
        _draw_baselines(ax, base, dense, handles, f"{LABEL_DENSE}, {t_text}")
        legend_title = None

    ax.set_xlabel(_xlabel(X_LABEL_SPARSITY, ax))
    ax.set_ylabel(Y_LABEL_ACCURACY)
    ax.set_title(with_context(title, context, _replicate_note(t)))
    fig.legend(handles=handles, title=legend_title, loc="outside right upper", frameon=False)


def _draw_dense(ax, dense: pd.DataFrame, color, name: str) -> str | None:
    """The dense line at the mean over replicates, with a ± sd band when there are several; its legend text."""
    if dense.empty:
        return None
    per_replicate = dense.groupby("replicate")["test_accuracy"].mean()
    return reference_line(ax, per_replicate, name, color, linestyle=_STYLE["dense"][0])


# --------------------------------------------------------------------------- entry point
def render(name: str, table: pd.DataFrame, xscale: str = "auto", context: dict | None = None) -> Figure:
    """Build the matplotlib Figure for ``name`` from its table (no files written)."""
    t = _prepare(name, table)
    if xscale == "auto":
        xscale = _grid_xscale(t)
    fig = new_figure(FIGSIZE)
    if name in ("fig1a", "fig1b"):
        _draw_overlap(name, t, fig, xscale, context)
    else:
        _draw_accuracy(name, t, fig, xscale, context)
    return fig


def draw(name: str, table: pd.DataFrame, out_prefix: str | Path, xscale: str = "auto",
         context: dict | None = None) -> dict[str, Path]:
    """Render figure ``name`` from ``table`` and write ``<out_prefix>.png/.pdf/.csv`` atomically.

    Replicates are drawn as mean ± sd (error bars only when there is more than one replicate).
    ``xscale``: "linear", "logit" or "auto" (:func:`lotto.composability.xscale_for` of the table's sparsity
    grid, so every figure of one run gets the same scale; the workflow passes the config grid's scale).
    ``context``: {"model", "dataset", "experiment"} for the title. Returns the three paths.
    """
    with style():
        fig = render(name, table, xscale=xscale, context=context)
        return save(fig, table, out_prefix)

