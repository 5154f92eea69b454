"""The claims of Paul et al. (2022) as checks over the IMP family's own records: the level ``metrics.json`` of
both chains and the ``imp-path`` records between successive levels (read by :func:`analysis.load`).

Matching is :func:`analysis.matching_thresholds`' (test error at most the dense mean error plus one sd over
replicates). That sd is the paper's epsilon, so a claim about matching needs at least two replicates: with one,
the threshold would be the dense error itself and the verdict would rest on noise, so it is INCONCLUSIVE.
"""

from __future__ import annotations

from typing import Iterable

from lotto.claims import Claim, Row, stat

FAMILY = "imp"

BARRIER_IFF_MATCHING = Claim(
    FAMILY, "imp-barrier-iff-matching",
    "Successive IMP levels are linearly connected (error barrier at most the tolerance) exactly when both are "
    "matching, over every pair of successive levels and every rewind point.")
ADAPTIVE_FEWER_ROUNDS = Claim(
    FAMILY, "imp-adaptive-fewer-rounds",
    "The adaptive pruning ratio reaches the target sparsity in fewer retraining rounds than the fixed ratio, "
    "with a matching network there.")

CLAIMS = (BARRIER_IFF_MATCHING, ADAPTIVE_FEWER_ROUNDS)


def _replicates_missing(claim: Claim, records: dict, taus, tol) -> Row | None:
    """INCONCLUSIVE unless every rewind point in ``taus`` has the dense network of two replicates or more."""
    dense: dict[int, set] = {}
    for r in records["metrics"]:
        if int(r["level"]) == 0:
            dense.setdefault(int(r["pretrain_steps"]), set()).add(int(r["replicate"]))
    few = {t: len(dense.get(t, ())) for t in sorted(taus) if len(dense.get(t, ())) < 2}
    if few:
        where = ", ".join(f"tau={t}: {n}" for t, n in few.items())
        return claim.inconclusive(
            f"matching needs the sd of the dense test error over replicates (Paul et al.'s epsilon), but the dense "
            f"network has fewer than two replicates ({where}): add a replicate to imp.replicates", tol)
    return None


def _barrier_iff_matching(records: dict, tol: float, min_agreement: float) -> Row:
    from lotto.imp import analysis

    claim = BARRIER_IFF_MATCHING
    paths = [p for p in records["path"] if int(p["level_b"]) == int(p["level_a"]) + 1]
    if not paths:
        return claim.inconclusive("no path records between successive levels among the records given", tol)
    taus = {int(p["pretrain_steps"]) for p in paths}
    if (row := _replicates_missing(claim, records, taus, tol)) is not None:
        return row
    thr = analysis.matching_thresholds(records)
    errors: dict[tuple, list[float]] = {}
    for m in records["metrics"]:
        if m["chain"] == "fixed" or int(m["level"]) == 0:
            errors.setdefault((int(m["pretrain_steps"]), int(m["level"])), []).append(1.0 - float(m["test_accuracy"]))
    barriers: dict[tuple, list[float]] = {}
    for p in paths:
        barriers.setdefault((int(p["pretrain_steps"]), int(p["level_a"])), []).append(float(p["barrier"]))
    cells = []  # (tau, L, mean barrier, matching)
    for (tau, level), values in sorted(barriers.items()):
        ends = [errors.get((tau, level)), errors.get((tau, level + 1))]
        if None in ends:
            raise ValueError(f"imp claims: no level metrics for tau={tau}, level {level} or {level + 1} among the "
                             "records given, though a path between them is")
        matching = all(stat(e).mean <= thr[tau] + 1e-12 for e in ends)
        cells.append((tau, level, stat(values).mean, matching))
    connected = [c[2] <= tol + 1e-12 for c in cells]
    agree = sum(c[3] == k for c, k in zip(cells, connected))
    share = agree / len(cells)
    match = stat(c[2] for c in cells if c[3])
    other = stat(c[2] for c in cells if not c[3])
    compared = (f"{agree} of {len(cells)} successive level pairs agree (barrier <= {tol:g} iff both matching): "
                f"{share:.2f} vs required {min_agreement:g}; barrier of matching pairs {match.text()}, of the "
                f"others {other.text()}")
    if not match.n or not other.n:
        which = "every" if match.n else "no"
        fix = ("no level reaches the sparsity where matching breaks: raise imp.levels" if match.n else
               "add a later rewind point to imp.pretrain_steps or fewer levels")
        return claim.inconclusive(f"{which} successive level pair is matching, so only one half of the equivalence "
                                  f"is tested: {fix}", tol, compared)
    ok = share >= min_agreement - 1e-12
    odd = [f"tau={c[0]} L{c[1]}->L{c[1] + 1} ({'matching' if c[3] else 'not matching'}, barrier {c[2]:.3f})"
           for c, k in zip(cells, connected) if c[3] != k]
    reason = (f"agreement {share:.2f} >= claims.min_agreement {min_agreement:g}" if ok else
              f"agreement {share:.2f} < claims.min_agreement {min_agreement:g}")
    if odd:
        reason += "; disagreeing: " + ", ".join(odd[:4]) + (f" and {len(odd) - 4} more" if len(odd) > 4 else "")
    return claim.verdict(ok, a=("barrier, matching level pairs", match), b=("barrier, non-matching level pairs", other),
                         tolerance=tol, compared=compared, reason=reason)


def _adaptive_fewer_rounds(records: dict, imp: dict) -> Row:
    from lotto.imp import analysis

    claim = ADAPTIVE_FEWER_ROUNDS
    if not any(m["chain"] == "adaptive" for m in records["metrics"]):
        return claim.inconclusive("no adaptive chain among the records (imp.adaptive.enabled is false?)")
    target = float(imp["adaptive"]["target_sparsity"])
    table = analysis.rounds_table(records, target)
    taus = set(table["pretrain_steps"])
    if (row := _replicates_missing(claim, records, taus, None)) is not None:
        return row
    cells, short = [], []
    for tau in sorted(taus):
        fixed = table[(table["chain"] == "fixed") & (table["pretrain_steps"] == tau)]
        adaptive = table[(table["chain"] == "adaptive") & (table["pretrain_steps"] == tau)]
        for name, part, key in (("fixed", fixed, "imp.levels"), ("adaptive", adaptive, "imp.adaptive.levels")):
            if part.empty or part["retrain_rounds"].isna().any():
                reached = part["sparsity_reached"].min() if len(part) else 0.0
                short.append(f"the {name} chain at tau={tau} ends at sparsity {reached:.3f} < {target:g} "
                             f"(raise {key})")
        if not short:
            cells.append((tau, stat(adaptive["retrain_rounds"]), stat(fixed["retrain_rounds"]),
                          bool(adaptive["matching"].all()), stat(adaptive["test_accuracy"])))
    if short:
        return claim.inconclusive("; ".join(short))
    bad = [c for c in cells if not (c[1].mean < c[2].mean and c[3])]
    tau, a, b, matching, acc = (bad or cells)[0]
    compared = (f"tau={tau}: retraining rounds to sparsity {target:g}: adaptive {a.text(2)} vs fixed "
                f"({imp['prune_fraction']:g} per level) {b.text(2)}; adaptive accuracy there {acc.text()} "
                f"({'matching' if matching else 'not matching'})")
    if not bad:
        reason = f"at every rewind point the adaptive chain needs fewer rounds and is matching at {target:g}"
    elif not matching:
        reason = f"at tau={tau} the adaptive chain is not matching at sparsity {target:g} in every replicate"
    else:
        reason = f"at tau={tau} the adaptive chain needs no fewer rounds than the fixed one"
    return claim.verdict(not bad, a=(f"adaptive rounds to {target:g}, tau={tau}", a),
                         b=(f"fixed rounds to {target:g}, tau={tau}", b), compared=compared, reason=reason)


def evaluate(paths: Iterable, cfg: dict) -> list[Row]:
    """One row per claim of :data:`CLAIMS` from the IMP records at ``paths``; ``cfg`` holds the validated
    ``claims`` and ``imp`` sections."""
    from lotto.imp import analysis

    tol = cfg["claims"]
    records = analysis.load(paths)
    return [
        _barrier_iff_matching(records, tol["barrier_tolerance"], tol["min_agreement"]),
        _adaptive_fewer_rounds(records, cfg["imp"]),
    ]
