"""Tidy tables from the pipeline's JSON records (no torch: figure jobs stay light).

Three kinds of record, one JSON file each:

* composed-mask sidecar ``compose.json`` (one per replicate, t, k, op, s): overlap of the k sibling masks, raw
  and final sparsity of the composition;
* retrained-ticket ``metrics.json`` (one per replicate, t, ticket, s): a composition (union, intersection,
  vote<m>, mean_magnitude), oneshot or random;
* dense sibling ``metrics.json`` (one per replicate, t, sibling): ``ticket == "dense"``.

:func:`load_records` reads them into one DataFrame (a ``record`` column says "compose" or "metrics");
:func:`figure_table` selects the tidy table one figure plots (also written as the figure's CSV);
:func:`summary_tables` aggregates everything present over replicates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from lotto.composability import ACCURACY_VIEWS, EVERY_OP, RECORD_FIGURES, is_composition
from lotto.composability import FIGURES as _ALL_FIGURES
from lotto.masks import vote_threshold

#: the figures drawn from these tables (training_curves is drawn from the curves, by lotto.curves)
FIGURES = {name: _ALL_FIGURES[name] for name in RECORD_FIGURES}

#: the paper's compositions; composability.ops adds vote<m> and mean_magnitude (see is_composition)
TICKETS_COMPOSED = ("union", "intersection")
TICKETS_BASELINE = ("oneshot", "random")
TICKET_DENSE = "dense"
TICKETS_METRICS = TICKETS_COMPOSED + TICKETS_BASELINE + (TICKET_DENSE,)

OVERLAP_COLUMNS = ["replicate", "pretrain_steps", "k", "target_sparsity", "overlap", "chance"]
ACCURACY_COLUMNS = ["replicate", "pretrain_steps", "ticket", "k", "target_sparsity", "sparsity", "test_accuracy"]

# Columns of the load_records frame (unknown keys of the records are dropped).
RECORD_COLUMNS = [
    "record", "replicate", "pretrain_steps", "ticket", "k", "sibling", "target_sparsity", "sparsity",
    "kept", "total", "raw_sparsity", "raw_kept", "overlap", "chance", "test_accuracy", "test_loss", "source",
]
_INT_COLUMNS = ("replicate", "pretrain_steps", "k", "sibling", "kept", "total", "raw_kept")
_FLOAT_COLUMNS = ("target_sparsity", "sparsity", "raw_sparsity", "overlap", "chance", "test_accuracy", "test_loss")

_REQUIRED = {
    "compose": ("replicate", "pretrain_steps", "k", "ticket", "target_sparsity", "sparsity", "overlap"),
    "metrics": ("replicate", "pretrain_steps", "ticket", "target_sparsity", "sparsity", "test_accuracy"),
    "dense": ("replicate", "pretrain_steps", "ticket", "test_accuracy"),
}


# --------------------------------------------------------------------------- loading
def _record_kind(path: Path, rec: dict) -> str:
    stem = path.stem.lower()
    if stem == "compose" or ("test_accuracy" not in rec and ("overlap" in rec or "chance" in rec)):
        return "compose"
    return "metrics"


def _as_int(path: Path, key: str, value, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{path}: key {key!r} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{path}: key {key!r} must be an integer, got {value!r}")
    return value


def _as_float(path: Path, key: str, value, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: key {key!r} must be a finite number, got {value!r}")
    return float(value)


def parse_record(path: Path, rec) -> dict:
    """One compose or metrics record, checked and typed (the columns of :data:`RECORD_COLUMNS`)."""
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(rec).__name__}")
    kind = _record_kind(path, rec)
    ticket = rec.get("ticket")
    if kind == "metrics" and ticket == TICKET_DENSE:
        required = _REQUIRED["dense"]
    else:
        required = _REQUIRED[kind]
    for key in required:
        if key not in rec:
            raise ValueError(f"{path}: missing required key {key!r} ({kind} record)")
    composed = is_composition(ticket)
    if not (composed or (kind == "metrics" and ticket in TICKETS_METRICS)):
        valid = [] if kind == "compose" else list(TICKETS_BASELINE + (TICKET_DENSE,))
        raise ValueError(f"{path}: key 'ticket' must be a composition (union, intersection, vote<m>, "
                         f"mean_magnitude){''.join(f' or {v!r}' for v in valid)}, got {ticket!r}")
    if composed and "k" not in rec:
        raise ValueError(f"{path}: missing required key 'k' (composed {ticket} ticket)")

    out: dict = {"record": kind, "ticket": ticket, "source": str(path)}
    out["replicate"] = _as_int(path, "replicate", rec["replicate"])
    out["pretrain_steps"] = _as_int(path, "pretrain_steps", rec["pretrain_steps"])
    k = _as_int(path, "k", rec.get("k"), allow_none=not composed)
    if k is not None and k < 1:
        raise ValueError(f"{path}: key 'k' must be >= 1, got {k}")
    out["k"] = k
    out["sibling"] = _as_int(path, "sibling", rec.get("sibling"), allow_none=True)
    out["kept"] = _as_int(path, "kept", rec.get("kept"), allow_none=True)
    out["total"] = _as_int(path, "total", rec.get("total"), allow_none=True)
    out["raw_kept"] = _as_int(path, "raw_kept", rec.get("raw_kept"), allow_none=True)
    out["raw_sparsity"] = _as_float(path, "raw_sparsity", rec.get("raw_sparsity"), allow_none=True)
    if ticket == TICKET_DENSE:
        out["target_sparsity"] = _as_float(path, "target_sparsity", rec.get("target_sparsity", 0.0))
        out["sparsity"] = _as_float(path, "sparsity", rec.get("sparsity", 0.0))
    else:
        out["target_sparsity"] = _as_float(path, "target_sparsity", rec["target_sparsity"])
        out["sparsity"] = _as_float(path, "sparsity", rec["sparsity"])
    for key in ("target_sparsity", "sparsity"):
        if not 0.0 <= out[key] <= 1.0:
            raise ValueError(f"{path}: key {key!r} must lie in [0, 1], got {out[key]}")
    out["overlap"] = _as_float(path, "overlap", rec.get("overlap"), allow_none=kind != "compose")
    chance = rec.get("chance")
    if kind == "compose" and chance is None:
        chance = out["target_sparsity"] ** (k - 1)
    out["chance"] = _as_float(path, "chance", chance, allow_none=True)
    out["test_accuracy"] = _as_float(path, "test_accuracy", rec.get("test_accuracy"), allow_none=kind != "metrics")
    out["test_loss"] = _as_float(path, "test_loss", rec.get("test_loss"), allow_none=True)
    return out


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for col in _INT_COLUMNS:
        if col in df:
            df[col] = pd.array(df[col].tolist(), dtype="Int64") if len(df) else pd.array([], dtype="Int64")
    for col in _FLOAT_COLUMNS:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    for col in ("record", "ticket", "source"):
        if col in df:
            df[col] = df[col].astype("str") if len(df) else pd.Series([], dtype="str")
    return df


def load_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Read compose.json / metrics.json records into one frame, one row per file.

    Columns: :data:`RECORD_COLUMNS` (``record`` is "compose" or "metrics"; ``source`` is the file's path;
    integer columns are nullable ``Int64``, e.g. ``k`` is <NA> for the baselines and the dense networks).
    Unknown keys are ignored; a missing required key raises ValueError naming the file and the key.
    """
    rows = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise ValueError(f"{path}: record file not found")
        try:
            rec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        rows.append(parse_record(path, rec))
    df = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    return _typed(df)


# --------------------------------------------------------------------------- figure tables
def _check_columns(df: pd.DataFrame, needed: Iterable[str], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: records frame lacks columns {missing}")


def _duplicates(df: pd.DataFrame, keys: list[str], what: str) -> None:
    dup = df[df.duplicated(keys, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        same = dup
        for key in keys:
            same = same[(same[key] == first[key]) | (same[key].isna() & pd.isna(first[key]))]
        sources = list(same["source"]) if "source" in same else []
        desc = ", ".join(f"{key}={first[key]}" for key in keys)
        raise ValueError(f"{what}: duplicate records for {desc}: {sources}")


def _overlap_records(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Compose records, one row per (replicate, t, k, s): every composition's sidecar shares the overlap."""
    _check_columns(df, ["record", "replicate", "pretrain_steps", "k", "ticket", "target_sparsity", "overlap"], what)
    comp = df[df["record"] == "compose"].copy()
    keys = ["replicate", "pretrain_steps", "k", "target_sparsity"]
    _duplicates(comp, keys + ["ticket"], what)
    if "chance" not in comp:
        comp["chance"] = np.nan
    missing = comp["chance"].isna()
    comp.loc[missing, "chance"] = comp.loc[missing, "target_sparsity"] ** (comp.loc[missing, "k"].astype(float) - 1)
    # every composition's sidecar must agree on the overlap (it is a property of the sibling masks)
    both = comp.groupby(keys, dropna=False)["overlap"].agg(["min", "max"])
    bad = both[(both["max"] - both["min"]).abs() > 1e-6]
    if len(bad):
        key = bad.index[0]
        rows = comp[(comp[keys] == pd.Series(key, index=keys)).all(axis=1)]
        sources = list(rows["source"]) if "source" in rows else []
        raise ValueError(f"{what}: the sidecars of the compositions disagree on the overlap for "
                         f"{dict(zip(keys, key))}: {sources}")
    comp["_order"] = comp["ticket"].map(ticket_rank)  # prefer the union sidecar
    comp = comp.sort_values(keys + ["_order"], kind="stable").drop_duplicates(keys, keep="first")
    return comp


def _overlap_table(comp: pd.DataFrame) -> pd.DataFrame:
    out = comp[OVERLAP_COLUMNS].sort_values(["pretrain_steps", "k", "target_sparsity", "replicate"], kind="stable")
    out = out.reset_index(drop=True)
    for col in ("replicate", "pretrain_steps", "k"):
        out[col] = out[col].astype("int64")
    for col in ("target_sparsity", "overlap", "chance"):
        out[col] = out[col].astype("float64")
    return out


def _dense_per_replicate(df: pd.DataFrame, t_values, what: str) -> pd.DataFrame:
    """Dense accuracy per (replicate, t): mean over the dense siblings of that replicate."""
    dense = df[(df["record"] == "metrics") & (df["ticket"] == TICKET_DENSE)
               & df["pretrain_steps"].isin(list(t_values))].copy()
    if "sibling" in dense:
        with_sib = dense[dense["sibling"].notna()]
        _duplicates(with_sib, ["replicate", "pretrain_steps", "sibling"], what)
    if dense.empty:
        return pd.DataFrame(columns=ACCURACY_COLUMNS)
    agg = dense.groupby(["replicate", "pretrain_steps"], as_index=False).agg(test_accuracy=("test_accuracy", "mean"))
    agg["ticket"] = TICKET_DENSE
    agg["k"] = pd.NA
    agg["target_sparsity"] = 0.0
    agg["sparsity"] = 0.0
    return agg[ACCURACY_COLUMNS]


_FIXED_RANK = {"union": 0, "intersection": 2, "mean_magnitude": 3, "oneshot": 4, "random": 5, TICKET_DENSE: 6}


def ticket_rank(ticket: str) -> float:
    """Sort key of tickets in tables and legends: union, vote1, vote2, ..., intersection, mean_magnitude, the
    baselines, dense (votes sit between the union and the intersection, as their masks do)."""
    m = vote_threshold(ticket)
    if m is not None:
        return 1 + m / (m + 1)  # in (1, 2), increasing in m
    return float(_FIXED_RANK.get(ticket, 7))



def _accuracy_table(name: str, df: pd.DataFrame) -> pd.DataFrame:
    op, view = ACCURACY_VIEWS[name]
    what = f"{name} ({FIGURES[name]})"
    _check_columns(df, ["record", "replicate", "pretrain_steps", "ticket", "k", "target_sparsity", "sparsity",
                        "test_accuracy"], what)
    metrics = df[df["record"] == "metrics"]
    if op == EVERY_OP:
        comp = metrics[metrics["ticket"].map(is_composition).astype(bool)]
        desc = "compositions"
    else:
        comp = metrics[metrics["ticket"] == op]
        desc = f"{op} records"
    comp = comp[comp["k"] == 2] if view in ("by_t", "by_op") else comp[comp["k"].notna()]
    if comp.empty:
        k_text = " with k=2" if view in ("by_t", "by_op") else ""
        raise ValueError(f"{what}: no retrained {desc}{k_text} among the {len(df)} records given")
    if view == "by_t":
        t_values = sorted(comp["pretrain_steps"].unique())
    else:
        t_values = [comp["pretrain_steps"].max()]
        comp = comp[comp["pretrain_steps"] == t_values[0]]
    _duplicates(comp, ["replicate", "pretrain_steps", "ticket", "k", "target_sparsity"], what)
    base = metrics[metrics["ticket"].isin(TICKETS_BASELINE) & metrics["pretrain_steps"].isin(t_values)]
    _duplicates(base, ["replicate", "pretrain_steps", "ticket", "target_sparsity"], what)
    dense = _dense_per_replicate(df, t_values, what)
    parts = [p[ACCURACY_COLUMNS] for p in (comp, base, dense) if len(p)]
    out = pd.concat(parts, ignore_index=True)
    out["_order"] = out["ticket"].map(ticket_rank)
    out["_k"] = pd.to_numeric(out["k"]).fillna(0)
    out = out.sort_values(["_order", "pretrain_steps", "_k", "target_sparsity", "replicate"], kind="stable")
    out = out.drop(columns=["_order", "_k"]).reset_index(drop=True)
    out["replicate"] = out["replicate"].astype("int64")
    out["pretrain_steps"] = out["pretrain_steps"].astype("int64")
    out["ticket"] = out["ticket"].astype("str")
    out["k"] = pd.array([None if pd.isna(v) else int(v) for v in out["k"]], dtype="Int64")
    for col in ("target_sparsity", "sparsity", "test_accuracy"):
        out[col] = out[col].astype("float64")
    return out


def figure_table(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """The tidy table figure ``name`` plots (and writes as its CSV), selected from the records ``df``.

    fig1a/fig1b: columns :data:`OVERLAP_COLUMNS` (one row per replicate, t, k, target sparsity).
    fig2a-fig2e: columns :data:`ACCURACY_COLUMNS` (composed tickets, then oneshot, random and dense rows;
    dense rows hold the mean over a replicate's dense siblings, with sparsity 0 and k <NA>).
    Raises ValueError for an unknown figure or when the records hold nothing to plot.
    """
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {list(FIGURES)}")
    what = f"{name} ({FIGURES[name]})"
    if name in ("fig1a", "fig1b"):
        comp = _overlap_records(df, what)
        if name == "fig1a":
            comp = comp[comp["k"] == 2]
            if comp.empty:
                raise ValueError(f"{what}: no composed-mask (compose.json) records with k=2 "
                                 f"among the {len(df)} records given")
        else:
            if comp.empty:
                raise ValueError(f"{what}: no composed-mask (compose.json) records among the {len(df)} records given")
            comp = comp[comp["pretrain_steps"] == comp["pretrain_steps"].max()]
        return _overlap_table(comp)
    return _accuracy_table(name, df)


# --------------------------------------------------------------------------- summaries
def _mean_std_n(df: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    agg = {}
    for v in values:
        agg[f"{v}_mean"] = (v, "mean")
        agg[f"{v}_std"] = (v, "std")
    agg["n"] = ("replicate", "nunique")
    out = df.groupby(keys, dropna=False, as_index=False, sort=True).agg(**agg)
    return out


def summary_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Aggregates over replicates of everything present: mean, std (ddof=1; NaN for n=1) and n.

    ``overlap``: per (pretrain_steps, k, target_sparsity): overlap, chance, and for every composition whose
    sidecars are present the sparsity of its mask (``<op>_sparsity_mean``) and, where recorded, the sparsity
    before composability.match_sparsity brought it to the target (``<op>_raw_sparsity_mean``).
    ``accuracy``: per (pretrain_steps, ticket, k, target_sparsity): sparsity and test accuracy of every retrained
    ticket, and the dense networks (each replicate's siblings averaged first, so n counts replicates).
    """
    out: dict[str, pd.DataFrame] = {}
    okeys = ["pretrain_steps", "k", "target_sparsity"]
    if "record" in df and (df["record"] == "compose").any():
        comp = _overlap_records(df, "summary")
        ov = _mean_std_n(comp, okeys, ["overlap"])
        ov["chance"] = comp.groupby(okeys, sort=True)["chance"].mean().to_numpy()
        allcomp = df[df["record"] == "compose"]
        for op in sorted(allcomp["ticket"].unique(), key=ticket_rank):
            sub = allcomp[allcomp["ticket"] == op]
            cols = {f"{op}_sparsity_mean": ("sparsity", "mean")}
            if "raw_sparsity" in sub and sub["raw_sparsity"].notna().any():
                cols[f"{op}_raw_sparsity_mean"] = ("raw_sparsity", "mean")
            ov = ov.merge(sub.groupby(okeys, as_index=False).agg(**cols), on=okeys, how="left")
        out["overlap"] = ov.reset_index(drop=True)
    else:
        out["overlap"] = pd.DataFrame(columns=okeys + ["overlap_mean", "overlap_std", "n", "chance"])

    akeys = ["pretrain_steps", "ticket", "k", "target_sparsity"]
    metrics = df[df["record"] == "metrics"] if "record" in df else df.iloc[0:0]
    if len(metrics):
        tickets = metrics[metrics["ticket"] != TICKET_DENSE][["replicate"] + akeys + ["sparsity", "test_accuracy"]]
        dense = _dense_per_replicate(df, sorted(metrics["pretrain_steps"].unique()), "summary")
        parts = [p for p in (tickets, dense) if len(p)]
        rows = pd.concat(parts, ignore_index=True)
        rows["k"] = pd.array([None if pd.isna(v) else int(v) for v in rows["k"]], dtype="Int64")
        acc = _mean_std_n(rows, akeys, ["sparsity", "test_accuracy"])
        acc["_order"] = acc["ticket"].map(ticket_rank)
        acc = acc.sort_values(["pretrain_steps", "_order", "k", "target_sparsity"], kind="stable", na_position="first")
        out["accuracy"] = acc.drop(columns="_order").reset_index(drop=True)
    else:
        out["accuracy"] = pd.DataFrame(columns=akeys + ["sparsity_mean", "sparsity_std", "test_accuracy_mean",
                                                        "test_accuracy_std", "n"])
    return out
