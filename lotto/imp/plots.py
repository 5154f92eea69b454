"""Seaborn figures of the IMP family (Paul et al. 2022) from the tables of :mod:`lotto.imp.analysis` (no torch).

:func:`draw` writes ``<prefix>.png``, ``.pdf`` and ``.csv`` (the table it plots) atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

from lotto.figures import add_context, new_figure, save, style  # first: selects the Agg backend

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _axes_grid(fig: Figure, n: int, ncols: int | None = None):
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return flat[:n]


def _draw_paths(t: pd.DataFrame, fig: Figure) -> None:
    taus = sorted(t["pretrain_steps"].unique())
    levels = sorted(t["level_a"].unique())
    colors = dict(zip(levels, sns.color_palette("viridis", len(levels))))
    axes = _axes_grid(fig, len(taus))
    for ax, tau in zip(axes, taus):
        sub = t[t["pretrain_steps"] == tau]
        for la in levels:
            g = sub[sub["level_a"] == la]
            if g.empty:
                continue
            agg = g.groupby("beta")["test_error"].agg(["mean", "std"]).reset_index()
            s_a, s_b = g["sparsity_a"].mean(), g["sparsity_b"].mean()
            ax.plot(agg["beta"], agg["mean"], color=colors[la], marker="o", markersize=3,
                    label=f"L{la}→L{la + 1} ({s_a:.0%}→{s_b:.0%})")
            if g["replicate"].nunique() > 1:
                ax.fill_between(agg["beta"], agg["mean"] - agg["std"], agg["mean"] + agg["std"], color=colors[la],
                                alpha=0.15, linewidth=0)
        thr = sub["matching_threshold"].iloc[0]
        if np.isfinite(thr):
            ax.axhline(thr, color="0.2", linestyle="--", linewidth=1.2,
                       label=f"matching: dense error + 1 sd ({thr:.3f} at τ = {tau})")
        ax.set_title(f"rewind step τ = {tau}")
        ax.set_xlabel("β  ((1-β) w_L + β w_{L+1})")
        ax.set_ylabel("test error")
        ax.set_xlim(0, 1)
    entries = {}  # every panel's entries, each once: the matching line differs per rewind point
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), title="levels (sparsity)", loc="outside right upper",
               frameon=False)
    n = t["replicate"].nunique()
    fig.suptitle(f"Error along linear paths between successive IMP levels ({_rep_note(n)})")


def _rep_note(n: int) -> str:
    return f"mean ± sd over {n} replicates" if n > 1 else "1 replicate"


def _draw_heatmap(t: pd.DataFrame, fig: Figure) -> None:
    taus = sorted(t["pretrain_steps"].unique())
    axes = _axes_grid(fig, len(taus))
    vmin, vmax = float(t["max_error"].min()), float(t["max_error"].max())
    for ax, tau in zip(axes, taus):
        sub = t[t["pretrain_steps"] == tau]
        mean = sub.groupby(["level_a", "level_b"])["max_error"].mean().reset_index()
        levels = sorted(set(mean["level_a"]) | set(mean["level_b"]))
        mat = pd.DataFrame(np.nan, index=levels, columns=levels)
        for _, r in mean.iterrows():
            mat.loc[r["level_a"], r["level_b"]] = mat.loc[r["level_b"], r["level_a"]] = r["max_error"]
        sns.heatmap(mat, ax=ax, vmin=vmin, vmax=max(vmax, vmin + 1e-6), cmap="rocket_r", square=True, annot=len(levels) <= 12,
                    fmt=".2f", annot_kws={"size": 7}, cbar_kws={"label": "max test error on the path"})
        ax.set_title(f"rewind step τ = {tau}; matching ≤ {sub['matching_threshold'].iloc[0]:.3f}")
        ax.set_xlabel("IMP level")
        ax.set_ylabel("IMP level")
    fig.suptitle(f"Maximum error on the linear path between IMP levels ({_rep_note(t['replicate'].nunique())})")


def _draw_slices(t: pd.DataFrame, fig: Figure) -> None:
    keys = sorted({(int(a), int(b), int(c)) for a, b, c in zip(t["pretrain_steps"], t["level"], t["replicate"])})
    axes = _axes_grid(fig, len(keys))
    marker = {"w_L": ("o", "w_L"), "m_next*w_L": ("s", "m_{L+1}⊙w_L"), "w_next": ("^", "w_{L+1}")}
    for ax, (tau, level, rep) in zip(axes, keys):
        sub = t[(t["pretrain_steps"] == tau) & (t["level"] == level) & (t["replicate"] == rep)]
        grid = sub[sub["point"].fillna("") == ""]
        mat = grid.pivot(index="y", columns="x", values="test_error")
        xs, ys = mat.columns.to_numpy(), mat.index.to_numpy()
        cs = ax.contourf(xs, ys, mat.to_numpy(), levels=20, cmap="rocket_r")
        fig.colorbar(cs, ax=ax, label="test error")
        thr = float(sub["matching_threshold"].iloc[0])
        z = mat.to_numpy()
        if np.isfinite(thr) and np.nanmin(z) <= thr <= np.nanmax(z):
            ax.contour(xs, ys, z, levels=[thr], colors="white", linewidths=1.6, linestyles="--")
        for _, p in sub[sub["point"].fillna("") != ""].iterrows():
            m, label = marker.get(p["point"], ("x", p["point"]))
            ax.plot(p["x"], p["y"], marker=m, color="cyan", markeredgecolor="black", markersize=8, linestyle="")
            ax.annotate(f"{label}\n{p['test_error']:.3f}", (p["x"], p["y"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=7, color="white")
        ax.set_title(f"τ = {tau}, level {level} → {level + 1} (rep {rep})")
        ax.set_xlabel("distance along m_{L+1}⊙w_L − w_L")
        ax.set_ylabel("orthogonal distance toward w_{L+1}")
        ax.set_aspect("equal", adjustable="box")
    fig.suptitle("Test error on the plane through w_L, m_{L+1}⊙w_L and w_{L+1} (dashed: matching threshold)")


def _draw_adaptive(t: pd.DataFrame, fig: Figure) -> None:
    ax_acc, ax_rounds = fig.subplots(1, 2)
    taus = sorted(t["pretrain_steps"].unique())
    style = {"fixed": ("-", "o"), "adaptive": ("--", "s")}
    colors = dict(zip(taus, sns.color_palette("colorblind", len(taus))))
    handles = []
    for tau in taus:
        for chain in ("fixed", "adaptive"):
            g = t[(t["pretrain_steps"] == tau) & (t["chain"] == chain)]
            if g.empty:
                continue
            agg = g.groupby("level").agg(s=("sparsity", "mean"), acc=("test_accuracy", "mean"),
                                         sd=("test_accuracy", "std")).reset_index()
            ls, mk = style[chain]
            yerr = agg["sd"].fillna(0).to_numpy() if g["replicate"].nunique() > 1 else None
            ax_acc.errorbar(agg["s"], agg["acc"], yerr=yerr, color=colors[tau], linestyle=ls, marker=mk,
                            markersize=4, capsize=2)
            ax_rounds.plot(agg["s"], agg["level"], color=colors[tau], linestyle=ls, marker=mk, markersize=4)
        thr = t.loc[t["pretrain_steps"] == tau, "matching_threshold"].iloc[0]
        handles.append(Line2D([], [], color=colors[tau], linewidth=3, label=f"τ = {tau}"))
        if np.isfinite(thr):
            ax_acc.axhline(1.0 - thr, color=colors[tau], linestyle=":", linewidth=1.2)
            handles.append(Line2D([], [], color=colors[tau], linestyle=":",
                                  label=f"matching at τ = {tau}: dense accuracy − 1 sd = {1.0 - thr:.3f}"))
    handles += [Line2D([], [], color="0.3", linestyle=ls, marker=mk, label=f"{chain} ratio")
                for chain, (ls, mk) in style.items()]
    ax_acc.set_xlabel("sparsity (fraction of weights pruned)")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("accuracy")
    ax_rounds.set_xlabel("sparsity (fraction of weights pruned)")
    ax_rounds.set_ylabel("retraining rounds (IMP level)")
    ax_rounds.set_title("retraining rounds")
    ax_rounds.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    fig.suptitle(f"Adaptive vs fixed pruning ratio ({_rep_note(t['replicate'].nunique())})")


_DRAW = {"imp_paths": (_draw_paths, (11, 4.2)), "imp_heatmap": (_draw_heatmap, (11, 4.6)),
         "imp_slices": (_draw_slices, (11, 4.6)), "imp_adaptive": (_draw_adaptive, (11, 4.4))}


def render(name: str, t: pd.DataFrame, context: dict | None = None) -> Figure:
    """Figure ``name`` of ``t``; ``context`` ({"model", "dataset", "experiment"}) goes into the title."""
    if t.empty:
        raise ValueError(f"{name}: table is empty, nothing to plot")
    draw_fn, (w, h) = _DRAW[name]
    if name in ("imp_slices", "imp_heatmap", "imp_paths"):
        # panels: one per rewind point (per sliced level and rewind point), at most 3 a row
        n = t.groupby(["pretrain_steps", "level"]).ngroups if name == "imp_slices" else t["pretrain_steps"].nunique()
        w = 4.6 * min(n, 3) + (2.6 if name == "imp_paths" else 1.4)
        h = h * math.ceil(n / 3)
    fig = new_figure((w, h))
    draw_fn(t, fig)
    add_context(fig, context)
    return fig


def draw(name: str, t: pd.DataFrame, out_prefix: str | Path, context: dict | None = None) -> dict[str, Path]:
    """Write figure ``name`` of ``t``: PNG, PDF and the table as CSV."""
    with style(font_scale=0.8):
        return save(render(name, t, context), t, out_prefix)
