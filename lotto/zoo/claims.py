"""The claims of Paganini & Forde (2020) as checks over the zoo family's own records: the last round's masks
and ``metrics.json`` of the iterative-pruning runs, each task's bespoke ticket mask, and the transfer records
(every ticket retrained on every task). numpy only (no torch).

Masks of different tasks overlap "more than random" against the exact expectation for random masks with the
same per-layer kept counts: two independent uniformly random masks keeping a and b of a layer's n weights share
a*b/n of them on average (each kept weight of one is kept by the other with probability b/n), summed over
layers. Exact, free of seeds and of Monte-Carlo noise, and as cheap for ResNet-18 as for LeNet; seeded shuffles
would estimate the same number with an error of their own.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Iterable

from lotto.claims import Claim, Row, above, not_below, stat, within

FAMILY = "zoo"

METHODS_DIFFER = Claim(
    FAMILY, "zoo-methods-differ",
    "Different pruning methods find different masks at comparable accuracy: at the last round, methods whose "
    "tickets are equally accurate keep sets of weights at a Jaccard distance above the tolerance.")
BESPOKE_BEST = Claim(
    FAMILY, "zoo-bespoke-best-on-own-task",
    "Each bespoke ticket is the most accurate ticket on the task it was found on, among the bespoke tickets.")
TRANSFER_ABOVE_RANDOM = Claim(
    FAMILY, "zoo-transfer-above-random",
    "Tickets found on other tasks transfer: on every task, each other task's bespoke ticket beats the random "
    "ticket.")
TASK_MASKS_OVERLAP = Claim(
    FAMILY, "zoo-task-masks-overlap",
    "Bespoke masks found on different tasks from one initialisation share more kept weights than random masks "
    "with the same per-layer sparsity (Jaccard similarity above the random expectation).")
CONSENSUS_MATCHES_BESPOKE = Claim(
    FAMILY, "zoo-consensus-matches-bespoke",
    "The consensus (pret-a-porter) ticket is as accurate as each task's bespoke ticket on that task.")
CONSENSUS_ABOVE_RANDOM = Claim(
    FAMILY, "zoo-consensus-above-random",
    "The consensus (pret-a-porter) ticket beats the random ticket on every task.")
REWIND_NOT_WORSE = Claim(
    FAMILY, "zoo-rewind-not-worse-than-finetune",
    "At the last round, rewinding the surviving weights is at least as accurate as finetuning them, for every "
    "pruning method.")

CLAIMS = (METHODS_DIFFER, BESPOKE_BEST, TRANSFER_ABOVE_RANDOM, TASK_MASKS_OVERLAP, CONSENSUS_MATCHES_BESPOKE,
          CONSENSUS_ABOVE_RANDOM, REWIND_NOT_WORSE)

REWINDS = ("rewind_init", "rewind_t")
_COORDS = ("task", "method", "handling", "iteration", "replicate")


class _Records:
    """Last-round records and masks, and the ticket x target transfer table."""

    def __init__(self, paths, zoo: dict):
        from lotto.io import read_json
        from lotto.masks import Mask

        self.last = zoo["iterations"]
        self.transfer_run = (zoo["transfer"]["method"], zoo["transfer"]["handling"])
        self.rounds: dict[tuple, float] = {}  # (task, method, handling, replicate) -> last-round accuracy
        self.masks: dict[tuple, Mask] = {}  # (task, method, handling, replicate) -> last-round mask
        transfer: dict[tuple, dict[int, float]] = {}  # (ticket, target) -> replicate -> accuracy
        own: dict[tuple, dict[int, float]] = {}  # the same from the bespoke runs' own last rounds
        self.sparsity: dict[str, list[float]] = {}  # ticket -> sparsities
        for p in paths:
            p = Path(p)
            if p.suffix == ".mask":
                mask = Mask.load(p)
                missing = [k for k in _COORDS if k not in mask.meta]
                if missing:
                    raise ValueError(f"{p}: mask lacks the labels {missing} (not written by lotto zoo-iterate?)")
                m = mask.meta
                if m["iteration"] == self.last:
                    self.masks[(m["task"], m["method"], m["handling"], m["replicate"])] = mask
                continue
            r = read_json(p)
            if "ticket" in r and "target" in r:
                transfer.setdefault((r["ticket"], r["target"]), {})[r.get("replicate")] = r["test_accuracy"]
                self.sparsity.setdefault(r["ticket"], []).append(r.get("sparsity"))
            elif "iteration" in r and "method" in r:
                if r["iteration"] != self.last:
                    continue
                self.rounds[(r["task"], r["method"], r["handling"], r["replicate"])] = r["test_accuracy"]
                if (r["method"], r["handling"]) == self.transfer_run:
                    own.setdefault((f"bespoke_{r['task']}", r["task"]), {})[r["replicate"]] = r["test_accuracy"]
                    self.sparsity.setdefault(f"bespoke_{r['task']}", []).append(r.get("sparsity"))
            else:
                raise ValueError(f"{p}: neither a transfer record (ticket, target) nor an iterative-pruning "
                                 "record (task, method, handling, iteration)")
        # a bespoke ticket on its own task: its own last round unless it was retrained there separately
        self.transfer = {**own, **transfer}
        self.tasks = sorted({target for _, target in self.transfer})

    def acc(self, ticket: str, target: str) -> dict[int, float]:
        return self.transfer.get((ticket, target), {})

    def sparsity_text(self, ticket: str) -> str:
        s = stat(self.sparsity.get(ticket, []))
        return "" if s.mean is None else f" (sparsity {s.mean:.3f})"


def _paired(a: dict[int, float], b: dict[int, float]):
    reps = sorted(set(a) & set(b))
    return stat(a[r] for r in reps), stat(b[r] for r in reps)


def _one_task(claim: Claim, rec: _Records, tol) -> Row | None:
    if len(rec.tasks) < 2:
        names = ", ".join(rec.tasks) or "none"
        return claim.inconclusive(f"one task ({names}): add a task under zoo.tasks to move tickets between", tol)
    return None


# --------------------------------------------------------------------------- masks
def _methods_differ(rec: _Records, jac_tol: float, acc_tol: float) -> Row:
    from lotto.masks import jaccard_distance

    claim = METHODS_DIFFER
    groups: dict[tuple, dict[str, dict[int, tuple]]] = {}  # (task, handling) -> method -> replicate -> mask, acc
    for (task, method, handling, rep), mask in rec.masks.items():
        acc = rec.rounds.get((task, method, handling, rep))
        if acc is not None:
            groups.setdefault((task, handling), {}).setdefault(method, {})[rep] = (mask, acc)
    pairs = []
    for (task, handling), methods in sorted(groups.items()):
        for ma, mb in combinations(sorted(methods), 2):
            reps = sorted(set(methods[ma]) & set(methods[mb]))
            if not reps:
                continue
            dist = stat(jaccard_distance(methods[ma][r][0], methods[mb][r][0]) for r in reps)
            acc_a, acc_b = stat(methods[ma][r][1] for r in reps), stat(methods[mb][r][1] for r in reps)
            pairs.append((dist, task, handling, ma, mb, acc_a, acc_b))
    if not pairs:
        return claim.inconclusive("fewer than two pruning methods ran under one handling (zoo.methods): nothing "
                                  "to compare", jac_tol)
    comparable = [p for p in pairs if within(p[5].mean, p[6].mean, acc_tol)]
    if not comparable:
        gap = min(abs(p[5].mean - p[6].mean) for p in pairs)
        return claim.inconclusive(
            f"no two methods reach comparable accuracy at round {rec.last} (closest pair {gap:.3f} apart, more "
            f"than claims.accuracy_tolerance {acc_tol:g}): the claim is about equally good tickets", jac_tol)
    dist, task, handling, ma, mb, acc_a, acc_b = min(comparable, key=lambda p: p[0].mean)
    bad = [p for p in comparable if not above(p[0].mean, 0.0, jac_tol)]
    compared = (f"closest of {len(comparable)} equally accurate method pairs (of {len(pairs)}), {task}, {handling}, "
                f"round {rec.last}: {ma} vs {mb}: Jaccard distance {dist.text()}; accuracies {acc_a.text()} vs "
                f"{acc_b.text()}")
    reason = (f"every pair of equally accurate methods keeps masks at least {jac_tol:g} apart" if not bad else
              f"{len(bad)} pair(s) of equally accurate methods keep nearly the same weights (distance "
              f"{dist.mean:.3f} < {jac_tol:g})")
    return claim.verdict(not bad, a=(f"Jaccard distance {ma} vs {mb} ({handling})", dist), tolerance=jac_tol,
                         compared=compared, reason=reason)


def _shared(a, b) -> tuple[float, float]:
    """(observed, random-expected) Jaccard similarity of the kept weights of two masks; the expectation keeps
    each layer's kept counts (see the module docstring)."""
    la, lb = a.layers(), b.layers()
    both = expected = 0.0
    for name, x in la.items():
        y = lb[name]
        both += int((x & y).sum())
        expected += int(x.sum()) * int(y.sum()) / x.size
    ka, kb = a.kept(), b.kept()
    sim = lambda i: 0.0 if ka + kb - i == 0 else i / (ka + kb - i)  # noqa: E731
    return sim(both), sim(expected)


def _task_masks_overlap(rec: _Records, tol: float) -> Row:
    claim = TASK_MASKS_OVERLAP
    method, handling = rec.transfer_run
    bespoke: dict[str, dict[int, object]] = {}
    for (task, m, h, rep), mask in rec.masks.items():
        if (m, h) == (method, handling):
            bespoke.setdefault(task, {})[rep] = mask
    if len(bespoke) < 2:
        return claim.inconclusive(f"bespoke masks of one task ({', '.join(bespoke) or 'none'}): add a task under "
                                  "zoo.tasks", tol)
    cells = []
    for ta, tb in combinations(sorted(bespoke), 2):
        reps = sorted(set(bespoke[ta]) & set(bespoke[tb]))
        values = [_shared(bespoke[ta][r], bespoke[tb][r]) for r in reps]
        if values:
            obs, rnd = stat(v[0] for v in values), stat(v[1] for v in values)
            cells.append((obs.mean - rnd.mean, ta, tb, obs, rnd))
    if not cells:
        return claim.inconclusive("no replicate has bespoke masks of two tasks", tol)
    margin, ta, tb, obs, rnd = min(cells, key=lambda c: c[0])
    bad = [c for c in cells if not above(c[3].mean, c[4].mean, tol)]
    compared = (f"closest of {len(cells)} task pairs, {method}/{handling} round {rec.last}: {ta} vs {tb}: Jaccard "
                f"similarity {obs.text()} vs {rnd.text()} for random masks of the same per-layer sparsity")
    reason = (f"every pair shares more than random masks would, by at least {tol:g} (smallest margin {margin:+.3f})"
              if not bad else f"{len(bad)} pair(s) share no more than random masks would (margin {margin:+.3f} "
              f"< {tol:g})")
    return claim.verdict(not bad, a=(f"Jaccard similarity {ta} vs {tb}", obs),
                         b=("expected for random masks, same per-layer sparsity", rnd), tolerance=tol,
                         compared=compared, reason=reason)


# --------------------------------------------------------------------------- transfer
def _bespoke_best(rec: _Records, tol: float) -> Row:
    claim = BESPOKE_BEST
    if (row := _one_task(claim, rec, tol)) is not None:
        return row
    cells = []
    for t in rec.tasks:
        own = rec.acc(f"bespoke_{t}", t)
        others = [(u, rec.acc(f"bespoke_{u}", t)) for u in rec.tasks if u != t and rec.acc(f"bespoke_{u}", t)]
        if not own or not others:
            continue
        for u, acc in others:
            a, b = _paired(own, acc)
            cells.append((a.mean - b.mean, t, u, a, b))
    if not cells:
        return claim.inconclusive("no task has both its own bespoke ticket and another's retrained on it", tol)
    diff, t, u, a, b = min(cells, key=lambda c: c[0])
    bad = [c for c in cells if not not_below(c[3].mean, c[4].mean, tol)]
    compared = f"on {t}: its own bespoke ticket {a.text()} vs bespoke_{u} {b.text()} (closest of {len(cells)})"
    reason = (f"on every task its own ticket is at least as accurate as the others, less {tol:g} (closest "
              f"{diff:+.3f})" if not bad else
              f"on {t} the ticket found on {u} beats its own by {-diff:.3f} (more than {tol:g})")
    return claim.verdict(not bad, a=(f"bespoke_{t} on {t}", a), b=(f"bespoke_{u} on {t}", b), tolerance=tol,
                         compared=compared, reason=reason)


def _versus_random(claim: Claim, rec: _Records, tol: float, tickets) -> Row:
    """Every ticket ``tickets(target)`` names beats the random ticket on that target by at least ``tol``."""
    cells = []
    for t in rec.tasks:
        rnd = rec.acc("random", t)
        for ticket in tickets(t):
            acc = rec.acc(ticket, t)
            if rnd and acc:
                a, b = _paired(acc, rnd)
                cells.append((a.mean - b.mean, t, ticket, a, b))
    if not cells:
        return claim.inconclusive("no task has both the random ticket and the compared tickets retrained on it", tol)
    diff, t, ticket, a, b = min(cells, key=lambda c: c[0])
    bad = [c for c in cells if not above(c[3].mean, c[4].mean, tol)]
    compared = (f"on {t}: {ticket}{rec.sparsity_text(ticket)} {a.text()} vs random{rec.sparsity_text('random')} "
                f"{b.text()} (smallest lead of {len(cells)})")
    reason = (f"every ticket beats the random ticket by at least {tol:g} (smallest lead {diff:.3f})" if not bad else
              f"{len(bad)} of {len(cells)} tickets beat the random ticket by less than {tol:g} ({ticket} on {t}: "
              f"{diff:+.3f})")
    return claim.verdict(not bad, a=(f"{ticket} on {t}", a), b=(f"random on {t}", b), tolerance=tol,
                         compared=compared, reason=reason)


def _transfer_above_random(rec: _Records, tol: float) -> Row:
    if (row := _one_task(TRANSFER_ABOVE_RANDOM, rec, tol)) is not None:
        return row
    return _versus_random(TRANSFER_ABOVE_RANDOM, rec, tol, lambda t: [f"bespoke_{u}" for u in rec.tasks if u != t])


def _consensus_above_random(rec: _Records, tol: float) -> Row:
    if (row := _one_task(CONSENSUS_ABOVE_RANDOM, rec, tol)) is not None:
        return row
    return _versus_random(CONSENSUS_ABOVE_RANDOM, rec, tol, lambda t: ["consensus"])


def _consensus_matches_bespoke(rec: _Records, tol: float) -> Row:
    claim = CONSENSUS_MATCHES_BESPOKE
    if (row := _one_task(claim, rec, tol)) is not None:
        return row
    cells = []
    for t in rec.tasks:
        cons, own = rec.acc("consensus", t), rec.acc(f"bespoke_{t}", t)
        if cons and own:
            a, b = _paired(cons, own)
            cells.append((abs(a.mean - b.mean), t, a, b))
    if not cells:
        return claim.inconclusive("no task has both the consensus and its bespoke ticket retrained on it", tol)
    gap, t, a, b = max(cells, key=lambda c: c[0])
    bad = [c for c in cells if not within(c[2].mean, c[3].mean, tol)]
    compared = (f"on {t}: consensus{rec.sparsity_text('consensus')} {a.text()} vs bespoke_{t}"
                f"{rec.sparsity_text(f'bespoke_{t}')} {b.text()} (largest gap of {len(cells)} tasks)")
    reason = (f"on every task the consensus ticket is within {tol:g} of the bespoke one (largest gap {gap:.3f})"
              if not bad else f"on {len(bad)} task(s) the consensus ticket is more than {tol:g} from the bespoke "
              f"one ({t}: {a.mean - b.mean:+.3f})")
    return claim.verdict(not bad, a=(f"consensus on {t}", a), b=(f"bespoke_{t} on {t}", b), tolerance=tol,
                         compared=compared, reason=reason)


# --------------------------------------------------------------------------- handlings
def _rewind_not_worse(rec: _Records, tol: float) -> Row:
    claim = REWIND_NOT_WORSE
    by_run: dict[tuple, dict[int, float]] = {}
    for (task, method, handling, rep), acc in rec.rounds.items():
        by_run.setdefault((task, method, handling), {})[rep] = acc
    handlings = {h for _, _, h in by_run}
    if "finetune" not in handlings or not handlings & set(REWINDS):
        return claim.inconclusive(
            f"zoo.handlings ran {', '.join(sorted(handlings)) or 'none'}: the claim needs finetune and one of "
            f"{', '.join(REWINDS)}", tol)
    cells = []
    for (task, method, handling), accs in sorted(by_run.items()):
        fine = by_run.get((task, method, "finetune"))
        if handling in REWINDS and fine:
            a, b = _paired(accs, fine)
            cells.append((a.mean - b.mean, task, method, handling, a, b))
    if not cells:
        return claim.inconclusive("no method ran under both finetune and a rewinding handling", tol)
    diff, task, method, handling, a, b = min(cells, key=lambda c: c[0])
    bad = [c for c in cells if not not_below(c[4].mean, c[5].mean, tol)]
    compared = (f"{task}, {method}, round {rec.last}: {handling} {a.text()} vs finetune {b.text()} (least favourable "
                f"of {len(cells)})")
    reason = (f"rewinding is at least as accurate as finetuning for every method, less {tol:g} (least favourable "
              f"{diff:+.3f})" if not bad else
              f"{len(bad)} method(s) are more accurate finetuned, by more than {tol:g} ({method}: {-diff:.3f})")
    return claim.verdict(not bad, a=(f"{method} {handling} round {rec.last}", a),
                         b=(f"{method} finetune round {rec.last}", b), tolerance=tol, compared=compared, reason=reason)


def evaluate(paths: Iterable, cfg: dict) -> list[Row]:
    """One row per claim of :data:`CLAIMS` from the records and masks at ``paths``; ``cfg`` holds the validated
    ``claims`` and ``zoo`` sections."""
    tol = cfg["claims"]
    rec = _Records(paths, cfg["zoo"])
    acc = tol["accuracy_tolerance"]
    return [
        _methods_differ(rec, tol["jaccard_tolerance"], acc),
        _bespoke_best(rec, acc),
        _transfer_above_random(rec, acc),
        _task_masks_overlap(rec, tol["overlap_tolerance"]),
        _consensus_matches_bespoke(rec, acc),
        _consensus_above_random(rec, acc),
        _rewind_not_worse(rec, acc),
    ]
