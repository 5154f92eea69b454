"""Tables of the IMP family (Paul et al. 2022); no torch.

:func:`load` sorts the JSON records the IMP rules write (level ``metrics.json``, ``imp-path`` and
``imp-slice`` records, adaptive pruning records); :func:`table` builds the tidy table a figure plots (also
its CSV, drawn by :mod:`lotto.imp.plots`).

Matching (Paul et al.): a network is matching when its test error is at most the dense network's mean
error plus one standard deviation across replicates (sd taken as 0 with a single replicate). The dense
network of rewind point tau is level 0 of the fixed chain.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from lotto.imp import RECORD_FIGURES


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
    if name not in RECORD_FIGURES:
        raise ValueError(f"unknown IMP figure {name!r}; known: {list(RECORD_FIGURES)}")
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
