"""The claims of Paul et al. (2022) as checks over the IMP family's own records: the level ``metrics.json`` of both
chains (with their per-example results) and the ``imp-path`` records between successive levels (with the
per-example results at every point of the path), read by :func:`analysis.load`.

One epsilon, as in the paper: the standard deviation of the dense network's test error over replicates (at each
rewind point). A level is *matching* when its test error exceeds the dense error by at most epsilon, judged with
an interval on the paired difference (non-inferiority with margin epsilon: matching when the whole interval
lies above -epsilon in accuracy, not matching when it lies below); two levels are *connected* when the error
barrier on the linear path between them is at most epsilon, judged the same way on the barrier (its test-set
noise paired over the path's examples at the barrier's beta, its seed noise from the replicates). Epsilon is an
sd over replicates, so both claims need at least two.
"""

from __future__ import annotations

from typing import Iterable

from lotto.claims import IFF, Cell, Claim, Row, Settings, effect_text, settle
from lotto.stats import FAIL, INCONCLUSIVE, NONINFERIORITY, PASS, SUPERIORITY

FAMILY = "imp"
PAPER = "Paul, Chen, Larsen, Frankle, Ganguli & Dziugaite (2022), arXiv:2210.03044"

BARRIER_IFF_MATCHING = Claim(
    FAMILY, "imp-barrier-iff-matching", IFF,
    "Successive IMP levels (from level 1 on) are linearly connected (error barrier at most epsilon) exactly when "
    "both are matching (test error at most epsilon above the dense network's), at every rewind point.",
    "per level pair: matching (both levels' accuracy minus the dense accuracy above -epsilon) and connected "
    "(barrier below epsilon), each with an interval; the row shows the deciding pair's barrier",
    None, "none to set: epsilon is Paul et al.'s, the sd of the dense test error over replicates, measured",
    f"{PAPER}, abstract: 'pairs of pruned networks at successive pruning iterations are connected by a linear "
    "path with zero error barrier if and only if they are matching'; Appendix D excludes levels 0 and 1")
ADAPTIVE_FEWER_ROUNDS = Claim(
    FAMILY, "imp-adaptive-fewer-rounds", SUPERIORITY,
    "The adaptive pruning ratio reaches the target sparsity in fewer retraining rounds than the fixed ratio, "
    "with a matching network there, at every rewind point it runs.",
    "retraining rounds to the target sparsity, fixed ratio minus adaptive; and the adaptive network's accuracy "
    "minus the dense one's there (non-inferiority with margin epsilon)",
    1.0, "one retraining round is the unit of IMP's cost: saving less is saving nothing",
    f"{PAPER}, Section 2.2: the adaptive heuristic 'can yield a 33% improvement in training compute compared to "
    "IMP with a fixed pruning ratio of 20%'")

CLAIMS = (BARRIER_IFF_MATCHING, ADAPTIVE_FEWER_ROUNDS)


def _levels(records: dict) -> dict[tuple, dict]:
    """(chain, tau, level, replicate) -> level metrics record with its Outcome (level 0 is the fixed chain's)."""
    from lotto.stats import Outcome

    out = {}
    for m in records["metrics"]:
        m = dict(m)
        m["outcome"] = Outcome.of(m, f"level metrics rep{m['replicate']} tau={m['pretrain_steps']} "
                                     f"{m['chain']} L{m['level']}")
        chain = "fixed" if int(m["level"]) == 0 else m["chain"]
        out[(chain, int(m["pretrain_steps"]), int(m["level"]), int(m["replicate"]))] = m
    return out


def _epsilons(levels: dict, taus) -> tuple[dict[int, float], list[str]]:
    """tau -> epsilon (sd of the dense test error over replicates); and the rewind points lacking two."""
    import statistics

    eps, few = {}, []
    for tau in sorted(taus):
        errors = [1.0 - float(r["test_accuracy"]) for (c, t, L, _), r in levels.items() if c == "fixed"
                  and t == tau and L == 0]
        if len(errors) < 2:
            few.append(f"tau={tau}: {len(errors)}")
        else:
            eps[tau] = statistics.stdev(errors)
    return eps, few


def _few(claim: Claim, few: list[str], settings: Settings) -> Row:
    return claim.inconclusive(
        "epsilon is the sd of the dense test error over replicates (Paul et al.), but the dense network has "
        f"fewer than two replicates ({', '.join(few)}): add a replicate to imp.replicates", settings)


def _vs_dense(levels: dict, chain: str, tau: int, level: int):
    """The estimate of accuracy(level) - accuracy(dense), paired by replicate and test example."""
    from lotto.stats import contrast

    reps = sorted(r for (c, t, L, r) in levels if (c, t, L) == (chain, tau, level)
                  and ("fixed", tau, 0, r) in levels)
    if not reps:
        return None
    return contrast({r: [(1.0, levels[(chain, tau, level, r)]["outcome"]),
                         (-1.0, levels[("fixed", tau, 0, r)]["outcome"])] for r in reps})


def _barrier(paths: list[dict]):
    """The estimate of the error barrier of one level pair over its replicates: at the beta where the mean
    excess of the error over the line between the endpoints is largest, the contrast err(beta) - (1 - beta)
    err(0) - beta err(1) per example, paired over the path's test examples. (Choosing that beta from the same
    data makes the estimate lean high: conservative for 'connected'.)"""
    from lotto.stats import Outcome, contrast

    by_rep = {int(p["replicate"]): p for p in paths}
    betas = [float(b) for b in next(iter(by_rep.values()))["beta"]]
    errors = [[float(e) for e in p["test_error"]] for p in by_rep.values()]
    excess = [sum(e[j] - (1 - b) * e[0] - b * e[-1] for e in errors) / len(errors) for j, b in enumerate(betas)]
    j = max(range(len(betas)), key=lambda i: excess[i])
    b = betas[j]
    per_rep = {}
    for rep, p in by_rep.items():
        bits = p.get("test_correct")
        n = p.get("test_examples")

        def outcome(i):
            acc = 1.0 - float(p["test_error"][i])
            if bits:
                return Outcome.of({"test_accuracy": acc, "test_correct": bits[i]},
                                  f"imp-path rep{rep} L{p['level_a']}-L{p['level_b']} beta={betas[i]}")
            return Outcome(acc, examples=int(n) if n else None)

        # barrier = err(b) - (1-b) err(0) - b err(1) = -acc(b) + (1-b) acc(0) + b acc(1)
        per_rep[rep] = [(-1.0, outcome(j)), (1 - b, outcome(0)), (b, outcome(len(betas) - 1))]
    return contrast(per_rep), b


def _barrier_iff_matching(records: dict, settings: Settings) -> Row:
    from lotto.stats import judge

    claim = BARRIER_IFF_MATCHING
    pairs: dict[tuple, list[dict]] = {}
    for p in records["path"]:
        a, b = int(p["level_a"]), int(p["level_b"])
        if b == a + 1 and a >= 1:  # the paper excludes level 0 -> 1 (the dense network is not yet stable)
            pairs.setdefault((int(p["pretrain_steps"]), a), []).append(p)
    if not pairs:
        return claim.inconclusive("no path records between successive levels from level 1 on among the records "
                                  "given (imp.levels must be at least 3)", settings)
    levels = _levels(records)
    eps, few = _epsilons(levels, {tau for tau, _ in pairs})
    if few:
        return _few(claim, few, settings)
    conf = settings.confidence
    status: dict[tuple, str] = {}  # (tau, L) -> PASS (matching) / FAIL (not) / INCONCLUSIVE

    def matching(tau, L):
        if (tau, L) not in status:
            est = _vs_dense(levels, "fixed", tau, L)
            if est is None:
                raise ValueError(f"imp claims: no level metrics for tau={tau}, level {L} among the records given, "
                                 "though a path to it is")
            status[(tau, L)] = judge(NONINFERIORITY, est, eps[tau], conf).verdict
        return status[(tau, L)]

    cells, boundary = [], []
    sens, spec = [0, 0], [0, 0]
    for (tau, a), paths in sorted(pairs.items()):
        ends = (matching(tau, a), matching(tau, a + 1))
        pair_matching = PASS if ends == (PASS, PASS) else FAIL if FAIL in ends else INCONCLUSIVE
        if pair_matching == INCONCLUSIVE:
            boundary.append(f"tau={tau} L{a}-L{a + 1}")
            continue
        est, beta = _barrier(paths)
        # "connected": the barrier below epsilon, i.e. epsilon - barrier above 0 (non-inferiority of -barrier)
        connected = judge(NONINFERIORITY, est.negated(), eps[tau], conf).verdict
        label = f"tau={tau}, L{a}->L{a + 1}"
        want = PASS if pair_matching == PASS else FAIL
        detail = (f"{'both matching' if pair_matching == PASS else 'not both matching'}, barrier "
                  f"{est.value:+.4f} at beta={beta:g} vs epsilon {eps[tau]:.4f}")
        if pair_matching == PASS:
            sens[1] += 1
            sens[0] += connected == PASS
        else:
            spec[1] += 1
            spec[0] += connected == FAIL
        # the cell as a judged effect: -(barrier) against -epsilon, where agreeing means the expected side
        cells.append((label, est, connected, want, detail))
    if not cells:
        return claim.inconclusive(
            f"every successive level pair is at the matching boundary ({', '.join(boundary)}): no pair's matching "
            "status is decided; more replicates narrow the intervals", settings)
    # the verdict: agreement where both statuses are decided; PASS needs both halves tested
    agree = [c for c in cells if c[2] == c[3]]
    disagree = [c for c in cells if c[2] != INCONCLUSIVE and c[2] != c[3]]
    undecided = [c for c in cells if c[2] == INCONCLUSIVE]
    halves = {c[3] for c in cells}
    shown = (disagree or undecided or agree)[0]
    label, est, connected, want, detail = shown
    ci = est.interval(conf)
    counts = (f"sensitivity {sens[0]}/{sens[1]} matching pairs connected, specificity {spec[0]}/{spec[1]} "
              f"non-matching pairs with a barrier")
    skipped = f"; {len(boundary)} pair(s) at the matching boundary not tested ({', '.join(boundary[:3])}" \
              f"{' ...' if len(boundary) > 3 else ''})" if boundary else ""
    if disagree:
        verdict = FAIL
        reason = (f"{len(disagree)} pair(s) disagree, e.g. {label}: {detail}; {counts}{skipped}")
    elif undecided:
        verdict = INCONCLUSIVE
        reason = (f"{len(undecided)} pair(s) have a barrier interval straddling epsilon, e.g. {label}: barrier "
                  f"{effect_text(est.value, ci, 4)}; more replicates or test examples (imp.test_size) narrow it; "
                  f"{counts}{skipped}")
    elif halves != {PASS, FAIL}:
        verdict = INCONCLUSIVE
        fix = ("no level reaches the sparsity where matching breaks: raise imp.levels" if halves == {PASS} else
               "no decided pair is matching: add a later rewind point to imp.pretrain_steps or fewer levels")
        reason = f"every decided pair agrees, but only one half of the equivalence is tested: {fix}; {counts}{skipped}"
    else:
        verdict = PASS
        reason = f"every decided pair agrees: {counts}{skipped}"
    notes = "; ".join(dict.fromkeys(n for c in cells for n in c[1].notes))
    return claim.row(verdict, reason, estimate=est.value, ci_low=ci[0] if ci else None,
                     ci_high=ci[1] if ci else None, margin=eps.get(int(label.split(",")[0][4:])),
                     confidence=conf, replicates=est.replicates, test_examples=est.examples, cells=len(cells),
                     cells_pass=len(agree), cells_fail=len(disagree), compared=f"{label}: {detail}", note=notes)


def _adaptive_fewer_rounds(records: dict, imp: dict, settings: Settings) -> Row:
    from lotto.imp import analysis
    from lotto.stats import replicated

    claim = ADAPTIVE_FEWER_ROUNDS
    if not any(m["chain"] == "adaptive" for m in records["metrics"]):
        return claim.inconclusive("no adaptive chain among the records (imp.adaptive.enabled is false?)", settings)
    target = float(imp["adaptive"]["target_sparsity"])
    levels = _levels(records)
    taus = sorted({t for (c, t, _, _) in levels if c == "adaptive"})
    eps, few = _epsilons(levels, taus)
    if few:
        return _few(claim, few, settings)
    cells, short = [], []
    for tau in taus:
        reached = {}
        for chain, key in (("fixed", "imp.levels"), ("adaptive", "imp.adaptive.levels")):
            per_rep: dict[int, list] = {}
            for (c, t, L, r), m in levels.items():
                if t == tau and (c == chain or L == 0):
                    per_rep.setdefault(r, []).append((L, float(m["sparsity"])))
            rounds = {}
            for r, lv in per_rep.items():
                lv.sort()
                n = analysis.rounds_to_reach([s for _, s in lv], target)
                if n is None:
                    short.append(f"the {chain} chain at tau={tau} (replicate {r}) ends at sparsity "
                                 f"{max(s for _, s in lv):.3f} < {target:g} (raise {key})")
                else:
                    rounds[r] = lv[n][0]
            reached[chain] = rounds
        if short:
            continue
        reps = sorted(set(reached["fixed"]) & set(reached["adaptive"]))
        saved = replicated({r: reached["fixed"][r] - reached["adaptive"][r] for r in reps})
        fixed = sum(reached["fixed"][r] for r in reps) / len(reps)
        adaptive = sum(reached["adaptive"][r] for r in reps) / len(reps)
        cells.append(Cell(f"tau={tau}: rounds saved", saved,
                          f"rounds to sparsity {target:g}: fixed ({imp['prune_fraction']:g} per level) {fixed:.2f} vs "
                          f"adaptive {adaptive:.2f}"))
        from lotto.stats import contrast

        hit = {r: reached["adaptive"][r] for r in reps}
        match = contrast({r: [(1.0, levels[("adaptive" if L else "fixed", tau, L, r)]["outcome"]),
                              (-1.0, levels[("fixed", tau, 0, r)]["outcome"])] for r, L in hit.items()})
        cells.append(Cell(f"tau={tau}: adaptive matching at {target:g}", match,
                          f"accuracy minus dense's at the adaptive level reaching {target:g} vs epsilon "
                          f"{eps[tau]:.4f}", kind=NONINFERIORITY, margin=eps[tau]))
    if short:
        return claim.inconclusive("; ".join(short), settings)
    return settle(claim, cells, settings, scope="every rewind point (rounds saved and matching)")


def evaluate(paths: Iterable, cfg: dict) -> list[Row]:
    """One row per claim of :data:`CLAIMS` from the IMP records at ``paths``; ``cfg`` holds the validated
    ``claims`` and ``imp`` sections."""
    from lotto.imp import analysis

    records = analysis.load(paths)
    s = {c.id: Settings.of(c, cfg) for c in CLAIMS}
    return [
        _barrier_iff_matching(records, s[BARRIER_IFF_MATCHING.id]),
        _adaptive_fewer_rounds(records, cfg["imp"], s[ADAPTIVE_FEWER_ROUNDS.id]),
    ]
