"""The claims of Movva, Frankle & Carbin (2021) as checks over the family's own records (the composed-mask
sidecars ``compose.json`` and the retrained tickets' ``metrics.json``, read by :func:`analysis.load_records`).

One-shot pruning is the reference of every accuracy claim: its accuracy-sparsity curve at the largest rewind
point t (the paper's baseline, one-shot magnitude pruning with late rewinding), interpolated linearly at a
composed mask's actual sparsity, per replicate; a composed mask outside the curve's sparsity range is not
compared. Import-light: the Snakefile reads :func:`random_ticket_point` at parse time (pandas is imported by
:func:`evaluate` only).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from lotto.claims import Claim, Row, above, exact, interpolate, not_below, stat, within

FAMILY = "composability"

OVERLAP_ABOVE_CHANCE = Claim(
    FAMILY, "comp-overlap-above-chance",
    "At the largest rewind point t, k sibling masks prune more of the same weights than chance: their overlap "
    "ratio exceeds s^(k-1) at every sparsity s and every k.")
PRETRAINING_RAISES_OVERLAP = Claim(
    FAMILY, "comp-pretraining-raises-overlap",
    "Shared pretraining makes siblings prune the same weights: at every sparsity s, the overlap of k=2 sibling "
    "masks at the largest t is at least their overlap at t=0.")
UNION_MATCHES_ONESHOT = Claim(
    FAMILY, "comp-union-matches-oneshot",
    "At the largest t, the retrained union of k sibling masks is as accurate as one-shot pruning at the union's "
    "own sparsity, for every k and s.")
INTERSECTION_MATCHES_ONESHOT = Claim(
    FAMILY, "comp-intersection-matches-oneshot",
    "At the largest t, the retrained intersection of k sibling masks is as accurate as one-shot pruning at the "
    "intersection's own sparsity, for every k and s.")
RANDOM_BELOW_ONESHOT = Claim(
    FAMILY, "comp-random-below-oneshot",
    "At the largest t, a random ticket (the one-shot mask shuffled within each layer) is less accurate than "
    "one-shot pruning, at the sparsest grid point of the claim's sparsity range.")
INTERSECTIONS_SPARSER = Claim(
    FAMILY, "comp-intersections-sparser",
    "Intersecting more sibling masks removes more weights: at every t and s, the intersection's sparsity grows "
    "with k.")
PRETRAINING_HELPS_COMPOSITION = Claim(
    FAMILY, "comp-pretraining-helps-composition",
    "Without pretraining (t=0), composed k=2 masks lose more accuracy against one-shot pruning (at the largest "
    "t) than composed masks at the largest t do.")

CLAIMS = (OVERLAP_ABOVE_CHANCE, PRETRAINING_RAISES_OVERLAP, UNION_MATCHES_ONESHOT, INTERSECTION_MATCHES_ONESHOT,
          RANDOM_BELOW_ONESHOT, INTERSECTIONS_SPARSER, PRETRAINING_HELPS_COMPOSITION)


def random_ticket_point(sparsities: Iterable[float], lo: float, hi: float) -> float | None:
    """The sparsest grid point in [lo, hi], where the random-ticket claim is checked; None when none lies there.
    The workflow builds only that random ticket for the claims, so both read the point from here."""
    inside = [float(s) for s in sparsities if lo - 1e-12 <= float(s) <= hi + 1e-12]
    return max(inside) if inside else None


def _f(x: float) -> str:
    return f"{x:.4g}"


def _by(rows: Sequence[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return dict(sorted(out.items()))


class _Records:
    """The records as plain dicts: compose sidecars and retrained tickets, and the rewind points present."""

    def __init__(self, paths):
        from lotto.composability import analysis

        df = analysis.load_records(paths)
        rows = df.astype(object).where(df.notna(), None).to_dict("records")  # <NA> and NaN -> None
        for r in rows:
            r["target_sparsity"] = round(float(r["target_sparsity"]), 4)  # the grid point, as paths name it
        self.compose = [r for r in rows if r["record"] == "compose"]
        self.metrics = [r for r in rows if r["record"] == "metrics"]
        self.ts = sorted({r["pretrain_steps"] for r in rows})
        self.t_max = self.ts[-1] if self.ts else None

    def tickets(self, ticket: str, t: int | None = None, k: int | None = None) -> list[dict]:
        return [r for r in self.metrics if r["ticket"] == ticket and (t is None or r["pretrain_steps"] == t)
                and (k is None or r["k"] == k)]

    def overlaps(self, t: int, k: int | None = None) -> dict[tuple, dict[int, float]]:
        """(k, s) -> replicate -> overlap ratio (union and intersection sidecars carry the same one)."""
        out: dict[tuple, dict[int, float]] = {}
        for r in self.compose:
            if r["pretrain_steps"] == t and (k is None or r["k"] == k):
                out.setdefault((r["k"], r["target_sparsity"]), {})[r["replicate"]] = r["overlap"]
        return dict(sorted(out.items()))

    def oneshot_curves(self, t: int) -> dict[int, list[tuple[float, float]]]:
        """replicate -> (sparsity, test accuracy) of the one-shot tickets at rewind point t."""
        out: dict[int, list[tuple[float, float]]] = {}
        for r in self.tickets("oneshot", t):
            out.setdefault(r["replicate"], []).append((r["sparsity"], r["test_accuracy"]))
        return out


def _no_records(claim: Claim, what: str, tol=None) -> Row:
    return claim.inconclusive(f"no {what} among the records given", tolerance=tol)


# --------------------------------------------------------------------------- overlap claims
def _overlap_above_chance(rec: _Records, tol: float) -> Row:
    claim = OVERLAP_ABOVE_CHANCE
    if rec.t_max is None or not rec.overlaps(rec.t_max):
        return _no_records(claim, "composed-mask (compose.json) records", tol)
    cells = []
    for (k, s), per_rep in rec.overlaps(rec.t_max).items():
        st = stat(per_rep.values())
        cells.append((st.mean - s ** (k - 1), k, s, st))
    margin, k, s, st = min(cells)
    chance = s ** (k - 1)
    ok = all(above(c[3].mean, c[2] ** (c[1] - 1), tol) for c in cells)
    n_bad = sum(not above(c[3].mean, c[2] ** (c[1] - 1), tol) for c in cells)
    compared = (f"t={rec.t_max}, closest of {len(cells)} (k, s) cells: k={k}, s={_f(s)}: overlap {st.text()} "
                f"vs chance {chance:.3f}")
    reason = (f"every cell exceeds chance by at least {tol:g} (smallest margin {margin:+.3f})" if ok else
              f"{n_bad} of {len(cells)} cells exceed chance by less than {tol:g} (k={k}, s={_f(s)}: {margin:+.3f})")
    return claim.verdict(ok, a=(f"overlap k={k} s={_f(s)} t={rec.t_max}", st), b=("chance s^(k-1)", exact(chance)),
                         tolerance=tol, compared=compared, reason=reason)


def _pretraining_raises_overlap(rec: _Records, tol: float) -> Row:
    claim = PRETRAINING_RAISES_OVERLAP
    if 0 not in rec.ts:
        return claim.inconclusive("no t=0 among the rewind points (composability.pretrain_steps): nothing "
                                  "without pretraining to compare with", tol)
    if rec.t_max == 0:
        return claim.inconclusive("one rewind point (composability.pretrain_steps = [0]): add a t > 0", tol)
    top, zero = rec.overlaps(rec.t_max, k=2), rec.overlaps(0, k=2)
    common = [key for key in top if key in zero]
    if not common:
        return _no_records(claim, "k=2 compose records at both t=0 and the largest t", tol)
    cells = sorted((stat(top[key].values()).mean - stat(zero[key].values()).mean, key) for key in common)
    diff, (_, s) = cells[0]
    a, b = stat(top[(2, s)].values()), stat(zero[(2, s)].values())
    ok = all(not_below(d, 0.0, tol) for d, _ in cells)
    compared = f"k=2, s={_f(s)} (smallest gain of {len(cells)} sparsities): t={rec.t_max} {a.text()} vs t=0 {b.text()}"
    reason = (f"at every sparsity the overlap at t={rec.t_max} is at least the overlap at t=0 less {tol:g} "
              f"(smallest gain {diff:+.3f})" if ok else
              f"at s={_f(s)} the overlap at t={rec.t_max} is {-diff:.3f} below the overlap at t=0 (more than {tol:g})")
    return claim.verdict(ok, a=(f"overlap k=2 s={_f(s)} t={rec.t_max}", a), b=(f"overlap k=2 s={_f(s)} t=0", b),
                         tolerance=tol, compared=compared, reason=reason)


# --------------------------------------------------------------------------- accuracy claims
def _against_oneshot(rec: _Records, op: str, t: int, k: int | None, ref_t: int):
    """Per (k, s) cell of ``op`` at t: (composed accuracies, one-shot accuracies at the same sparsity, composed
    sparsities), paired by replicate over the replicates whose composed sparsity lies on the one-shot curve
    (rewind point ``ref_t``); and the cells with no replicate on it."""
    curves = rec.oneshot_curves(ref_t)
    inside, outside = {}, []
    for (kk, s), rows in _by(rec.tickets(op, t, k), "k", "target_sparsity").items():
        pairs = []
        for r in rows:
            ref = interpolate(curves.get(r["replicate"], []), r["sparsity"])
            if ref is not None:
                pairs.append((r["test_accuracy"], ref, r["sparsity"], r["replicate"]))
        if pairs:
            inside[(kk, s)] = pairs
        else:
            outside.append((kk, s, stat(r["sparsity"] for r in rows).mean))
    return inside, outside


def _curve_range(rec: _Records, t: int) -> str:
    xs = [x for pts in rec.oneshot_curves(t).values() for x, _ in pts]
    return f"[{_f(min(xs))}, {_f(max(xs))}]" if xs else "(no one-shot records)"


def _matches_oneshot(rec: _Records, claim: Claim, op: str, tol: float) -> Row:
    if rec.t_max is None or not rec.tickets(op, rec.t_max):
        return _no_records(claim, f"retrained {op} tickets", tol)
    inside, outside = _against_oneshot(rec, op, rec.t_max, None, rec.t_max)
    if not inside:
        spars = ", ".join(_f(sp) for _, _, sp in outside)
        return claim.inconclusive(
            f"every {op} mask's sparsity ({spars}) lies outside the one-shot curve's range "
            f"{_curve_range(rec, rec.t_max)} at t={rec.t_max}: add sparsities to composability.sparsities "
            "that bracket the composed sparsities", tol)
    cells = []
    for (k, s), pairs in inside.items():
        a, b = stat(p[0] for p in pairs), stat(p[1] for p in pairs)
        cells.append((abs(a.mean - b.mean), k, s, a, b, stat(p[2] for p in pairs).mean))
    cells.sort(key=lambda c: c[0], reverse=True)
    gap, k, s, a, b, sp = cells[0]
    bad = [c for c in cells if not within(c[3].mean, c[4].mean, tol)]
    skipped = f"; {len(outside)} cell(s) outside the one-shot range not compared" if outside else ""
    compared = (f"t={rec.t_max}, largest gap of {len(cells)} (k, s) cells: k={k}, s={_f(s)} ({op} sparsity "
                f"{_f(sp)}): {op} {a.text()} vs one-shot {b.text()}")
    reason = (f"every composed mask is within {tol:g} of one-shot (largest gap {gap:.3f}){skipped}" if not bad else
              f"{len(bad)} of {len(cells)} cells differ from one-shot by more than {tol:g} (largest {gap:.3f})"
              f"{skipped}")
    return claim.verdict(not bad, a=(f"{op} k={k} s={_f(s)} t={rec.t_max}", a),
                         b=(f"one-shot at sparsity {_f(sp)}", b), tolerance=tol, compared=compared, reason=reason)


def _random_below_oneshot(rec: _Records, tol: float, grid: Sequence[float], lo: float, hi: float) -> Row:
    claim = RANDOM_BELOW_ONESHOT
    s = random_ticket_point(grid, lo, hi)
    if s is None:
        return claim.inconclusive(
            f"no sparsity of composability.sparsities ({', '.join(_f(g) for g in grid)}) lies in the claim's range "
            f"[{_f(lo)}, {_f(hi)}] (claims.random_ticket_min_sparsity/max_sparsity)", tol)
    s = round(s, 4)
    t = rec.t_max
    one = {r["replicate"]: r["test_accuracy"] for r in rec.tickets("oneshot", t) if r["target_sparsity"] == s}
    rnd = {r["replicate"]: r["test_accuracy"] for r in rec.tickets("random", t) if r["target_sparsity"] == s}
    reps = sorted(set(one) & set(rnd))
    if not reps:
        return _no_records(claim, f"one-shot and random-ticket records at s={_f(s)} for one replicate", tol)
    a, b = stat(one[r] for r in reps), stat(rnd[r] for r in reps)
    ok = above(a.mean, b.mean, tol)
    compared = f"t={t}, s={_f(s)}: one-shot {a.text()} vs random ticket {b.text()}"
    reason = (f"one-shot beats the random ticket by {a.mean - b.mean:.3f} (at least {tol:g})" if ok else
              f"one-shot leads the random ticket by {a.mean - b.mean:+.3f}, less than {tol:g}")
    return claim.verdict(ok, a=(f"one-shot s={_f(s)} t={t}", a), b=(f"random ticket s={_f(s)} t={t}", b),
                         tolerance=tol, compared=compared, reason=reason)


def _raw_sparsity(record: dict) -> float:
    raw = record.get("raw_sparsity")
    return float(record["sparsity"]) if raw is None or raw != raw else float(raw)


def _intersections_sparser(rec: _Records) -> Row:
    claim = INTERSECTIONS_SPARSER
    inter = [r for r in rec.compose if r["ticket"] == "intersection"]
    if not inter:
        return _no_records(claim, "intersection sidecars (compose.json)")
    ks = sorted({r["k"] for r in inter})
    if len(ks) < 2:
        return claim.inconclusive(f"one number of siblings (composability.ks = [{ks[0]}]): add a larger k, e.g. 3")
    steps = []
    for (t, s), rows in _by(inter, "pretrain_steps", "target_sparsity").items():
        # the intersection itself, before composability.match_sparsity brought it to the target sparsity
        per_k = {k: stat(_raw_sparsity(r) for r in rows if r["k"] == k) for k in ks}
        present = [k for k in ks if per_k[k].n]
        for k0, k1 in zip(present, present[1:]):
            steps.append((per_k[k1].mean - per_k[k0].mean, t, s, k0, k1, per_k[k0], per_k[k1]))
    if not steps:
        return _no_records(claim, "cells with intersections of two different k")
    gain, t, s, k0, k1, a0, a1 = min(steps)
    ok = all(st[0] > 0 for st in steps)
    compared = (f"smallest of {len(steps)} steps in k: t={t}, s={_f(s)}: k={k1} sparsity {a1.text(4)} vs k={k0} "
                f"{a0.text(4)}")
    reason = (f"each larger k gives a strictly sparser intersection (smallest gain {gain:+.4f}); strict, as mask "
              "sparsities are exact counts" if ok else
              f"at t={t}, s={_f(s)} the intersection of {k1} masks is not sparser than that of {k0} ({gain:+.4f})")
    return claim.verdict(ok, a=(f"intersection sparsity k={k1} s={_f(s)} t={t}", a1),
                         b=(f"intersection sparsity k={k0} s={_f(s)} t={t}", a0), compared=compared, reason=reason)


def _pretraining_helps_composition(rec: _Records, tol: float) -> Row:
    claim = PRETRAINING_HELPS_COMPOSITION
    if 0 not in rec.ts:
        return claim.inconclusive("no t=0 among the rewind points (composability.pretrain_steps)", tol)
    if rec.t_max == 0:
        return claim.inconclusive("one rewind point (composability.pretrain_steps = [0]): add a t > 0", tol)
    losses: dict[int, dict[int, list[float]]] = {}  # t -> replicate -> one-shot minus composed accuracy
    cells: dict[int, int] = {}
    for t in (0, rec.t_max):
        losses[t], cells[t] = {}, 0
        for op in ("union", "intersection"):
            inside, _ = _against_oneshot(rec, op, t, 2, rec.t_max)
            cells[t] += len(inside)
            for pairs in inside.values():
                for acc, ref, _, rep in pairs:
                    losses[t].setdefault(rep, []).append(ref - acc)
    if not losses[0] or not losses[rec.t_max]:
        missing = [f"t={t}" for t in (0, rec.t_max) if not losses[t]]
        return claim.inconclusive(
            f"no k=2 composed mask at {' and '.join(missing)} has a sparsity within the one-shot curve's range "
            f"{_curve_range(rec, rec.t_max)} at t={rec.t_max}: add sparsities to composability.sparsities", tol)
    a = stat(sum(v) / len(v) for v in losses[0].values())
    b = stat(sum(v) / len(v) for v in losses[rec.t_max].values())
    ok = above(a.mean, b.mean, tol)
    compared = (f"mean accuracy lost against one-shot (t={rec.t_max}) by k=2 unions and intersections: t=0 "
                f"{a.text()} over {cells[0]} cells vs t={rec.t_max} {b.text()} over {cells[rec.t_max]} cells")
    reason = (f"compositions without pretraining lose {a.mean - b.mean:.3f} more (at least {tol:g})" if ok else
              f"compositions without pretraining lose {a.mean - b.mean:+.3f} more than with it, less than {tol:g}")
    return claim.verdict(ok, a=("accuracy lost vs one-shot, t=0", a),
                         b=(f"accuracy lost vs one-shot, t={rec.t_max}", b),
                         tolerance=tol, compared=compared, reason=reason)


def evaluate(paths: Iterable, cfg: dict) -> list[Row]:
    """One row per claim of :data:`CLAIMS`, from the records at ``paths``; ``cfg`` holds the validated ``claims``
    and ``composability`` sections."""
    tol = cfg["claims"]
    rec = _Records(paths)
    acc, ov = tol["accuracy_tolerance"], tol["overlap_tolerance"]
    return [
        _overlap_above_chance(rec, ov),
        _pretraining_raises_overlap(rec, ov),
        _matches_oneshot(rec, UNION_MATCHES_ONESHOT, "union", acc),
        _matches_oneshot(rec, INTERSECTION_MATCHES_ONESHOT, "intersection", acc),
        _random_below_oneshot(rec, acc, cfg["composability"]["sparsities"], tol["random_ticket_min_sparsity"],
                              tol["random_ticket_max_sparsity"]),
        _intersections_sparser(rec),
        _pretraining_helps_composition(rec, acc),
    ]
