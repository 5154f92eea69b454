"""The claims of Movva, Frankle & Carbin (2021) as checks over the family's own records: the sibling masks (for
the overlaps), the composed masks' sidecars ``compose.json`` (for the sanity check) and the retrained tickets'
``metrics.json`` with their per-example results (for the accuracies).

How each effect is estimated (the statistics are :mod:`lotto.stats`'):

* Overlap (no test set involved): per replicate, the mean over every set of k of the run's K siblings of the
  overlap ratio minus its exact chance level for global pruning (:func:`lotto.masks.chance_overlap_exact`: the
  per-layer pruned counts, not s**(k-1)); the interval comes from the replicates, or, with one replicate, from
  a jackknife over the siblings (the SGD noise between siblings of one pretraining point, which is what the
  claim is about; the pretraining point's own draw is then not covered, and the row says so).
* Accuracy contrasts: paired by replicate and by test example. One-shot pruning is read at a composed mask's
  own sparsity without flattering interpolation: exactly where the composed mask has the one-shot mask's
  sparsity (``composability.match_sparsity``), else between the two grid points that bracket it, with the
  bracket in the interval (the one-shot curve is taken to fall with sparsity, so the one-shot accuracy at the
  composed sparsity lies between its neighbours'); outside the grid it is bounded on one side only.

Import-light: the Snakefile reads :func:`random_ticket_point` at parse time (numpy and pandas are imported by
:func:`evaluate` only).
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lotto.claims import SANITY, Cell, Claim, Row, Settings, effect_text, settle
from lotto.stats import EQUIVALENCE, FAIL, PASS, SUPERIORITY, CurveReading

FAMILY = "composability"
PAPER = "Movva, Frankle & Carbin (2021), arXiv:2104.14753"

OVERLAP_ABOVE_CHANCE = Claim(
    FAMILY, "comp-overlap-above-chance", SUPERIORITY,
    "At the largest rewind point t, k sibling masks prune more of the same weights than chance, at every "
    "sparsity s and every k.",
    "overlap ratio minus its chance level for random masks with the same per-layer pruned counts",
    0.02, "an excess of 2% of the pruned weights is the least that says the siblings share structure: Movva et "
          "al. describe siblings a few points above chance as 'close to random chance'",
    f"{PAPER}, Section 2: 'compared to random chance, pretrained siblings prune remarkably consistent sets of "
    "weights'")
PRETRAINING_RAISES_OVERLAP = Claim(
    FAMILY, "comp-pretraining-raises-overlap", SUPERIORITY,
    "Shared pretraining makes siblings prune more of the same weights: the k=2 overlap at the largest t exceeds "
    "the overlap at t=0, on average over the sparsity grid.",
    "k=2 overlap ratio at the largest t minus at t=0, averaged over the sparsities",
    0.02, "the paper reports a notable increase; 2% of the pruned weights is the smallest gain worth the name, "
          "and the average over the grid avoids the high sparsities where every overlap tends to 1",
    f"{PAPER}, abstract: 'starting sibling training after a few epochs of shared pretraining significantly "
    "increases pruning overlap'")
UNION_MATCHES_ONESHOT = Claim(
    FAMILY, "comp-union-matches-oneshot", EQUIVALENCE,
    "At the largest t, the retrained union of k sibling masks is as accurate as one-shot pruning at the "
    "union's own sparsity, for every k and s.",
    "test accuracy of the union minus one-shot pruning's at the union's sparsity",
    0.01, "one point of test accuracy: well below the gap between one-shot pruning and a random ticket that the "
          "paper's comparison rests on, and above the run-to-run spread of ResNet-20 on CIFAR-10",
    f"{PAPER}, Section 3: 'With pretraining, though, union and intersection masks both match the "
    "accuracy-sparsity tradeoffs of the one-shot pruning baseline'")
INTERSECTION_MATCHES_ONESHOT = Claim(
    FAMILY, "comp-intersection-matches-oneshot", EQUIVALENCE,
    "At the largest t, the retrained intersection of k sibling masks is as accurate as one-shot pruning at the "
    "intersection's own sparsity, for every k and s.",
    "test accuracy of the intersection minus one-shot pruning's at the intersection's sparsity",
    0.01, "as for the union",
    f"{PAPER}, Section 3 (as for the union); Figure 2d for up to k=10")
RANDOM_BELOW_ONESHOT = Claim(
    FAMILY, "comp-random-below-oneshot", SUPERIORITY,
    "At the largest t, a random ticket (the one-shot mask shuffled within each layer) is less accurate than "
    "one-shot pruning, at the sparsest grid point of the claim's sparsity range.",
    "test accuracy of one-shot pruning minus the random ticket's",
    0.01, "one point of test accuracy: a random ticket less than a point behind is as good for practical "
          "purposes, and the composition claims need a baseline gap they can be told apart from",
    f"{PAPER}, Section 3: the random ticket ('the mask shuffled, but with per-layer pruning ratios maintained') is "
    "the baseline compositions without pretraining are 'no better than'")
INTERSECTIONS_SPARSER = Claim(
    FAMILY, "comp-intersections-sparser", SANITY,
    "Intersecting more sibling masks removes more weights: at every t and s, the intersection's sparsity grows "
    "with k (a check of the pipeline: k+1 masks intersect a superset of the k).",
    "raw intersection sparsity at k+1 minus at k", None, "", "not a paper claim")
PRETRAINING_HELPS_COMPOSITION = Claim(
    FAMILY, "comp-pretraining-helps-composition", SUPERIORITY,
    "Without pretraining (t=0), composed k=2 masks lose more accuracy against one-shot pruning at the same t "
    "than composed masks at the largest t do, on average over unions, intersections and sparsities.",
    "(one-shot minus composed accuracy at t=0) minus (the same at the largest t), averaged over the cells",
    0.01, "one point of test accuracy lost to composition; the effect cannot exceed the run's own gap between "
          "one-shot pruning and a random ticket, so the claim is undecided until that gap is resolved",
    f"{PAPER}, Section 3: 'Without pretraining, both union and intersection yield masks that are no better "
    "than a random pruning baseline' while with pretraining they match one-shot pruning")

CLAIMS = (OVERLAP_ABOVE_CHANCE, PRETRAINING_RAISES_OVERLAP, UNION_MATCHES_ONESHOT, INTERSECTION_MATCHES_ONESHOT,
          RANDOM_BELOW_ONESHOT, PRETRAINING_HELPS_COMPOSITION, INTERSECTIONS_SPARSER)

COMPOSED = ("union", "intersection")


def random_ticket_point(sparsities: Iterable[float], lo: float, hi: float) -> float | None:
    """The sparsest grid point in [lo, hi], where the random-ticket claim is checked; None when none lies there.
    The workflow builds only that random ticket for the claims, so both read the point from here."""
    inside = [float(s) for s in sparsities if lo - 1e-12 <= float(s) <= hi + 1e-12]
    return max(inside) if inside else None


def _f(x: float) -> str:
    return f"{x:.4g}"


_MASK_NAME = re.compile(r"^s(\d\.\d+)\.mask$")


class _Records:
    """The records as plain dicts (each metrics record with its :class:`Outcome`), the sibling masks by
    (replicate, t, s), and the rewind points present."""

    def __init__(self, paths):
        from lotto.composability import analysis
        from lotto.io import read_json
        from lotto.masks import Mask
        from lotto.stats import Outcome

        self.compose, self.metrics = [], []
        self.masks: dict[tuple, dict[int, Mask]] = {}
        for p in paths:
            path = Path(p)
            if path.suffix == ".mask":
                mask = Mask.load(path)
                labels = [mask.meta.get(k) for k in ("replicate", "pretrain_steps", "sibling")]
                m = _MASK_NAME.match(path.name)
                target = mask.meta.get("sparsity", float(m.group(1)) if m else None)  # lotto prune records it
                if None in labels or target is None:
                    raise ValueError(f"{path}: not a sibling mask of lotto prune (labels replicate, "
                                     "pretrain_steps, sibling and its target sparsity)")
                rep, t, sib = (int(v) for v in labels)
                self.masks.setdefault((rep, t, round(float(target), 4)), {})[sib] = mask
                continue
            raw = read_json(path)
            rec = analysis.parse_record(path, raw)
            rec["target_sparsity"] = round(float(rec["target_sparsity"]), 4)  # the grid point, as paths name it
            if rec["record"] == "compose":
                self.compose.append(rec)
            else:
                rec["outcome"] = Outcome.of(raw, str(path))
                self.metrics.append(rec)
        ts = {r["pretrain_steps"] for r in self.compose + self.metrics} | {key[1] for key in self.masks}
        self.ts = sorted(ts)
        self.t_max = self.ts[-1] if self.ts else None
        # the shift of a whole run's accuracy, from the dense siblings of each rewind point (same recipe, other SGD
        # noise): what one replicate cannot estimate, and two estimate poorly (lotto.stats.run_variance)
        from lotto.stats import run_variance

        run_var = {}
        for t in self.ts:
            groups: dict[int, list] = {}
            for r in self.tickets("dense", t):
                groups.setdefault(r["replicate"], []).append(r["outcome"])
            run_var[t] = run_variance(list(groups.values()))
        for r in self.metrics:
            if r["ticket"] != "dense":
                r["outcome"] = r["outcome"].with_run_var(run_var.get(r["pretrain_steps"]))

    def tickets(self, ticket: str, t: int | None = None, k: int | None = None) -> list[dict]:
        return [r for r in self.metrics if r["ticket"] == ticket and (t is None or r["pretrain_steps"] == t)
                and (k is None or r["k"] == k)]

    def oneshot(self, t: int) -> dict[int, list[tuple]]:
        """replicate -> the one-shot curve at rewind point t: (sparsity, Outcome) of its tickets."""
        out: dict[int, list[tuple]] = {}
        for r in self.tickets("oneshot", t):
            out.setdefault(r["replicate"], []).append((r["sparsity"], r["outcome"]))
        return out

    def sibling_sets(self, t: int) -> dict[int, dict[float, dict[int, object]]]:
        """replicate -> sparsity -> sibling -> mask, at rewind point t."""
        out: dict[int, dict[float, dict]] = {}
        for (rep, tt, s), sibs in self.masks.items():
            if tt == t:
                out.setdefault(rep, {})[s] = sibs
        return out


# --------------------------------------------------------------------------- overlap
@lru_cache(maxsize=None)
def _overlap(masks: tuple, s: float) -> tuple[float, float]:
    """(overlap ratio, exact chance) of a set of sibling masks; cached, as the jackknife revisits each set."""
    from lotto.masks import chance_overlap_exact, overlap_ratio

    return overlap_ratio(masks, s), chance_overlap_exact(masks, s)


def _mean_over_sets(sibs: dict[int, object], keep: Sequence[int], k: int, s: float, what: str) -> float:
    """Mean over every set of k of the siblings ``keep`` of overlap minus chance (``what='excess'``) or of the
    overlap (``'overlap'``) or of the chance level (``'chance'``)."""
    vals = []
    for subset in combinations(keep, k):
        ov, ch = _overlap(tuple(sibs[i] for i in subset), s)
        vals.append({"excess": ov - ch, "overlap": ov, "chance": ch}[what])
    return sum(vals) / len(vals)


def _jackknife(siblings: Sequence[int], k: int, statistic: Callable[[Sequence[int]], float]):
    """(variance, degrees of freedom) of ``statistic(siblings)`` by leaving out one sibling at a time, or None
    when leaving one out leaves fewer than k (then there is one set of k and nothing to compare)."""
    K = len(siblings)
    if K < k + 1:
        return None
    theta = [statistic([s for s in siblings if s != out]) for out in siblings]
    mean = sum(theta) / K
    return (K - 1) / K * sum((x - mean) ** 2 for x in theta), K - 1


JACKKNIFE_NOTE = ("1 replicate: the interval covers the SGD noise between siblings (a jackknife over them), not "
                  "the draw of the pretraining point")


def _overlap_estimate(per_rep: dict[int, float], jack):
    from lotto.stats import replicated

    return replicated(per_rep, within=jack if len(per_rep) == 1 else None, within_note=JACKKNIFE_NOTE)


def _common_siblings(sets: dict[float, dict[int, object]]) -> list[int]:
    common = None
    for sibs in sets.values():
        common = set(sibs) if common is None else common & set(sibs)
    return sorted(common or [])


def _overlap_above_chance(rec: _Records, settings: Settings, ks: Sequence[int]) -> Row:
    claim = OVERLAP_ABOVE_CHANCE
    if rec.t_max is None:
        return claim.inconclusive("no records given", settings)
    t = rec.t_max
    sets = rec.sibling_sets(t)
    if not sets:
        return claim.inconclusive(f"no sibling masks at t={t} among the inputs", settings)
    cells = []
    for k in sorted(ks):
        for s in sorted({s for per_s in sets.values() for s in per_s}):
            per_rep, ovs, chs, jack = {}, [], [], None
            for rep, per_s in sets.items():
                sibs = per_s.get(s, {})
                keep = sorted(sibs)
                if len(keep) < k:
                    continue
                per_rep[rep] = _mean_over_sets(sibs, keep, k, s, "excess")
                ovs.append(_mean_over_sets(sibs, keep, k, s, "overlap"))
                chs.append(_mean_over_sets(sibs, keep, k, s, "chance"))
                jack = _jackknife(keep, k, lambda kept, sibs=sibs: _mean_over_sets(sibs, kept, k, s, "excess"))
            if not per_rep:
                continue
            est = _overlap_estimate(per_rep, jack)
            cells.append(Cell(f"k={k}, s={_f(s)}", est,
                              f"overlap {sum(ovs) / len(ovs):.3f} vs chance {sum(chs) / len(chs):.3f} (exact for "
                              f"the per-layer pruned counts; mean over sets of {k} siblings, {len(per_rep)} "
                              "replicate(s))"))
    if not cells:
        return claim.inconclusive(f"no set of k sibling masks at t={t} for any k of composability.ks", settings)
    return settle(claim, cells, settings, scope=f"every (k, s) at t={t}")


def _pretraining_raises_overlap(rec: _Records, settings: Settings) -> Row:
    claim = PRETRAINING_RAISES_OVERLAP
    if 0 not in rec.ts:
        return claim.inconclusive("no t=0 among the rewind points (composability.pretrain_steps): nothing "
                                  "without pretraining to compare with", settings)
    if rec.t_max == 0:
        return claim.inconclusive("one rewind point (composability.pretrain_steps = [0]): add a t > 0", settings)
    top, zero = rec.sibling_sets(rec.t_max), rec.sibling_sets(0)
    per_rep, jack, grid, a, b = {}, None, [], [], []
    for rep in sorted(set(top) & set(zero)):
        spars = sorted(set(top[rep]) & set(zero[rep]))
        keep = sorted(set(_common_siblings(top[rep])) & set(_common_siblings(zero[rep])))
        if not spars or len(keep) < 2:
            continue
        grid = spars

        def gain(kept, rep=rep, spars=spars):
            return sum(_mean_over_sets(top[rep][s], kept, 2, s, "overlap")
                       - _mean_over_sets(zero[rep][s], kept, 2, s, "overlap") for s in spars) / len(spars)

        per_rep[rep] = gain(keep)
        a.append(sum(_mean_over_sets(top[rep][s], keep, 2, s, "overlap") for s in spars) / len(spars))
        b.append(sum(_mean_over_sets(zero[rep][s], keep, 2, s, "overlap") for s in spars) / len(spars))
        jack = _jackknife(keep, 2, gain)
    if not per_rep:
        return claim.inconclusive(f"no replicate has two sibling masks at both t=0 and t={rec.t_max}", settings)
    est = _overlap_estimate(per_rep, jack)
    cell = Cell(f"k=2, mean over s in {{{', '.join(_f(s) for s in grid)}}}", est,
                f"overlap t={rec.t_max} {sum(a) / len(a):.3f} vs t=0 {sum(b) / len(b):.3f}")
    return settle(claim, [cell], settings)


# --------------------------------------------------------------------------- accuracy
MATCH_HINT = ("set composability.match_sparsity: true or add grid sparsities (one-shot pruning is read between "
              "or beyond its grid points)")
BRACKET_NOTE = ("one-shot pruning read between the grid points that bracket a composed sparsity (set "
                "composability.match_sparsity: true, or add grid points, to compare at the same sparsity)")


def _outcomes(records: list[dict]) -> dict[int, dict]:
    return {r["replicate"]: r for r in records}


def _matches_oneshot(rec: _Records, claim: Claim, op: str, settings: Settings) -> Row:
    t = rec.t_max
    if t is None or not rec.tickets(op, t):
        return claim.inconclusive(f"no retrained {op} tickets among the records given", settings)
    curves = rec.oneshot(t)
    if not curves:
        return claim.inconclusive(f"no one-shot tickets at t={t} among the records given", settings)
    cells = []
    by_cell: dict[tuple, list[dict]] = {}
    for r in rec.tickets(op, t):
        by_cell.setdefault((r["k"], r["target_sparsity"]), []).append(r)
    for (k, s), rows in sorted(by_cell.items()):
        reading = CurveReading()
        for r in rows:
            if r["replicate"] not in curves:
                continue
            reading.add(r["replicate"], 1.0, r["outcome"])
            reading.add_curve(r["replicate"], -1.0, curves[r["replicate"]], r["sparsity"])
        if not reading.point:
            continue
        est = reading.estimate(BRACKET_NOTE)
        sp = sum(r["sparsity"] for r in rows) / len(rows)
        acc = sum(r["test_accuracy"] for r in rows) / len(rows)
        where = ("outside the one-shot grid" if "outside" in reading.where else
                 "between grid points" if "between" in reading.where else "at the same sparsity")
        cells.append(Cell(f"k={k}, s={_f(s)}", est,
                          f"{op} (sparsity {sp:.4f}) {acc:.3f} vs one-shot {acc - est.value:.3f} ({where})",
                          hint=MATCH_HINT if where != "at the same sparsity" else ""))
    if not cells:
        return claim.inconclusive(f"no replicate has both {op} and one-shot tickets at t={t}", settings)
    return settle(claim, cells, settings, scope=f"every (k, s) at t={t}")


def _random_cell(rec: _Records, grid: Sequence[float], lo: float, hi: float):
    """The cell of the random-ticket claim, or the reason there is none."""
    s = random_ticket_point(grid, lo, hi)
    if s is None:
        return None, (f"no sparsity of composability.sparsities ({', '.join(_f(g) for g in grid)}) lies in the "
                      f"claim's range [{_f(lo)}, {_f(hi)}] (claims.random_ticket_min_sparsity/max_sparsity)")
    from lotto.stats import contrast

    s = round(s, 4)
    t = rec.t_max
    one = _outcomes([r for r in rec.tickets("oneshot", t) if r["target_sparsity"] == s])
    rnd = _outcomes([r for r in rec.tickets("random", t) if r["target_sparsity"] == s])
    reps = sorted(set(one) & set(rnd))
    if not reps:
        return None, f"no replicate has both the one-shot and the random ticket at s={_f(s)}, t={t}"
    est = contrast({r: [(1.0, one[r]["outcome"]), (-1.0, rnd[r]["outcome"])] for r in reps})
    a = sum(one[r]["test_accuracy"] for r in reps) / len(reps)
    b = sum(rnd[r]["test_accuracy"] for r in reps) / len(reps)
    return Cell(f"t={t}, s={_f(s)}", est, f"one-shot {a:.3f} vs random ticket {b:.3f}"), ""


def _random_below_oneshot(rec: _Records, settings: Settings, grid, lo, hi) -> Row:
    if rec.t_max is None:
        return RANDOM_BELOW_ONESHOT.inconclusive("no records given", settings)
    cell, why = _random_cell(rec, grid, lo, hi)
    if cell is None:
        return RANDOM_BELOW_ONESHOT.inconclusive(why, settings)
    return settle(RANDOM_BELOW_ONESHOT, [cell], settings)


def _pretraining_helps_composition(rec: _Records, settings: Settings, random_settings: Settings,
                                   grid, lo, hi) -> Row:
    from lotto.stats import judge

    claim = PRETRAINING_HELPS_COMPOSITION
    if 0 not in rec.ts:
        return claim.inconclusive("no t=0 among the rewind points (composability.pretrain_steps)", settings)
    T = rec.t_max
    if T == 0:
        return claim.inconclusive("one rewind point (composability.pretrain_steps = [0]): add a t > 0", settings)
    curves = {0: rec.oneshot(0), T: rec.oneshot(T)}
    if not curves[0] or not curves[T]:
        missing = [f"t={t}" for t in (0, T) if not curves[t]]
        return claim.inconclusive(f"no one-shot tickets at {' and '.join(missing)}: the claim compares each "
                                  "composition with one-shot pruning at its own rewind point", settings)
    # every (op, s) cell with k=2 compositions at both rewind points, read where one-shot brackets them
    comp = {t: {(r["ticket"], r["target_sparsity"], r["replicate"]): r for op in COMPOSED
                for r in rec.tickets(op, t, 2)} for t in (0, T)}
    keys = sorted(set(comp[0]) & set(comp[T]))
    usable, outside = {}, set()
    for op, s, rep in keys:
        if rep not in curves[0] or rep not in curves[T]:
            continue
        inside = all(min(x for x, _ in curves[t][rep]) - 1e-9 <= comp[t][(op, s, rep)]["sparsity"]
                     <= max(x for x, _ in curves[t][rep]) + 1e-9 for t in (0, T))
        if inside:
            usable.setdefault((op, s), []).append(rep)
        else:
            outside.add((op, s))
    cells = {key: reps for key, reps in usable.items() if key not in outside}
    if not cells:
        return claim.inconclusive(
            "no k=2 composition at both t=0 and t=" f"{T} has a sparsity that the one-shot grid brackets at its "
            "own t: add sparsities to composability.sparsities, or set composability.match_sparsity: true", settings)
    reps = sorted(set.intersection(*(set(v) for v in cells.values())))
    reading = CurveReading()
    w = 1.0 / len(cells)
    for op, s in cells:
        for rep in reps:
            for t, sign in ((0, 1.0), (T, -1.0)):
                r = comp[t][(op, s, rep)]
                reading.add_curve(rep, sign * w, curves[t][rep], r["sparsity"])
                reading.add(rep, -sign * w, r["outcome"])
    est = reading.estimate(BRACKET_NOTE)
    loss0 = sum(comp[0][(op, s, rep)]["test_accuracy"] for op, s in cells for rep in reps) / (len(cells) * len(reps))
    lossT = sum(comp[T][(op, s, rep)]["test_accuracy"] for op, s in cells for rep in reps) / (len(cells) * len(reps))
    left_out = f"; {len(outside)} cell(s) outside the one-shot grid left out" if outside else ""
    cell = Cell(f"k=2, {len(cells)} (op, s) cell(s)", est,
                f"composed accuracy t=0 {loss0:.3f} vs t={T} {lossT:.3f}, each against one-shot at its own t"
                f"{left_out}", hint=MATCH_HINT if "between" in reading.where else "")
    # the effect is capped by the gap between one-shot pruning and a random ticket: unresolved, undecidable
    random_cell, why = _random_cell(rec, grid, lo, hi)
    if random_cell is None:
        return claim.inconclusive(f"the run's gap between one-shot pruning and a random ticket is not measured ({why})"
                                  ": without it a composition's loss cannot be told from a random ticket's", settings)
    gap = judge(SUPERIORITY, random_cell.estimate, 0.0, random_settings.confidence)
    row = settle(claim, [cell], settings)
    if gap.verdict != PASS and row.verdict != FAIL:
        from dataclasses import replace

        ci = effect_text(random_cell.estimate.value, gap.interval)
        return replace(row, verdict="INCONCLUSIVE", replicates_needed=None, reason=(
            f"one-shot pruning is not resolved from a random ticket ({random_cell.label}: {ci}), and that gap caps "
            f"the effect: decide comp-random-below-oneshot first (replicates, training, test examples); the effect "
            f"itself: {row.reason}"))
    return row


# --------------------------------------------------------------------------- the sanity check
def _raw_sparsity(record: dict) -> float:
    raw = record.get("raw_sparsity")
    return float(record["sparsity"]) if raw is None or raw != raw else float(raw)


def _intersections_sparser(rec: _Records) -> Row:
    claim = INTERSECTIONS_SPARSER
    inter = [r for r in rec.compose if r["ticket"] == "intersection"]
    if not inter:
        return claim.inconclusive("no intersection sidecars (compose.json) among the records given")
    ks = sorted({r["k"] for r in inter})
    if len(ks) < 2:
        return claim.inconclusive(f"one number of siblings (composability.ks = [{ks[0]}]): add a larger k, e.g. 3")
    steps = []
    by: dict[tuple, list[dict]] = {}
    for r in inter:
        by.setdefault((r["replicate"], r["pretrain_steps"], r["target_sparsity"]), []).append(r)
    for (rep, t, s), rows in sorted(by.items()):
        # the intersection itself, before composability.match_sparsity brought it to the target sparsity
        per_k = {r["k"]: _raw_sparsity(r) for r in rows}
        present = [k for k in ks if k in per_k]
        for k0, k1 in zip(present, present[1:]):
            steps.append((per_k[k1] - per_k[k0], rep, t, s, k0, k1))
    if not steps:
        return claim.inconclusive("no cell has intersections of two different k")
    gain, rep, t, s, k0, k1 = min(steps)
    ok = all(st[0] > 0 for st in steps)
    reason = (f"in each of {len(steps)} steps in k a larger k gives a strictly sparser intersection (smallest gain "
              f"{gain:+.4f}, exact counts)" if ok else
              f"at replicate {rep}, t={t}, s={_f(s)} the intersection of {k1} masks is not sparser than that of "
              f"{k0} ({gain:+.4f}): the composition step is broken")
    return claim.row(PASS if ok else FAIL, reason, estimate=gain, cells=len(steps),
                     cells_pass=sum(st[0] > 0 for st in steps), cells_fail=sum(st[0] <= 0 for st in steps),
                     compared=f"replicate {rep}, t={t}, s={_f(s)}: k={k1} vs k={k0}")


def evaluate(paths: Iterable, cfg: dict) -> list[Row]:
    """One row per claim of :data:`CLAIMS`, from the records at ``paths``; ``cfg`` holds the validated ``claims``
    and ``composability`` sections."""
    rec = _Records(paths)
    section, comp = cfg["claims"], cfg["composability"]
    s = {c.id: Settings.of(c, cfg) for c in CLAIMS if c.kind != SANITY}
    grid = comp["sparsities"]
    lo, hi = section["random_ticket_min_sparsity"], section["random_ticket_max_sparsity"]
    return [
        _overlap_above_chance(rec, s[OVERLAP_ABOVE_CHANCE.id], comp["ks"]),
        _pretraining_raises_overlap(rec, s[PRETRAINING_RAISES_OVERLAP.id]),
        _matches_oneshot(rec, UNION_MATCHES_ONESHOT, "union", s[UNION_MATCHES_ONESHOT.id]),
        _matches_oneshot(rec, INTERSECTION_MATCHES_ONESHOT, "intersection", s[INTERSECTION_MATCHES_ONESHOT.id]),
        _random_below_oneshot(rec, s[RANDOM_BELOW_ONESHOT.id], grid, lo, hi),
        _pretraining_helps_composition(rec, s[PRETRAINING_HELPS_COMPOSITION.id], s[RANDOM_BELOW_ONESHOT.id],
                                       grid, lo, hi),
        _intersections_sparser(rec),
    ]
