"""The claims of Paganini & Forde (2020) as checks over the zoo family's own records: the last round's masks and
``metrics.json`` of the iterative-pruning runs, every round's metrics of the bespoke runs, each task's bespoke
ticket mask, and the transfer records (every ticket retrained on every task). numpy only (no torch).

Accuracy contrasts are paired by replicate (one initialisation) and by test example (the target task's test
set), :mod:`lotto.stats`. Mask quantities (Jaccard distances, shared weights) have no test set: their intervals
come from the replicates. Masks of different tasks overlap "more than random" against the exact expectation for
random masks with the same per-layer kept counts: two independent uniformly random masks keeping a and b of a
layer's n weights share a*b/n of them on average, summed over layers (exact, free of Monte-Carlo noise).
"""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Iterable

from lotto.claims import Cell, Claim, Row, Settings, effect_text, settle
from lotto.stats import EQUIVALENCE, FAIL, INCONCLUSIVE, SUPERIORITY

FAMILY = "zoo"
PAPER = "Paganini & Forde (2020)"
BESPOKE = f"{PAPER}, Bespoke vs. Prêt-à-Porter Lottery Tickets, arXiv:2007.04091"
ITERATIVE = f"{PAPER}, On Iterative Neural Network Pruning, Reinitialization, and the Similarity of Masks, " \
            "arXiv:2001.05050"

METHODS_DIFFER = Claim(
    FAMILY, "zoo-methods-differ", SUPERIORITY,
    "Pruning methods can find different masks at comparable accuracy: at the last round, some pair of methods "
    "with comparably accurate tickets keeps sets of weights farther apart than the margin.",
    "Jaccard distance of the kept weights of two methods' masks minus the margin (margin subtracted)",
    0.1, "two masks within Jaccard distance 0.1 share over 90% of the weights either keeps: practically one "
         "ticket; the paper's point is masks with 'little to no overlap'",
    f"{BESPOKE}, Section 4.1.1: 'there exist multiple lucky sub-networks with similar performance, yet little to "
    "no overlap'")
BESPOKE_BEST = Claim(
    FAMILY, "zoo-bespoke-best-on-own-task", SUPERIORITY,
    "Each bespoke ticket is more accurate on the task it was found on than the other tasks' bespoke tickets "
    "retrained there.",
    "test accuracy on a task of its own bespoke ticket minus another task's bespoke ticket",
    0.01, "one point of test accuracy: a smaller edge would not make a ticket 'best' for practical purposes",
    f"{BESPOKE}, Section 4.1.2: 'Each bespoke LT performs best on the task it was sourced on'")
TRANSFER_ABOVE_RANDOM = Claim(
    FAMILY, "zoo-transfer-above-random", SUPERIORITY,
    "Tickets found on other tasks transfer: on every task, each other task's bespoke ticket is more accurate "
    "than the random ticket.",
    "test accuracy of another task's bespoke ticket minus the random ticket's",
    0.01, "one point of test accuracy: a ticket less than a point above random carries no usable structure",
    f"{BESPOKE}, Section 4.1.2: bespoke tickets are 'sufficiently general to allow for retraining on various "
    "datasets from the same domain' (Figure 6, with a random sub-network as benchmark)")
TASK_MASKS_OVERLAP = Claim(
    FAMILY, "zoo-task-masks-overlap", SUPERIORITY,
    "Bespoke masks found on different tasks from one initialisation share more kept weights than random masks "
    "with the same per-layer sparsity.",
    "Jaccard similarity of two tasks' bespoke masks minus its expectation for random masks",
    0.01, "a shared core of 1% of the kept weights above chance is the least that is not a rounding artefact of "
          "the per-layer counts; the paper reports 6-10% shared even at ~99% sparsity",
    f"{BESPOKE}, Section 4.1.2: 'these masks do share a core backbone of unpruned parameters, even at high "
    "levels of sparsity'")
CONSENSUS_MATCHES_BESPOKE = Claim(
    FAMILY, "zoo-consensus-matches-bespoke", EQUIVALENCE,
    "The consensus (prêt-à-porter) ticket is as accurate on each task as the task's bespoke ticket at the "
    "nearest sparsity.",
    "test accuracy of the consensus ticket minus the bespoke run's at the consensus's sparsity",
    0.01, "one point of test accuracy, as for the composability claims",
    f"{BESPOKE}, Section 4.2: 'the prêt-à-porter LT is, indeed, trainable to comparable performance to "
    "similar-sparsity bespoke LTs'")
CONSENSUS_ABOVE_RANDOM = Claim(
    FAMILY, "zoo-consensus-above-random", SUPERIORITY,
    "The consensus (prêt-à-porter) ticket is more accurate than the random ticket on every task.",
    "test accuracy of the consensus ticket minus the random ticket's",
    0.01, "one point of test accuracy",
    f"{BESPOKE}, Figure 6 (a random sub-network as benchmark)")
FINETUNE_MATCHES_REWIND = Claim(
    FAMILY, "zoo-finetune-matches-rewind", EQUIVALENCE,
    "At the last round, finetuning the surviving weights is as accurate as rewinding them, for every pruning "
    "method (same pruning technique, same training budget).",
    "test accuracy of a method rewound minus finetuned, at the last round",
    0.01, "one point of test accuracy: the paper calls the two 'comparable' in the small-network regime",
    f"{ITERATIVE}, Section 4.1: 'Finetuning is found to yield pruned networks that are comparable in "
    "performance with reinitialized networks (at least in the simple-task-small-network regime)'")

CLAIMS = (METHODS_DIFFER, BESPOKE_BEST, TRANSFER_ABOVE_RANDOM, TASK_MASKS_OVERLAP, CONSENSUS_MATCHES_BESPOKE,
          CONSENSUS_ABOVE_RANDOM, FINETUNE_MATCHES_REWIND)

REWINDS = ("rewind_init", "rewind_t")
_COORDS = ("task", "method", "handling", "iteration", "replicate")


class _Records:
    """Last-round records and masks, every round of the bespoke runs, and the ticket x target transfer table."""

    def __init__(self, paths, zoo: dict):
        from lotto.io import read_json
        from lotto.masks import Mask
        from lotto.stats import Outcome

        self.last = zoo["iterations"]
        self.rate = zoo["rate"]
        self.transfer_run = (zoo["transfer"]["method"], zoo["transfer"]["handling"])
        self.rounds: dict[tuple, dict] = {}  # (task, method, handling, replicate) -> last-round record
        self.masks: dict[tuple, Mask] = {}  # (task, method, handling, replicate) -> last-round mask
        self.bespoke_rounds: dict[str, dict[int, list[dict]]] = {}  # task -> replicate -> every round's record
        self.transfer: dict[tuple, dict[int, dict]] = {}  # (ticket, target) -> replicate -> record
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
            r["outcome"] = Outcome.of(r, str(p))
            if "ticket" in r and "target" in r:
                self.transfer.setdefault((r["ticket"], r["target"]), {})[r.get("replicate")] = r
            elif "iteration" in r and "method" in r:
                key = (r["task"], r["method"], r["handling"], r["replicate"])
                if (r["method"], r["handling"]) == self.transfer_run:
                    self.bespoke_rounds.setdefault(r["task"], {}).setdefault(r["replicate"], []).append(r)
                if r["iteration"] == self.last:
                    self.rounds[key] = r
            else:
                raise ValueError(f"{p}: neither a transfer record (ticket, target) nor an iterative-pruning "
                                 "record (task, method, handling, iteration)")
        # a bespoke ticket on its own task: its own last round unless it was retrained there separately
        for (task, method, handling, rep), r in self.rounds.items():
            if (method, handling) == self.transfer_run:
                self.transfer.setdefault((f"bespoke_{task}", task), {}).setdefault(rep, r)
        for task in self.bespoke_rounds:
            for rep in self.bespoke_rounds[task]:
                self.bespoke_rounds[task][rep].sort(key=lambda r: r["sparsity"])
        self.tasks = sorted({target for _, target in self.transfer})

    def acc(self, ticket: str, target: str) -> dict[int, dict]:
        return self.transfer.get((ticket, target), {})


def _m(method: str) -> str:
    from lotto.names import display

    return display("method", method)


def _h(handling: str) -> str:
    from lotto.names import display

    return display("handling", handling)


def _t(ticket: str) -> str:
    from lotto.names import display

    return display("ticket", ticket)


def _mean(records: Iterable[dict], key: str = "test_accuracy") -> float:
    vals = [float(r[key]) for r in records]
    return sum(vals) / len(vals)


def _one_task(claim: Claim, rec: _Records, settings: Settings) -> Row | None:
    if len(rec.tasks) < 2:
        names = ", ".join(rec.tasks) or "none"
        return claim.inconclusive(f"one task ({names}): add a task under zoo.tasks to move tickets between",
                                  settings)
    return None


def _difference(a: dict[int, dict], b: dict[int, dict]):
    """The estimate of accuracy(a) - accuracy(b), paired by replicate (and by example: same target task)."""
    from lotto.stats import contrast

    reps = sorted(set(a) & set(b))
    return contrast({r: [(1.0, a[r]["outcome"]), (-1.0, b[r]["outcome"])] for r in reps}), reps


# --------------------------------------------------------------------------- masks
def _methods_differ(rec: _Records, settings: Settings, comparable: float) -> Row:
    from lotto.masks import jaccard_distance
    from lotto.stats import replicated

    claim = METHODS_DIFFER
    groups: dict[tuple, dict[str, dict[int, tuple]]] = {}  # (task, handling) -> method -> replicate -> (mask, acc)
    for (task, method, handling, rep), mask in rec.masks.items():
        r = rec.rounds.get((task, method, handling, rep))
        if r is not None:
            groups.setdefault((task, handling), {}).setdefault(method, {})[rep] = (mask, float(r["test_accuracy"]))
    pairs, far = [], []
    for (task, handling), methods in sorted(groups.items()):
        for ma, mb in combinations(sorted(methods), 2):
            reps = sorted(set(methods[ma]) & set(methods[mb]))
            if not reps:
                continue
            acc_a = sum(methods[ma][r][1] for r in reps) / len(reps)
            acc_b = sum(methods[mb][r][1] for r in reps) / len(reps)
            if abs(acc_a - acc_b) > comparable:
                far.append(abs(acc_a - acc_b))
                continue
            dist = {r: jaccard_distance(methods[ma][r][0], methods[mb][r][0]) - settings.margin for r in reps}
            est = replicated(dist)
            pairs.append(Cell(f"{task}, {_h(handling)}: {_m(ma)} vs {_m(mb)}", est,
                              f"Jaccard distance {est.value + settings.margin:.3f} at accuracies {acc_a:.3f} vs "
                              f"{acc_b:.3f}", margin=0.0))
    if not pairs and not far:
        return claim.inconclusive("fewer than two pruning methods ran under one handling (zoo.methods): nothing "
                                  "to compare", settings)
    if not pairs:
        return claim.inconclusive(
            f"no two methods reach comparable accuracy at round {rec.last} (closest pair {min(far):.3f} apart, more "
            f"than claims.comparable_accuracy {comparable:g}): the claim is about equally good tickets", settings)
    # one kind of quantity under one design (last-round masks of one init): the seed variance is pooled
    from lotto.stats import pooled

    pairs = [replace(c, estimate=e) for c, e in zip(pairs, pooled([c.estimate for c in pairs]))]
    return settle(claim, pairs, settings, some=True, scope=f"{len(pairs)} comparably accurate method pair(s)")


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


def _task_masks_overlap(rec: _Records, settings: Settings) -> Row:
    from lotto.stats import replicated

    claim = TASK_MASKS_OVERLAP
    method, handling = rec.transfer_run
    bespoke: dict[str, dict[int, object]] = {}
    for (task, m, h, rep), mask in rec.masks.items():
        if (m, h) == (method, handling):
            bespoke.setdefault(task, {})[rep] = mask
    if len(bespoke) < 2:
        return claim.inconclusive(f"bespoke masks of one task ({', '.join(bespoke) or 'none'}): add a task under "
                                  "zoo.tasks", settings)
    cells = []
    for ta, tb in combinations(sorted(bespoke), 2):
        reps = sorted(set(bespoke[ta]) & set(bespoke[tb]))
        values = {r: _shared(bespoke[ta][r], bespoke[tb][r]) for r in reps}
        if values:
            est = replicated({r: v[0] - v[1] for r, v in values.items()})
            obs = sum(v[0] for v in values.values()) / len(values)
            rnd = sum(v[1] for v in values.values()) / len(values)
            cells.append(Cell(f"{ta} vs {tb}", est, f"Jaccard similarity {obs:.3f} vs {rnd:.3f} for random masks "
                                                    f"of the same per-layer sparsity ({_m(method)}, {_h(handling)})"))
    if not cells:
        return claim.inconclusive("no replicate has bespoke masks of two tasks", settings)
    return settle(claim, cells, settings, scope="every pair of tasks")


# --------------------------------------------------------------------------- transfer
def _bespoke_best(rec: _Records, settings: Settings) -> Row:
    claim = BESPOKE_BEST
    if (row := _one_task(claim, rec, settings)) is not None:
        return row
    cells = []
    for t in rec.tasks:
        own = rec.acc(f"bespoke_{t}", t)
        for u in rec.tasks:
            other = rec.acc(f"bespoke_{u}", t)
            if u == t or not own or not other:
                continue
            est, reps = _difference(own, other)
            if reps:
                cells.append(Cell(f"on {t}: own vs {_t(f'bespoke_{u}')}", est,
                                  f"{_mean(own[r] for r in reps):.3f} vs {_mean(other[r] for r in reps):.3f}"))
    if not cells:
        return claim.inconclusive("no task has both its own bespoke ticket and another's retrained on it", settings)
    return settle(claim, cells, settings, scope="every (task, other ticket)")


def _versus_random(claim: Claim, rec: _Records, settings: Settings, tickets) -> Row:
    """Every ticket ``tickets(target)`` names is more accurate than the random ticket on that target."""
    cells = []
    for t in rec.tasks:
        rnd = rec.acc("random", t)
        for ticket in tickets(t):
            acc = rec.acc(ticket, t)
            if rnd and acc:
                est, reps = _difference(acc, rnd)
                if reps:
                    sp = _mean((acc[r] for r in reps), "sparsity")
                    cells.append(Cell(f"{_t(ticket)} on {t}", est, f"{_mean(acc[r] for r in reps):.3f} (sparsity "
                                      f"{sp:.3f}) vs random {_mean(rnd[r] for r in reps):.3f}"))
    if not cells:
        return claim.inconclusive("no task has both the random ticket and the compared tickets retrained on it",
                                  settings)
    return settle(claim, cells, settings, scope="every (ticket, task)")


def _transfer_above_random(rec: _Records, settings: Settings) -> Row:
    if (row := _one_task(TRANSFER_ABOVE_RANDOM, rec, settings)) is not None:
        return row
    return _versus_random(TRANSFER_ABOVE_RANDOM, rec, settings,
                          lambda t: [f"bespoke_{u}" for u in rec.tasks if u != t])


def _consensus_above_random(rec: _Records, settings: Settings) -> Row:
    if (row := _one_task(CONSENSUS_ABOVE_RANDOM, rec, settings)) is not None:
        return row
    return _versus_random(CONSENSUS_ABOVE_RANDOM, rec, settings, lambda t: ["consensus"])


def _consensus_matches_bespoke(rec: _Records, settings: Settings) -> Row:
    from lotto.stats import CurveReading

    claim = CONSENSUS_MATCHES_BESPOKE
    if (row := _one_task(claim, rec, settings)) is not None:
        return row
    cells, sparser, beyond = [], [], {}
    for t in rec.tasks:
        cons, rounds = rec.acc("consensus", t), rec.bespoke_rounds.get(t, {})
        reps = sorted(set(cons) & set(rounds))
        if not reps:
            continue
        # the bespoke run read at the consensus's sparsity; beyond its sparsest round, at that round (a note)
        reading = CurveReading(outside="nearest")
        for r in reps:
            reading.add(r, 1.0, cons[r]["outcome"])
            reading.add_curve(r, -1.0, [(float(x["sparsity"]), x["outcome"]) for x in rounds[r]],
                              float(cons[r]["sparsity"]))
        est = reading.estimate("the bespoke run read between the rounds that bracket the consensus's sparsity")
        sp = _mean((cons[r] for r in reps), "sparsity")
        if "outside" in reading.where:
            sparser.append(t)
            if est.value < 0:
                beyond[len(cells)] = sp
        last = max((x for r in reps for x in rounds[r]), key=lambda x: x["sparsity"])
        where = {"exact": "at the same sparsity", "between": "between its rounds",
                 "outside": f"at its sparsest round ({float(last['sparsity']):.3f})"}[reading.where[-1]]
        cells.append(Cell(f"on {t}", est, f"consensus (sparsity {sp:.3f}) {_mean(cons[r] for r in reps):.3f} vs "
                                          f"the bespoke run {where}"))
    if not cells:
        return claim.inconclusive("no task has both the consensus ticket and its bespoke run's rounds", settings)
    row = settle(claim, cells, settings, scope="every task")
    if row.verdict == FAIL and beyond:
        # A consensus sparser than every bespoke round that loses accuracy may lose it for its sparsity alone:
        # such a cell cannot fail the claim. The claim FAILs only if the other cells fail it on their own.
        rest = [c for i, c in enumerate(cells) if i not in beyond]
        if not rest or settle(claim, rest, settings, scope="every task").verdict != FAIL:
            rounds_needed = math.ceil(math.log(1 - max(beyond.values())) / math.log(1 - rec.rate) - 1e-9)
            ci = None if row.ci_low is None or row.ci_high is None else (row.ci_low, row.ci_high)
            row = replace(row, verdict=INCONCLUSIVE, replicates_needed=None, reason=(
                f"{' and '.join(cells[i].label for i in beyond)}: the consensus is sparser than every bespoke round "
                f"and less accurate than the sparsest ({row.compared}: {effect_text(row.estimate, ci)}), "
                f"which its extra sparsity alone may explain; zoo.iterations: {rounds_needed} takes the bespoke run "
                "to the consensus's sparsity and decides it"))
    if sparser:
        row = replace(row, note="; ".join(filter(None, [row.note, (
            f"on {', '.join(sparser)} the consensus is sparser than every bespoke round: compared with the "
            "sparsest, which favours the bespoke ticket (more zoo.iterations reach the consensus's sparsity)")])))
    return row


# --------------------------------------------------------------------------- handlings
def _finetune_matches_rewind(rec: _Records, settings: Settings) -> Row:
    claim = FINETUNE_MATCHES_REWIND
    by_run: dict[tuple, dict[int, dict]] = {}
    for (task, method, handling, rep), r in rec.rounds.items():
        by_run.setdefault((task, method, handling), {})[rep] = r
    handlings = {h for _, _, h in by_run}
    if "finetune" not in handlings or not handlings & set(REWINDS):
        return claim.inconclusive(
            f"zoo.handlings ran {', '.join(sorted(handlings)) or 'none'}: the claim needs finetune and one of "
            f"{', '.join(REWINDS)}", settings)
    cells = []
    for (task, method, handling), accs in sorted(by_run.items()):
        fine = by_run.get((task, method, "finetune"))
        if handling in REWINDS and fine:
            est, reps = _difference(accs, fine)
            if reps:
                cells.append(Cell(f"{task}, {_m(method)}, {_h(handling)}", est,
                                  f"{_mean(accs[r] for r in reps):.3f} vs {_h('finetune')} {_mean(fine[r] for r in reps):.3f} "
                                  f"(round {rec.last})"))
    if not cells:
        return claim.inconclusive("no method ran under both finetune and a rewinding handling", settings)
    return settle(claim, cells, settings, scope="every (method, rewinding handling)")


def evaluate(paths: Iterable, cfg: dict) -> list[Row]:
    """One row per claim of :data:`CLAIMS` from the records and masks at ``paths``; ``cfg`` holds the validated
    ``claims`` and ``zoo`` sections."""
    rec = _Records(paths, cfg["zoo"])
    s = {c.id: Settings.of(c, cfg) for c in CLAIMS}
    return [
        _methods_differ(rec, s[METHODS_DIFFER.id], cfg["claims"]["comparable_accuracy"]),
        _bespoke_best(rec, s[BESPOKE_BEST.id]),
        _transfer_above_random(rec, s[TRANSFER_ABOVE_RANDOM.id]),
        _task_masks_overlap(rec, s[TASK_MASKS_OVERLAP.id]),
        _consensus_matches_bespoke(rec, s[CONSENSUS_MATCHES_BESPOKE.id]),
        _consensus_above_random(rec, s[CONSENSUS_ABOVE_RANDOM.id]),
        _finetune_matches_rewind(rec, s[FINETUNE_MATCHES_REWIND.id]),
    ]
