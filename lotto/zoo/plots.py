"""Figures of the zoo family from the tables of :mod:`lotto.zoo.analysis` (no torch, no pyplot state).

:func:`draw` writes ``<prefix>.png``, ``<prefix>.pdf`` and ``<prefix>.csv`` (the table it plots, every row,
every replicate) atomically. Lines are means over replicates with ± sd error bars where there are several;
heatmaps show means (and, for the transfer table, ± sd in the cell). Methods, handlings, tickets and tasks
carry their readable names (:mod:`lotto.names`); one colour per method in every panel; one legend per figure,
below its panels.
"""

from __future__ import annotations

from pathlib import Path

from lotto import figures as F  # first: selects Agg

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lotto.names import display  # noqa: E402
from lotto.zoo.similarity import NETWORK  # noqa: E402

ROUND = "pruning round"
JACCARD = "Jaccard distance"


# --------------------------------------------------------------------------- names
def _task(task, context) -> str:
    return display("task", task, (context or {}).get("tasks"))


def _layer(layer: str) -> str:
    return "whole network" if layer == NETWORK else str(layer).removesuffix(".weight")


def _name(kind: str, value, context) -> str:
    """A panel key part as a reader sees it."""
    if kind == "task":
        return _task(value, context)
    if kind == "iteration":
        return f"round {int(value)}"
    if kind == "pair":
        return value
    return display(kind, value)


def _panel_titles(keys: list[tuple], names: list[str], context) -> tuple[str, list[str]]:
    """(the parts every panel shares, for the figure's title; each panel's own title)."""
    shared, varies = F.varying(keys, names)
    common = " · ".join(_name(k, v, context) for k, v in shared.items())
    titles = [" · ".join(_name(n, k[names.index(n)], context) for n in varies) for k in keys]
    return common, titles


def _what(what: str, common: str) -> str:
    return f"{what} ({common})" if common else what


def _pair(t: pd.DataFrame, kind: str, context) -> pd.Series:
    return [f"{_name(kind, a, context)} vs {_name(kind, b, context)}" for a, b in zip(t["a"], t["b"])]


def _n(t: pd.DataFrame) -> int:
    return int(t["replicate"].nunique()) if "replicate" in t else 1


# --------------------------------------------------------------------------- lines over rounds
def _mean_sd(sub: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    g = sub.groupby(x)[y]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(), "n": g.size()}).reset_index()


def _rounds(ax, sub: pd.DataFrame, y: str, hue: str, styles: dict, dodge: float = 0.0, **kw) -> None:
    """One line per ``hue`` value over the rounds: the mean, ± sd error bars where there are several replicates;
    each line shifted by a little (``dodge`` rounds apart) so that error bars at one round stay apart."""
    keys = [k for k in styles if (sub[hue] == k).any()]
    bars = _n(sub) > 1
    for i, key in enumerate(keys):
        agg = _mean_sd(sub[sub[hue] == key], "iteration", y)
        shift = dodge * (i - (len(keys) - 1) / 2) if bars else 0.0
        yerr = agg["sd"].fillna(0).to_numpy() if bars else None
        ax.errorbar(agg["iteration"] + shift, agg["mean"], yerr=yerr, elinewidth=0.7, **{**styles[key], **kw})


def _handles(styles: dict, names: dict) -> list[Line2D]:
    return [Line2D([], [], label=names[k], **st) for k, st in styles.items()]


def _vs_iteration(t: pd.DataFrame, panel_keys: list[str], pair_kind: str, what: str, context) -> Figure:
    """Distance per round, one panel per (panel keys, pair), one line per layer (the whole network in black)."""
    t = t.assign(pair=_pair(t, pair_kind, context))
    names = panel_keys + ["pair"]
    keys = sorted({tuple(getattr(r, k) for k in names) for r in t.itertuples()})
    common, titles = _panel_titles(keys, names, context)
    fig, axes = F.panels(context, len(keys), sharex=True, sharey=True)
    layers = [layer for layer in dict.fromkeys(t["layer"]) if layer != NETWORK]
    styles = {layer: dict(st, linestyle="-") for layer, st in F.series_styles(layers).items()}
    if (t["layer"] == NETWORK).any():
        styles[NETWORK] = dict(color=F.DENSE_COLOR, marker="o", linestyle="-", linewidth=2.0)
    for ax, key, panel_title in zip(axes, keys, titles):
        sel = np.ones(len(t), bool)
        for k, v in zip(names, key):
            sel &= (t[k] == v).to_numpy()
        _rounds(ax, t[sel], "distance", "layer", styles, dodge=0.04)
        F.panel_title(ax, panel_title)
        ax.set_xlabel(ROUND)
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel(JACCARD)
    F.fit_ylim(axes[0], F.data_values(*axes), lower=0.0, upper=1.0)
    F.legend_below(fig, _handles(styles, {k: _layer(k) for k in styles}), title="layer")
    F.title(fig, _what(what, common), context, F.replicate_note(_n(t)))
    return fig


def _jaccard_handlings(t, context):
    return _vs_iteration(t, ["task", "method"], "handling",
                         "Masks found under different handlings of the surviving weights: distance per round", context)


def _jaccard_tasks(t, context):
    return _vs_iteration(t, ["method", "handling"], "task",
                         "Bespoke tickets of different tasks (one init): distance per round", context)


def _method_panels(t: pd.DataFrame, context):
    """One panel per (task, handling), one colour per method in all of them: (fig, [(ax, its rows, its title)],
    the title part every panel shares, {method: style})."""
    keys = sorted({(r.task, r.handling) for r in t.itertuples()})
    common, titles = _panel_titles(keys, ["task", "handling"], context)
    styles = F.series_styles(dict.fromkeys(t["method"]))
    fig, axes = F.panels(context, len(keys), sharex=True, sharey=True)
    panels = [(ax, t[(t["task"] == task) & (t["handling"] == handling)], title)
              for ax, (task, handling), title in zip(axes, keys, titles)]
    return fig, panels, common, styles


def _accuracy(t: pd.DataFrame, context) -> Figure:
    fig, panels, common, styles = _method_panels(t, context)
    axes = [p[0] for p in panels]
    dense_all = []
    for ax, sub, panel_title in panels:
        _rounds(ax, sub, "test_accuracy", "method", styles, dodge=0.06)
        # round 0 is the one dense network of the task, repeated for every method: one value per replicate
        dense = sub[sub["iteration"] == 0].drop_duplicates("replicate")["test_accuracy"]
        if len(dense):
            F.reference_line(ax, dense, "dense", F.DENSE_COLOR)
            dense_all.append(float(dense.mean()))
            panel_title = f"{panel_title}\n" if panel_title else ""
            panel_title += F.reference_label("dense", dense)
        F.panel_title(ax, panel_title)
        ax.set_xlabel(f"{ROUND} (0 = dense)")
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel("test accuracy")
    F.fit_ylim(axes[0], F.data_values(*axes), {"dense": dense_all}, upper=1.0)
    handles = _handles(styles, {m: display("method", m) for m in styles})
    handles.append(Line2D([], [], color=F.DENSE_COLOR, linestyle=":", label="dense network (value in the title)"))
    F.legend_below(fig, handles, title="pruning method")
    F.title(fig, _what("Test accuracy of iteratively pruned networks", common), context, F.replicate_note(_n(t)))
    return fig


def _effective(t: pd.DataFrame, context) -> Figure:
    fig, panels, common, styles = _method_panels(t, context)
    axes = [p[0] for p in panels]
    for ax, sub, panel_title in panels:
        _rounds(ax, sub, "remaining", "method", {m: dict(st, linestyle="-") for m, st in styles.items()})
        _rounds(ax, sub, "effective_remaining", "method",
                {m: dict(st, linestyle="--", marker=None) for m, st in styles.items()})
        F.plain_log_scale(ax)
        F.panel_title(ax, panel_title)
        ax.set_xlabel(ROUND)
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel("fraction of weights remaining")
    handles = _handles({m: dict(st, linestyle="-") for m, st in styles.items()},
                       {m: display("method", m) for m in styles})
    handles += [Line2D([], [], color="0.3", linestyle="-", label="explicit: kept by the mask"),
                Line2D([], [], color="0.3", linestyle="--", label="effective: kept and on an input-output path")]
    F.legend_below(fig, handles)
    F.title(fig, _what("Explicit vs effective remaining weights", common), context, F.replicate_note(_n(t)))
    return fig


def _stability(t: pd.DataFrame, context) -> Figure:
    task = t["task"].value_counts().index[0]
    t = t[t["task"] == task]
    methods = list(dict.fromkeys(t["method"]))
    layers = list(dict.fromkeys(t["layer"]))
    handlings = list(dict.fromkeys(t["handling"]))
    dashes = dict(zip(handlings, F.DASHES))
    width, wide = F.sizes(context)
    fig = F.new_figure((wide, len(methods) * 1.75 + 0.9))
    axes = fig.subplots(len(methods), 2, squeeze=False, sharex=True)
    styles = F.series_styles(layers)
    metrics = (("init_std_ratio", "std of kept weights at init\n/ std of the layer at init"),
               ("trained_absmean_kept", "mean |w| of kept\nweights after training"))
    for i, method in enumerate(methods):
        for j, (y, label) in enumerate(metrics):
            ax = axes[i, j]
            for h in handlings:
                sub = t[(t["method"] == method) & (t["handling"] == h)]
                _rounds(ax, sub, y, "layer", {layer: dict(st, linestyle=dashes[h]) for layer, st in styles.items()},
                        dodge=0.04)
            if y == "init_std_ratio":
                ax.axhline(1.0, color=F.CHANCE_COLOR, lw=0.8, ls=":", gid=F.REFERENCE)
            F.panel_title(ax, f"{display('method', method)}: {'at init' if j == 0 else 'after training'}")
            ax.set_ylabel(label)
            ax.set_xlabel(ROUND if i == len(methods) - 1 else "")
    handles = _handles({k: dict(st, linestyle="-") for k, st in styles.items()}, {k: _layer(k) for k in layers})
    if len(handlings) > 1:
        handles += [Line2D([], [], color="0.3", linestyle=dashes[h], label=display("handling", h)) for h in handlings]
    F.legend_below(fig, handles, title="layer" + (" and handling" if len(handlings) > 1 else ""))
    F.title(fig, f"Weight stability across rounds ({_task(task, context)}): the tickets' initial weights "
            "(dotted: as wide as the layer's) and their trained magnitude", context, F.replicate_note(_n(t)))
    return fig


# --------------------------------------------------------------------------- heatmaps
def _symmetric(df: pd.DataFrame, names: dict) -> pd.DataFrame:
    """Square matrix of mean distance over replicates from rows (a, b, distance), diagonal 0."""
    mean = df.groupby(["a", "b"], sort=False)["distance"].mean().reset_index()
    ids = list(dict.fromkeys(list(mean["a"]) + list(mean["b"])))
    mat = pd.DataFrame(0.0, index=ids, columns=ids)
    for a, b, d in mean.itertuples(index=False):
        mat.loc[a, b] = mat.loc[b, a] = d
    return mat.rename(index=names, columns=names)


def _heatmap_panels(context, n: int, rows: int, cols: int):
    """Panels for heatmaps of rows x cols cells (at most 2 a row) and one axes for their shared colour bar."""
    width, wide = F.sizes(context)
    ncols = min(n, 2)
    nrows = -(-n // ncols)
    fig_w = width if ncols == 1 else wide
    cell = min(0.42, (fig_w / ncols - 1.6) / max(cols, 1))
    fig = F.new_figure((fig_w, nrows * (rows * cell + 1.3) + 0.5))
    grid = fig.add_gridspec(nrows, ncols + 1, width_ratios=[1] * ncols + [0.05])
    axes = [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(n)]
    cax = fig.add_subplot(grid[:, ncols])
    return fig, axes, cax


def _jaccard_methods(t: pd.DataFrame, context) -> Figure:
    net = t[t["layer"] == NETWORK]
    keys = sorted({(r.task, r.handling, r.iteration) for r in net.itertuples()})
    common, titles = _panel_titles(keys, ["task", "handling", "iteration"], context)
    names = {m: display("method", m) for m in set(net["a"]) | set(net["b"])}
    n_methods = len(names)
    fig, axes, cax = _heatmap_panels(context, len(keys), n_methods, n_methods)
    for ax, (task, handling, it), panel_title in zip(axes, keys, titles):
        sub = net[(net["task"] == task) & (net["handling"] == handling) & (net["iteration"] == it)]
        F.heatmap(ax, _symmetric(sub, names), 0.0, 1.0, cbar_ax=cax, label=f"{JACCARD} of the kept weights")
        F.panel_title(ax, panel_title)
    F.title(fig, _what("Masks of different pruning methods, whole network", common), context,
            f"mean over {_n(t)} replicates" if _n(t) > 1 else "1 replicate")
    return fig


def _jaccard_layers(t: pd.DataFrame, context) -> Figure:
    keys = sorted({(r.task, r.handling, r.iteration) for r in t.itertuples()})
    common, titles = _panel_titles(keys, ["task", "handling", "iteration"], context)
    t = t.assign(pair=_pair(t, "method", context))
    layers = [layer for layer in dict.fromkeys(t["layer"]) if layer != NETWORK] + (
        [NETWORK] if (t["layer"] == NETWORK).any() else [])
    pairs = list(dict.fromkeys(t["pair"]))
    fig, axes, cax = _heatmap_panels(context, len(keys), len(pairs), len(layers))
    for ax, (task, handling, it), panel_title in zip(axes, keys, titles):
        sub = t[(t["task"] == task) & (t["handling"] == handling) & (t["iteration"] == it)]
        mat = sub.groupby(["pair", "layer"])["distance"].mean().unstack("layer")
        mat = mat.reindex(index=[p for p in pairs if p in mat.index], columns=[c for c in layers if c in mat.columns])
        F.heatmap(ax, mat.rename(columns=_layer), 0.0, 1.0, cbar_ax=cax, label=f"{JACCARD} of the kept weights")
        F.panel_title(ax, panel_title)
    F.title(fig, _what("Mask distance between pruning methods, per layer", common), context,
            f"mean over {_n(t)} replicates" if _n(t) > 1 else "1 replicate")
    return fig


def _transfer(t: pd.DataFrame, context) -> Figure:
    g = t.groupby(["ticket", "target"])["test_accuracy"]
    mean, sd = g.mean().unstack("target"), g.std().unstack("target")
    order = [i for i in mean.index if i.startswith("bespoke_")] + [i for i in mean.index if not i.startswith("bespoke_")]
    mean, sd = mean.loc[order], sd.loc[order]
    n = _n(t)
    annot = mean.map(lambda v: f"{v:.3f}")
    if n > 1:
        annot = annot + sd.map(lambda v: f"\n± {v:.3f}")
    sp = t.groupby("ticket")["sparsity"].mean()
    rows = [f"{display('ticket', i, (context or {}).get('tasks'))}\ns = {sp[i]:.2f}" for i in mean.index]
    cols = [_task(c, context) for c in mean.columns]
    width, wide = F.sizes(context)
    fig_w = width if len(cols) <= 3 else wide
    fig = F.new_figure((fig_w, 1.5 + 0.4 * len(rows)))
    ax = fig.subplots()
    mat = pd.DataFrame(mean.to_numpy(), index=rows, columns=cols)
    F.heatmap(ax, mat, annot=pd.DataFrame(annot.to_numpy(), index=rows, columns=cols), label="test accuracy")
    if max(len(c) for c in cols) <= 8:  # short names fit upright under their cells
        ax.tick_params(axis="x", labelrotation=0)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("center")
    ax.set_xlabel("retrained on (from the shared init)")
    F.title(fig, "Prêt-à-porter tickets: accuracy on every task", context, F.replicate_note(n))
    return fig


def _ensemble(t: pd.DataFrame, context) -> Figure:
    pairs = t[t["a"] != "all"]
    order = list(dict.fromkeys(pairs["a"]))
    names = {m: display("method", m) for m in order}
    agree = pairs.groupby(["a", "b"])["agreement"].mean().unstack("b").loc[order, order].rename(index=names,
                                                                                                 columns=names)
    acc = pairs.groupby(["a", "b"])["accuracy"].mean().unstack("b").loc[order, order].rename(index=names,
                                                                                              columns=names)
    whole = t.loc[t["a"] == "all", "accuracy"]
    width, wide = F.sizes(context)
    cell = min(0.42, (wide / 2 - 1.9) / max(len(order), 1))
    fig = F.new_figure((wide, len(order) * cell + 1.9))
    ax1, ax2 = fig.subplots(1, 2)
    F.heatmap(ax1, agree, vmax=1.0, label="fraction of test images, same class")
    F.heatmap(ax2, acc, label="test accuracy")
    ax1.set_title("prediction agreement")
    ax2.set_title("accuracy of the pair's averaged softmax\n(diagonal: the network alone)")
    task, handling, it = t["task"].iloc[0], t["handling"].iloc[0], t["iteration"].iloc[0]
    F.title(fig, f"Ensembles of the methods' round-{it} networks ({_task(task, context)}, "
            f"{display('handling', handling)}): all {len(order)} together {F.reference_label('', whole)[2:]}",
            context, f"mean over {_n(t)} replicates" if _n(t) > 1 else "1 replicate")
    return fig


_DRAW = {
    "zoo_jaccard_methods": _jaccard_methods,
    "zoo_jaccard_layers": _jaccard_layers,
    "zoo_jaccard_handlings": _jaccard_handlings,
    "zoo_jaccard_tasks": _jaccard_tasks,
    "zoo_effective": _effective,
    "zoo_accuracy": _accuracy,
    "zoo_stability": _stability,
    "zoo_transfer": _transfer,
    "zoo_ensemble": _ensemble,
}


def render(name: str, table: pd.DataFrame, context: dict | None = None) -> Figure:
    """Figure ``name`` of ``table``; ``context`` ({"model", "dataset", "tasks", "figure"}: see lotto.figures)
    names the run in the title and sets the size."""
    if name not in _DRAW:
        raise ValueError(f"unknown zoo figure {name!r}")
    if table.empty:
        raise ValueError(f"{name}: nothing to plot (empty table)")
    fig = _DRAW[name](table, context)
    for ax in fig.axes:  # rounds are whole numbers
        if ax.get_xlabel().startswith(ROUND) or (ax.get_shared_x_axes().get_siblings(ax) and any(
                a.get_xlabel().startswith(ROUND) for a in ax.get_shared_x_axes().get_siblings(ax))):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def draw(name: str, table: pd.DataFrame, out_prefix: str | Path, context: dict | None = None) -> dict[str, Path]:
    """Write figure ``name`` of ``table``: PNG, PDF and the table as CSV."""
    with F.style():
        return F.save(render(name, table, context), table, out_prefix)
