"""Tables and seaborn figures of the IMP family (Paul et al. 2022); no torch.

:func:`load` sorts the JSON records the IMP rules write (level ``metrics.json``, ``imp-path`` and
``imp-slice`` records, adaptive pruning records); :func:`table` builds the tidy table a figure plots (also
its CSV); :func:`draw` writes ``<prefix>.png``, ``.pdf`` and ``.csv`` atomically.

Matching (Paul et al.): a network is matching when its test error is at most the dense network's mean
error plus one standard deviation across replicates (sd taken as 0 with a single replicate). The dense
network of rewind point tau is level 0 of the fixed chain.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Iterable

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # seaborn imports pyplot: never let it pick a GUI backend
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lotto.plots import DPI, save  # noqa: E402

FIGURES = {
    "imp_paths": "test error along the linear path between successive IMP levels, one panel per rewind point",
    "imp_heatmap": "maximum test error on the linear path between every pair of IMP levels",
    "imp_slices": "test error on the plane through w_L, m_{L+1} * w_L and w_{L+1}, with the matching contour",
    "imp_adaptive": "test accuracy and retraining rounds vs sparsity: adaptive pruning ratio vs fixed ratio",
}


# --------------------------------------------------------------------------- records
def load(paths: Iterable[str | Path]) -> dict[str, list[dict]]:
    out = {"metrics": [], "path": [], "slice": [], "prune": []}
    seen = set()
    for p in paths:
        p = Path(p)
        if p.resolve() in seen:  # a record named twice counts once
            continue
        seen.add(p.resolve())
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{p}: not a readable JSON record ({exc})") from None
        kind = rec.get("kind")
        if kind == "imp-path":
            out["path"].append(rec)
        elif kind == "imp-slice":
            out["slice"].append(rec)
        elif kind == "imp-adaptive-prune":
            out["prune"].append(rec)
        elif "test_accuracy" in rec:
            for key in ("replicate", "pretrain_steps", "chain", "level"):
                if key not in rec:
                    raise ValueError(f"{p}: level metrics lack the label {key!r}")
            out["metrics"].append(rec)
        else:
            raise ValueError(f"{p}: not an IMP record (no 'kind' and no test_accuracy)")
    return out


def levels_frame(records: dict) -> pd.DataFrame:
    rows = [{"chain": r["chain"], "replicate": int(r["replicate"]), "pretrain_steps": int(r["pretrain_steps"]),
             "level": int(r["level"]), "sparsity": float(r["sparsity"]), "test_accuracy": float(r["test_accuracy"]),
             "test_error": 1.0 - float(r["test_accuracy"])} for r in records["metrics"]]
    cols = ["chain", "replicate", "pretrain_steps", "level", "sparsity", "test_accuracy", "test_error"]
    return pd.DataFrame(rows, columns=cols).sort_values(cols[:4], kind="stable").reset_index(drop=True)


def matching_thresholds(records: dict) -> dict[int, float]:
    """Rewind point -> dense mean test error + sd across replicates (sd = 0 for one replicate)."""
    lv = levels_frame(records)
    dense = lv[(lv["level"] == 0)].drop_duplicates(["replicate", "pretrain_steps"])
    out = {}
    for tau, g in dense.groupby("pretrain_steps"):
        sd = float(g["test_error"].std(ddof=1)) if len(g) > 1 else 0.0
        out[int(tau)] = float(g["test_error"].mean()) + sd
    return out


def _need(records: dict, key: str, name: str) -> None:
    if not records[key]:
        raise ValueError(f"{name}: no {key} records among the inputs")


# --------------------------------------------------------------------------- tables
def table(name: str, records: dict) -> pd.DataFrame:
    if name not in FIGURES:
        raise ValueError(f"unknown IMP figure {name!r}; known: {list(FIGURES)}")
    return {"imp_paths": _paths_table, "imp_heatmap": _heatmap_table, "imp_slices": _slices_table,
            "imp_adaptive": _adaptive_table}[name](records)


def _with_threshold(df: pd.DataFrame, records: dict) -> pd.DataFrame:
    thr = matching_thresholds(records)
    df["matching_threshold"] = [thr.get(int(t), math.nan) for t in df["pretrain_steps"]]
    return df


def _paths_table(records: dict) -> pd.DataFrame:
    _need(records, "path", "imp_paths")
    rows = []
    for r in records["path"]:
        for beta, err, loss in zip(r["beta"], r["test_error"], r["test_loss"]):
            rows.append({"replicate": int(r["replicate"]), "pretrain_steps": int(r["pretrain_steps"]),
                         "level_a": int(r["level_a"]), "level_b": int(r["level_b"]), "beta": float(beta),
                         "test_error": float(err), "test_loss": float(loss), "barrier": float(r["barrier"]),
                         "sparsity_a": float(r["sparsity_a"]), "sparsity_b": float(r["sparsity_b"])})
    df = pd.DataFrame(rows).sort_values(["pretrain_steps", "level_a", "replicate", "beta"], kind="stable")
    return _with_threshold(df.reset_index(drop=True), records)


def _heatmap_table(records: dict) -> pd.DataFrame:
    _need(records, "path", "imp_heatmap")
    rows = [{"replicate": int(r["replicate"]), "pretrain_steps": int(r["pretrain_steps"]),
             "level_a": int(r["level_a"]), "level_b": int(r["level_b"]), "max_error": float(r["max_error"]),
             "barrier": float(r["barrier"])} for r in records["path"]]
    taus = {row["pretrain_steps"] for row in rows}
    lv = levels_frame(records)
    # the diagonal: a level against itself is just its own error
    for _, m in lv[(lv["chain"] == "fixed") & lv["pretrain_steps"].isin(taus)].iterrows():
        rows.append({"replicate": int(m["replicate"]), "pretrain_steps": int(m["pretrain_steps"]),
                     "level_a": int(m["level"]), "level_b": int(m["level"]), "max_error": float(m["test_error"]),
                     "barrier": 0.0})
    df = pd.DataFrame(rows).sort_values(["pretrain_steps", "level_a", "level_b", "replicate"], kind="stable")
    return _with_threshold(df.reset_index(drop=True), records)


def _slices_table(records: dict) -> pd.DataFrame:
    _need(records, "slice", "imp_slices")
    rows = []
    for r in records["slice"]:
        base = {"replicate": int(r["replicate"]), "pretrain_steps": int(r["pretrain_steps"]), "level": int(r["level"])}
        err, loss = np.asarray(r["test_error"]), np.asarray(r["test_loss"])
        for i, y in enumerate(r["y"]):
            for j, x in enumerate(r["x"]):
                rows.append({**base, "point": "", "x": float(x), "y": float(y), "test_error": float(err[i, j]),
                             "test_loss": float(loss[i, j])})
        for point, (x, y) in r["points"].items():
            rows.append({**base, "point": point, "x": float(x), "y": float(y),
                         "test_error": float(r["point_errors"][point]), "test_loss": math.nan})
    df = pd.DataFrame(rows)
    return _with_threshold(df, records)


def _adaptive_table(records: dict) -> pd.DataFrame:
    lv = levels_frame(records)
    if not (lv["chain"] == "adaptive").any():
        raise ValueError("imp_adaptive: no adaptive-chain level metrics among the inputs")
    taus = set(lv.loc[lv["chain"] == "adaptive", "pretrain_steps"])
    dense = lv[(lv["level"] == 0) & lv["pretrain_steps"].isin(taus)]
    # level 0 is shared: it starts both chains
    parts = [lv[lv["pretrain_steps"].isin(taus) & (lv["chain"] == "fixed")],
             dense.assign(chain="adaptive"), lv[lv["chain"] == "adaptive"]]
    df = pd.concat(parts).drop_duplicates(["chain", "replicate", "pretrain_steps", "level"])
    df = df.sort_values(["chain", "pretrain_steps", "replicate", "level"], kind="stable").reset_index(drop=True)
    df["retrain_rounds"] = df["level"]
    prev = df.groupby(["chain", "pretrain_steps", "replicate"])["sparsity"].shift(1)
    df["pruned_fraction"] = 1.0 - (1.0 - df["sparsity"]) / (1.0 - prev)
    best = {(int(r["replicate"]), int(r["pretrain_steps"]), int(r["level"])): float(r["best_ratio"])
            for r in records["prune"]}
    df["best_ratio"] = [best.get((r, t, lvl), math.nan) if c == "adaptive" else math.nan
                        for c, r, t, lvl in zip(df["chain"], df["replicate"], df["pretrain_steps"], df["level"])]
    return _with_threshold(df, records)


def rounds_to_reach(sparsities: list[float], target: float) -> int | None:
    """Retraining rounds (= the level index) of the first level at or beyond ``target`` sparsity, or None."""
    for level, s in enumerate(sparsities):
        if s >= target - 1e-12:
            return level
    return None


def rounds_table(records: dict, target: float) -> pd.DataFrame:
    """Per chain, rewind point and replicate: retraining rounds to reach ``target`` sparsity, accuracy there."""
    df = _adaptive_table(records)
    rows = []
    for (chain, tau, rep), g in df.groupby(["chain", "pretrain_steps", "replicate"], sort=True):
        g = g.sort_values("level")
        n = rounds_to_reach(list(g["sparsity"]), target)
        hit = g[g["level"] == n].iloc[0] if n is not None else None
        rows.append({"chain": chain, "pretrain_steps": int(tau), "replicate": int(rep), "target_sparsity": target,
                     "retrain_rounds": n if n is not None else math.nan,
                     "sparsity_reached": float(hit["sparsity"]) if hit is not None else float(g["sparsity"].max()),
                     "test_accuracy": float(hit["test_accuracy"]) if hit is not None else math.nan,
                     "matching": bool(hit["test_error"] <= hit["matching_threshold"] + 1e-12) if hit is not None
                     else False,
                     "levels_trained": int(g["level"].max()) + 1})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- drawing
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
            ax.axhline(thr, color="0.2", linestyle="--", linewidth=1.2, label="matching threshold")
        ax.set_title(f"rewind step τ = {tau}")
        ax.set_xlabel("β  ((1-β) w_L + β w_{L+1})")
        ax.set_ylabel("test error")
        ax.set_xlim(0, 1)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, title="levels (sparsity)", loc="outside right upper", frameon=False)
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
        if np.isfinite(thr):
            ax_acc.axhline(1.0 - thr, color=colors[tau], linestyle=":", linewidth=1.2)
        handles.append(Line2D([], [], color=colors[tau], linewidth=3, label=f"τ = {tau}"))
    handles += [Line2D([], [], color="0.3", linestyle=ls, marker=mk, label=f"{chain} ratio")
                for chain, (ls, mk) in style.items()]
    handles.append(Line2D([], [], color="0.3", linestyle=":", label="matching (dense − 1 sd)"))
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


def render(name: str, t: pd.DataFrame) -> Figure:
    if t.empty:
        raise ValueError(f"{name}: table is empty, nothing to plot")
    draw_fn, (w, h) = _DRAW[name]
    if name in ("imp_slices", "imp_heatmap", "imp_paths"):
        # panels: one per rewind point (per sliced level and rewind point), at most 3 a row
        n = t.groupby(["pretrain_steps", "level"]).ngroups if name == "imp_slices" else t["pretrain_steps"].nunique()
        w = 4.6 * min(n, 3) + (2.6 if name == "imp_paths" else 1.4)
        h = h * math.ceil(n / 3)
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    draw_fn(t, fig)
    return fig


def draw(name: str, t: pd.DataFrame, out_prefix: str | Path) -> dict[str, Path]:
    rc = {"pdf.fonttype": 42, "ps.fonttype": 42, "axes.titlesize": "medium", "savefig.dpi": DPI}
    with matplotlib.rc_context(rc), sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        return save(render(name, t), t, out_prefix)
