"""Figures of the IMP family (Paul et al. 2022) from the tables of :mod:`lotto.imp.analysis` (no torch).

:func:`draw` writes ``<prefix>.png``, ``.pdf`` and ``.csv`` (the table it plots) atomically. Means over
replicates with ± sd error bars where there are several; IMP levels are an ordered quantity and get the
sequential colour map with a colour bar (not a legend entry per level); symbols are typeset as math.
"""

from __future__ import annotations

from pathlib import Path

from lotto import figures as F  # first: selects the Agg backend

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lotto.names import display  # noqa: E402

PATH_X = r"$\beta$ on the path $(1-\beta)\,w_L + \beta\,w_{L+1}$"
SPARSITY = "sparsity (fraction of weights pruned)"


def _tau(tau) -> str:
    return rf"$\tau$ = {int(tau)}"


def _rep_note(n: int) -> str:
    return F.replicate_note(n)


def _matching_title(tau, thr) -> str:
    return f"{_tau(tau)} · matching: error ≤ {thr:.3f}" if np.isfinite(thr) else _tau(tau)


def _draw_paths(t: pd.DataFrame, context) -> Figure:
    taus = sorted(t["pretrain_steps"].unique())
    levels = sorted(t["level_a"].unique())
    fig, axes = F.panels(context, len(taus), sharex=True, sharey=True, extra_height=0.75)
    # one colour per level from the sequential map, and a colour bar that names each level's sparsity
    cmap = matplotlib.colormaps[F.SEQUENTIAL]
    bounds = np.arange(len(levels) + 1) - 0.5
    norm = BoundaryNorm(bounds, cmap.N)
    color = {la: cmap(norm(i)) for i, la in enumerate(levels)}
    several = t["replicate"].nunique() > 1
    thresholds = []
    for ax, tau in zip(axes, taus):
        sub = t[t["pretrain_steps"] == tau]
        for la in levels:
            g = sub[sub["level_a"] == la]
            if g.empty:
                continue
            agg = g.groupby("beta")["test_error"].agg(["mean", "std"]).reset_index()
            ax.errorbar(agg["beta"], agg["mean"], yerr=agg["std"].fillna(0) if several else None, color=color[la],
                        marker="o", markersize=2.5, linewidth=1.0, elinewidth=0.6)
        thr = float(sub["matching_threshold"].iloc[0])
        if np.isfinite(thr):
            ax.axhline(thr, color=F.DENSE_COLOR, linestyle="--", linewidth=1.0, zorder=1, gid=F.REFERENCE)
            thresholds.append(thr)
        F.panel_title(ax, _matching_title(tau, thr))
        ax.set_xlabel(PATH_X)
        ax.set_xlim(-0.03, 1.03)
    axes[0].set_ylabel("test error")
    F.fit_ylim(axes[0], F.data_values(*axes), {"matching": thresholds}, lower=0.0)
    sparsity = t.groupby("level_a")["sparsity_a"].mean()
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, ticks=np.arange(len(levels)), fraction=0.04, pad=0.02, aspect=25)
    step = max(1, int(np.ceil(len(levels) / 12)))  # at most ~12 labels: 7 pt text needs the room
    bar.set_ticks(np.arange(0, len(levels), step))
    bar.set_ticklabels([f"{levels[i]} ({sparsity[levels[i]]:.0%})" for i in range(0, len(levels), step)])
    bar.set_label(r"path from level $L$ (sparsity of $w_L$)")
    handles = [Line2D([], [], color=F.DENSE_COLOR, linestyle="--",
                      label="matching threshold: dense error + 1 sd (value in the title)")]
    F.legend_below(fig, handles)
    F.title(fig, "Test error along linear paths between successive IMP levels", context,
            _rep_note(t["replicate"].nunique()))
    return fig


def _draw_heatmap(t: pd.DataFrame, context) -> Figure:
    taus = sorted(t["pretrain_steps"].unique())
    levels = sorted(set(t["level_a"]) | set(t["level_b"]))
    width, wide = F.sizes(context)
    ncols = min(len(taus), 2)
    nrows = -(-len(taus) // ncols)
    fig_w = width if ncols == 1 else wide
    cell = min(0.4, (fig_w / ncols - 1.2) / len(levels))
    fig = F.new_figure((fig_w, nrows * (len(levels) * cell + 0.9) + 0.6))
    grid = fig.add_gridspec(nrows, ncols + 1, width_ratios=[1] * ncols + [0.05])
    axes = [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(len(taus))]
    cax = fig.add_subplot(grid[:, ncols])
    vmin, vmax = float(t["max_error"].min()), float(t["max_error"].max())
    for ax, tau in zip(axes, taus):
        sub = t[t["pretrain_steps"] == tau]
        mean = sub.groupby(["level_a", "level_b"])["max_error"].mean().reset_index()
        mat = pd.DataFrame(np.nan, index=levels, columns=levels)
        for _, r in mean.iterrows():
            mat.loc[r["level_a"], r["level_b"]] = mat.loc[r["level_b"], r["level_a"]] = r["max_error"]
        F.heatmap(ax, mat, vmin, max(vmax, vmin + 1e-6), annot=len(levels) <= 8, cbar_ax=cax,
                  label="max test error on the path")
        F.panel_title(ax, _matching_title(tau, float(sub["matching_threshold"].iloc[0])))
        ax.set_xlabel("IMP level")
        ax.set_ylabel("IMP level")
        ax.tick_params(axis="x", labelrotation=0)
    F.title(fig, "Maximum test error on the linear path between two IMP levels", context,
            _rep_note(t["replicate"].nunique()).replace("mean ± sd", "mean"))
    return fig


def _draw_slices(t: pd.DataFrame, context) -> Figure:
    keys = sorted({(int(a), int(b), int(c)) for a, b, c in zip(t["pretrain_steps"], t["level"], t["replicate"])})
    # equal scales on both axes (distances in weight space): panels as high as the planes are
    spans = t.groupby(["pretrain_steps", "level", "replicate"]).agg(
        dx=("x", lambda v: v.max() - v.min()), dy=("y", lambda v: v.max() - v.min()))
    aspect = float(np.clip((spans["dy"] / spans["dx"].where(spans["dx"] > 0)).max(), 0.3, 1.5))
    fig, axes = F.panels(context, len(keys), aspect=aspect * 0.8, extra_height=1.0)
    marker = {"w_L": ("o", "$w_L$"), "m_next*w_L": ("s", r"$m_{L+1}\odot w_L$"), "w_next": ("^", "$w_{L+1}$")}
    for ax, (tau, level, rep) in zip(axes, keys):
        sub = t[(t["pretrain_steps"] == tau) & (t["level"] == level) & (t["replicate"] == rep)]
        grid = sub[sub["point"].fillna("") == ""]
        mat = grid.pivot(index="y", columns="x", values="test_error")
        xs, ys = mat.columns.to_numpy(), mat.index.to_numpy()
        cs = ax.contourf(xs, ys, mat.to_numpy(), levels=20, cmap=F.SEQUENTIAL)
        fig.colorbar(cs, ax=ax, label="test error", fraction=0.05, pad=0.03)
        thr = float(sub["matching_threshold"].iloc[0])
        z = mat.to_numpy()
        if np.isfinite(thr) and np.nanmin(z) <= thr <= np.nanmax(z):
            ax.contour(xs, ys, z, levels=[thr], colors="white", linewidths=1.2, linestyles="--")
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        for _, p in sub[sub["point"].fillna("") != ""].iterrows():
            m, label = marker.get(p["point"], ("x", p["point"]))
            ax.plot(p["x"], p["y"], marker=m, color="white", markeredgecolor="black", markersize=5, linestyle="")
            # the label toward the plane's middle, so that it stays on the panel
            right, up = p["x"] <= cx, p["y"] <= cy
            ax.annotate(f"{label}\n{p['test_error']:.3f}", (p["x"], p["y"]), textcoords="offset points",
                        xytext=(4 if right else -4, 4 if up else -4), ha="left" if right else "right",
                        va="bottom" if up else "top", fontsize=F.SMALL_PT, color="black", linespacing=1.0,
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8))
        F.panel_title(ax, f"{_tau(tau)} · level {level} → {level + 1} · replicate {rep}")
        ax.set_xlabel(r"along $m_{L+1}\odot w_L - w_L$")
        ax.set_ylabel(r"toward $w_{L+1}$")
        ax.set_aspect("equal", adjustable="box")
    F.title(fig, r"Test error on the plane through $w_L$, $m_{L+1}\odot w_L$ and $w_{L+1}$ (distances in "
            "weight space; dashed: the matching threshold)", context)
    return fig


def _draw_adaptive(t: pd.DataFrame, context) -> Figure:
    fig, (ax_acc, ax_rounds) = F.panels(context, 2)
    taus = sorted(t["pretrain_steps"].unique())
    chains = {"fixed": ("-", "o"), "adaptive": ("--", "s")}
    colors = F.colors(taus)
    several = t["replicate"].nunique() > 1
    handles, thresholds = [], []
    for tau in taus:
        for chain, (ls, mk) in chains.items():
            g = t[(t["pretrain_steps"] == tau) & (t["chain"] == chain)]
            if g.empty:
                continue
            agg = g.groupby("level").agg(s=("sparsity", "mean"), acc=("test_accuracy", "mean"),
                                         sd=("test_accuracy", "std")).reset_index()
            ax_acc.errorbar(agg["s"], agg["acc"], yerr=agg["sd"].fillna(0).to_numpy() if several else None,
                            color=colors[tau], linestyle=ls, marker=mk, elinewidth=0.7)
            ax_rounds.plot(agg["s"], agg["level"], color=colors[tau], linestyle=ls, marker=mk)
        handles.append(Line2D([], [], color=colors[tau], linewidth=3, label=_tau(tau)))
        thr = t.loc[t["pretrain_steps"] == tau, "matching_threshold"].iloc[0]
        if np.isfinite(thr):
            ax_acc.axhline(1.0 - thr, color=colors[tau], linestyle=":", linewidth=1.0, gid=F.REFERENCE)
            thresholds.append(1.0 - thr)
            handles.append(Line2D([], [], color=colors[tau], linestyle=":",
                                  label=f"matching at {_tau(tau)}: dense accuracy − 1 sd = {1.0 - thr:.3f}"))
    handles += [Line2D([], [], color="0.3", linestyle=ls, marker=mk, label=display("chain", chain))
                for chain, (ls, mk) in chains.items()]
    hidden = F.fit_ylim(ax_acc, F.data_values(ax_acc), {i: [v] for i, v in enumerate(thresholds)}, upper=1.0)
    if hidden:
        for h in handles:
            if h.get_label().startswith("matching"):
                value = float(h.get_label().rsplit("= ", 1)[1])
                h.set_label(F.off_plot(h.get_label(), [value], ax_acc))
    for ax in (ax_acc, ax_rounds):
        ax.set_xlabel(SPARSITY)
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("accuracy")
    ax_rounds.set_ylabel("retraining rounds (IMP level)")
    ax_rounds.set_title("retraining rounds")
    ax_rounds.yaxis.set_major_locator(MaxNLocator(integer=True))
    F.legend_below(fig, handles)
    F.title(fig, "Adaptive vs fixed pruning ratio", context, _rep_note(t["replicate"].nunique()))
    return fig


_DRAW = {"imp_paths": _draw_paths, "imp_heatmap": _draw_heatmap, "imp_slices": _draw_slices,
         "imp_adaptive": _draw_adaptive}


def render(name: str, t: pd.DataFrame, context: dict | None = None) -> Figure:
    """Figure ``name`` of ``t``; ``context`` ({"model", "dataset", "figure"}: see lotto.figures) names the run in
    the title and sets the size."""
    if name not in _DRAW:
        raise ValueError(f"unknown IMP figure {name!r}")
    if t.empty:
        raise ValueError(f"{name}: table is empty, nothing to plot")
    return _DRAW[name](t, context)


def draw(name: str, t: pd.DataFrame, out_prefix: str | Path, context: dict | None = None) -> dict[str, Path]:
    """Write figure ``name`` of ``t``: PNG, PDF and the table as CSV."""
    with F.style():
        return F.save(render(name, t, context), t, out_prefix)
