"""Seaborn figures of the zoo family from the tables of :mod:`lotto.zoo.analysis` (no torch, no pyplot state).

:func:`draw` writes ``<prefix>.png``, ``<prefix>.pdf`` and ``<prefix>.csv`` (the table it plots, every row,
every replicate) atomically. Means over replicates are plotted.
"""

from __future__ import annotations

import math
from pathlib import Path

from lotto.figures import add_context, new_figure, reference_line, save, style  # first: selects Agg

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lotto.zoo.similarity import NETWORK  # noqa: E402

def _grid(n: int, ncols: int = 3, size=(4.2, 3.4)):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = new_figure((size[0] * ncols, size[1] * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _symmetric(df: pd.DataFrame) -> pd.DataFrame:
    """Square matrix of mean distance over replicates from rows (a, b, distance), diagonal 0."""
    mean = df.groupby(["a", "b"], sort=False)["distance"].mean().reset_index()
    names = list(dict.fromkeys(list(mean["a"]) + list(mean["b"])))
    mat = pd.DataFrame(0.0, index=names, columns=names)
    for a, b, d in mean.itertuples(index=False):
        mat.loc[a, b] = mat.loc[b, a] = d
    return mat


def _heatmap(ax, mat: pd.DataFrame, title: str, label: str, vmin=0.0, vmax=1.0, cmap="viridis"):
    sns.heatmap(mat, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, annot=mat.shape[0] <= 10, fmt=".2f", square=True,
                cbar_kws={"label": label})
    ax.set_title(title)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)


def _jaccard_methods(t: pd.DataFrame) -> Figure:
    net = t[t["layer"] == NETWORK]
    keys = sorted({(r.task, r.handling, r.iteration) for r in net.itertuples()})
    fig, axes = _grid(len(keys))
    for ax, (task, handling, it) in zip(axes, keys):
        sub = net[(net["task"] == task) & (net["handling"] == handling) & (net["iteration"] == it)]
        _heatmap(ax, _symmetric(sub), f"{task}, {handling}, round {it}", "Jaccard distance of kept weights")
    fig.suptitle("Masks of different pruning methods (whole network)")
    return fig


def _pair(t: pd.DataFrame) -> pd.Series:
    return t["a"].astype(str) + " vs " + t["b"].astype(str)


def _jaccard_layers(t: pd.DataFrame) -> Figure:
    t = t.assign(pair=_pair(t))
    keys = sorted({(r.task, r.handling, r.iteration) for r in t.itertuples()})
    fig, axes = _grid(len(keys), ncols=2, size=(6.5, 4.0))
    for ax, (task, handling, it) in zip(axes, keys):
        sub = t[(t["task"] == task) & (t["handling"] == handling) & (t["iteration"] == it)]
        sns.pointplot(sub, x="layer", y="distance", hue="pair", ax=ax, errorbar=None, markersize=4,
                      linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("Jaccard distance of kept weights")
        ax.set_title(f"{task}, {handling}, round {it}")
        ax.tick_params(axis="x", labelrotation=45)
        ax.legend(fontsize="x-small", title=None)
    fig.suptitle("Per-layer mask distance between pruning methods")
    return fig


def _vs_iteration(t: pd.DataFrame, panel_keys: list[str], title: str) -> Figure:
    t = t.assign(pair=_pair(t))
    keys = sorted({tuple(getattr(r, k) for k in panel_keys) + (r.pair,) for r in t.itertuples()})
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        sel = np.ones(len(t), bool)
        for k, v in zip(panel_keys + ["pair"], key):
            sel &= (t[k] == v).to_numpy()
        sub = t[sel]
        sns.lineplot(sub, x="iteration", y="distance", hue="layer", ax=ax, marker="o", errorbar=None)
        for line, label in zip(ax.get_lines(), sub["layer"].unique()):
            if label == NETWORK:
                line.set_linewidth(2.5)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("pruning round")
        ax.set_ylabel("Jaccard distance of kept weights")
        ax.set_title(", ".join(str(k) for k in key))
        ax.legend(fontsize="x-small", title=None)
    fig.suptitle(title)
    return fig


def _effective(t: pd.DataFrame) -> Figure:
    keys = sorted({(r.task, r.handling) for r in t.itertuples()})
    fig, axes = _grid(len(keys))
    long = pd.concat([
        t.assign(kind="explicit", value=t["remaining"]),
        t.assign(kind="effective", value=t["effective_remaining"]),
    ])
    for ax, (task, handling) in zip(axes, keys):
        sub = long[(long["task"] == task) & (long["handling"] == handling)]
        sns.lineplot(sub, x="iteration", y="value", hue="method", style="kind", style_order=["explicit", "effective"],
                     ax=ax, marker="o", errorbar=None)
        ax.set_yscale("log")
        ax.set_xlabel("pruning round")
        ax.set_ylabel("fraction of weights remaining")
        ax.set_title(f"{task}, {handling}")
        ax.legend(fontsize="x-small", title=None)
    fig.suptitle("Explicit (solid) vs effective (dashed) remaining weights; effective = on some input-output path")
    return fig


def _accuracy(t: pd.DataFrame) -> Figure:
    keys = sorted({(r.task, r.handling) for r in t.itertuples()})
    fig, axes = _grid(len(keys))
    for ax, (task, handling) in zip(axes, keys):
        sub = t[(t["task"] == task) & (t["handling"] == handling)]
        sns.lineplot(sub, x="iteration", y="test_accuracy", hue="method", ax=ax, marker="o", errorbar=None)
        # round 0 is the one dense network of the task, repeated for every method: one value per replicate
        dense = sub[sub["iteration"] == 0].drop_duplicates("replicate")
        if len(dense):
            reference_line(ax, dense["test_accuracy"], "dense (round 0)", "0.3")
        ax.set_xlabel("pruning round (0 = dense)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{task}, {handling}")
        ax.legend(fontsize="x-small", title=None)
    fig.suptitle("Test accuracy of iteratively pruned networks")
    return fig


def _stability(t: pd.DataFrame) -> Figure:
    task = t["task"].value_counts().index[0]
    t = t[t["task"] == task]
    methods = list(dict.fromkeys(t["method"]))
    fig = new_figure((4.2 * len(methods), 6.8))
    axes = fig.subplots(2, len(methods), squeeze=False)
    for j, method in enumerate(methods):
        sub = t[t["method"] == method]
        style = "handling" if sub["handling"].nunique() > 1 else None
        sns.lineplot(sub, x="iteration", y="init_std_ratio", hue="layer", style=style, ax=axes[0, j], marker="o",
                     errorbar=None, legend=j == 0)
        axes[0, j].axhline(1.0, color="0.5", lw=0.8, ls=":")
        axes[0, j].set_title(f"{task}, {method}")
        axes[0, j].set_ylabel("std of ticket weights at init\n/ std of the layer at init")
        sns.lineplot(sub, x="iteration", y="trained_absmean_kept", hue="layer", style=style, ax=axes[1, j],
                     marker="o", errorbar=None, legend=False)
        axes[1, j].set_ylabel("mean |w| of kept weights after training")
        for ax in axes[:, j]:
            ax.set_xlabel("pruning round")
    if axes[0, 0].get_legend():
        axes[0, 0].legend(fontsize="x-small", title=None)
    fig.suptitle("Weight stability: initial values of ticket weights and trained values across rounds")
    return fig


def _transfer(t: pd.DataFrame) -> Figure:
    mat = t.groupby(["ticket", "target"])["test_accuracy"].mean().unstack("target")
    order = [i for i in mat.index if i.startswith("bespoke_")] + [i for i in mat.index if not i.startswith("bespoke_")]
    mat = mat.loc[order]
    fig = new_figure((2.0 + 1.6 * mat.shape[1], 1.5 + 0.7 * mat.shape[0]))
    ax = fig.subplots()
    sns.heatmap(mat, ax=ax, annot=True, fmt=".3f", cmap="magma", cbar_kws={"label": "test accuracy"})
    sp = t.groupby("ticket")["sparsity"].mean()
    ax.set_yticklabels([f"{i} (s={sp[i]:.3f})" for i in mat.index], rotation=0)
    ax.set_xlabel("task the ticket is retrained on (from the shared init)")
    ax.set_ylabel("ticket")
    fig.suptitle("Pret-a-porter tickets: transfer accuracy")
    return fig


def _ensemble(t: pd.DataFrame) -> Figure:
    rep = t["replicate"].iloc[0]
    t = t[t["replicate"] == rep]
    pairs = t[t["a"] != "all"]
    agree = pairs.pivot(index="a", columns="b", values="agreement")
    acc = pairs.pivot(index="a", columns="b", values="accuracy")
    order = list(dict.fromkeys(pairs["a"]))
    agree, acc = agree.loc[order, order], acc.loc[order, order]
    whole = float(t.loc[t["a"] == "all", "accuracy"].iloc[0])
    fig = new_figure((2.5 + 2.2 * len(order), 1.8 + 0.55 * len(order)))
    ax1, ax2 = fig.subplots(1, 2)
    _heatmap(ax1, agree, "prediction agreement", "fraction of test images, same class", vmin=None, vmax=1.0)
    _heatmap(ax2, acc, "accuracy of the pair's averaged softmax\n(diagonal: the network alone)", "test accuracy",
             vmin=None, vmax=None, cmap="magma")
    task, handling, it = t["task"].iloc[0], t["handling"].iloc[0], t["iteration"].iloc[0]
    fig.suptitle(f"Ensembles of the methods' round-{it} networks ({task}, {handling}, replicate {rep}): "
                 f"all {len(order)} together {whole:.3f}")
    return fig


_DRAW = {
    "zoo_jaccard_methods": _jaccard_methods,
    "zoo_jaccard_layers": _jaccard_layers,
    "zoo_jaccard_handlings": lambda t: _vs_iteration(
        t, ["task", "method"], "Masks under different handlings of the surviving weights, per round"),
    "zoo_jaccard_tasks": lambda t: _vs_iteration(
        t, ["method", "handling"], "Bespoke tickets of different tasks (same init), per round"),
    "zoo_effective": _effective,
    "zoo_accuracy": _accuracy,
    "zoo_stability": _stability,
    "zoo_transfer": _transfer,
    "zoo_ensemble": _ensemble,
}


def render(name: str, table: pd.DataFrame, context: dict | None = None) -> Figure:
    """Figure ``name`` of ``table``; ``context`` ({"model", "dataset", "experiment"}) goes into the title."""
    if name not in _DRAW:
        raise ValueError(f"unknown zoo figure {name!r}")
    if table.empty:
        raise ValueError(f"{name}: nothing to plot (empty table)")
    fig = _DRAW[name](table)
    add_context(fig, context)
    for ax in fig.axes:  # rounds are whole numbers
        if ax.get_xlabel().startswith("pruning round"):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def draw(name: str, table: pd.DataFrame, out_prefix: str | Path, context: dict | None = None) -> dict[str, Path]:
    """Write figure ``name`` of ``table``: PNG, PDF and the table as CSV."""
    with style(font_scale=0.8):
        return save(render(name, table, context), table, out_prefix)
