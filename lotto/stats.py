"""Effects with confidence intervals, and the verdict rules every family's claims share.

Two kinds of evidence reach a claim:

* **Accuracies of models evaluated on one test set** (:func:`contrast`). A cell's effect is a linear contrast of
  arms (e.g. union minus one-shot, or a difference of differences), each arm one trained model per replicate,
  paired by replicate (the same initialisation) and by test example (the same images). With every model's
  per-example results (:mod:`lotto.evidence`) the contrast is a replicates x examples table ``d[r, i]`` and
  its mean has two sources of noise, crossed: the draw of the test examples and the draw of the SGD seeds.
  The variance of the mean is estimated as ``var_i(mean_r d[r, i]) / n + sigma2_run / R``: the first term
  (paired over examples, as in McNemar's test) carries the test set's draw and the seed noise that shows as
  per-example disagreement between runs; the second, a shift of a whole run, is the two-way ANOVA's
  replicate component ``(MS_rep - MS_res) / n`` (Owen 2007, the pigeonhole bootstrap, for crossed designs).
  With one replicate the run-level component cannot be estimated and the row says so. Records written
  before lotto stored per-example results fall back to accuracies: the test-set term is then bounded
  without pairing (Cauchy-Schwarz over the arms' binomial sds), a wider interval, with a note.
* **Quantities without test-set noise** (overlap, sparsity, Jaccard distance, rounds; :func:`replicated`):
  the interval comes from the replicates alone (t with R - 1 degrees of freedom), or, with one replicate,
  from a within-replicate variance the family supplies (e.g. a jackknife over sibling networks), else none.

Degrees of freedom follow Welch-Satterthwaite. Verdicts (:func:`judge`) read the two-sided interval at
``confidence`` (default 0.95) against the claim's kind and margin ``m`` (see :data:`KINDS`); a claim over many
cells PASSes only when every cell does (an intersection-union test needs no correction) and FAILs when a cell
fails after Holm's correction over the cells (:func:`holm`). :func:`replicates_needed` says how many
replicates would decide an undecided cell at the configured power, from the observed effect and spread.

numpy and scipy.special only (imported where used): the claims run in light jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"

SUPERIORITY, NONINFERIORITY, EQUIVALENCE = "superiority", "non-inferiority", "equivalence"
#: what each kind of claim asserts about an effect e (higher = the claim's direction), with margin m >= 0:
#:   superiority      e > 0, by an amount that matters: PASS when the interval lies above 0 (and reaches m),
#:                    FAIL when it lies below m (whatever its sign: smaller than the smallest effect that matters)
#:   non-inferiority  e > -m: PASS when the interval lies above -m, FAIL when it lies below -m
#:   equivalence      |e| < m: PASS when the interval lies inside (-m, m) (TOST), FAIL when wholly outside
KINDS = (SUPERIORITY, NONINFERIORITY, EQUIVALENCE)


def _t_quantile(p: float, df: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df if math.isfinite(df) else np.inf, p))


def _t_cdf(x: float, df: float) -> float:
    from scipy.special import stdtr

    return float(stdtr(df if math.isfinite(df) else np.inf, x))


def _f_quantile(p: float, dfn: float, dfd: float) -> float:
    from scipy.special import fdtri

    return float(fdtri(dfn, dfd, p))


def _z(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


@dataclass(frozen=True)
class Outcome:
    """One model's evaluation: its accuracy, and (when its record has them) which test examples it got right and
    the identity of that test set; ``examples``: the number of test examples (for records without the bits)."""

    accuracy: float
    correct: np.ndarray | None = None
    test_set: str | None = None
    examples: int | None = None
    #: (variance, degrees of freedom) of the shift of a whole run's accuracy under another draw of the seeds,
    #: estimated from same-recipe runs beside it (e.g. a family's sibling networks); used where the replicates
    #: cannot estimate it (one replicate) or estimate it lower (two)
    run_var: tuple[float, float] | None = None

    def with_run_var(self, run_var: tuple[float, float] | None) -> "Outcome":
        return replace(self, run_var=run_var)

    @classmethod
    def of(cls, record: Mapping, where: str = "record", accuracy_key: str = "test_accuracy") -> "Outcome":
        from lotto import evidence

        found = evidence.of(record, where)
        acc = float(record[accuracy_key])
        if found is None:
            n = record.get("test_examples")
            return cls(acc, examples=int(n) if n else None)
        test_set, bits = found
        return cls(acc, bits, test_set, int(bits.size))


@dataclass(frozen=True)
class Estimate:
    """An effect estimate: ``value`` with standard error ``se`` (None: not estimable) and ``df`` degrees of
    freedom; ``replicates`` and ``examples`` it rests on; ``floor + shrink / R`` models its variance with R
    replicates (for :func:`replicates_needed`); ``bounds``: (low, high) estimates whose interval ends replace
    this one's (a bracketed reading of a curve); ``notes``: caveats the row prints."""

    value: float
    se: float | None
    df: float = math.inf
    replicates: int = 0
    examples: int | None = None
    floor: float = 0.0
    shrink: float = 0.0
    notes: tuple[str, ...] = ()
    bounds: tuple["Estimate", "Estimate"] | None = field(default=None, repr=False)
    replicate_only: bool = False

    def interval(self, confidence: float) -> tuple[float, float] | None:
        if self.bounds is not None:
            lo, hi = (b.interval(confidence) for b in self.bounds)
            if lo is None or hi is None:
                return None
            return min(lo[0], self.value), max(hi[1], self.value)
        if self.se is None:
            return None
        q = _t_quantile(0.5 + confidence / 2, self.df) if self.se > 0 else 0.0
        return self.value - q * self.se, self.value + q * self.se

    def negated(self) -> "Estimate":
        """The estimate of minus the effect (e.g. -barrier, to judge 'barrier below epsilon')."""
        bounds = None if self.bounds is None else (self.bounds[1].negated(), self.bounds[0].negated())
        return replace(self, value=-self.value, bounds=bounds)

    def shifted(self, by: float) -> "Estimate":
        """The same estimate of ``value + by`` (a fixed reference subtracted, e.g. a chance level)."""
        bounds = None if self.bounds is None else tuple(b.shifted(by) for b in self.bounds)
        return replace(self, value=self.value + by, bounds=bounds)


def _satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of variance components [(variance, df), ...]."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts if v > 0 and d > 0 and math.isfinite(d))
    if total <= 0 or denom <= 0:
        return math.inf
    return total * total / denom


ONE_REPLICATE = ("1 replicate: seed noise enters only as the runs' per-example disagreement; a shift of a whole "
                 "run is not estimated")
BORROWED = ("the shift of a whole run, which the replicates cannot estimate (or estimate lower), is taken from "
            "same-recipe runs beside them (the spread of the sibling networks' accuracies)")
NO_BITS = ("some records lack per-example results (written before lotto stored them): test-set noise bounded "
           "without pairing, a wider interval")


Terms = Sequence[tuple[float, Outcome]]


def contrast(per_replicate: Mapping[int, Terms]) -> Estimate:
    """The estimate of a linear contrast of accuracies, ``sum_j w_j * accuracy_j``, given per replicate as
    [(w_j, Outcome_j), ...] (the arms of one replicate are paired: same initialisation, same test examples).
    Per example where every outcome carries per-example results on one test set, else from the accuracies
    (with a note). ValueError when there is no replicate."""
    reps = sorted(per_replicate)
    if not reps:
        raise ValueError("no replicate to estimate from")
    terms = [list(per_replicate[r]) for r in reps]
    R = len(reps)
    outcomes = [o for ts in terms for _, o in ts]
    paired = all(o.correct is not None for o in outcomes)
    if paired:
        paired = len({o.test_set for o in outcomes}) == 1 and len({o.correct.size for o in outcomes}) == 1
    borrowed = _borrowed_run_var(terms)
    if paired:
        n = outcomes[0].correct.size
        d = np.zeros((R, n))
        for r, ts in enumerate(terms):
            for w, o in ts:
                d[r] += w * o.correct
        return _crossed(d, borrowed)
    # accuracies only: per-replicate contrasts; the test set's draw bounded arm by arm (Cauchy-Schwarz: whatever
    # the correlation between the arms), the seed noise from the replicates
    values = np.array([sum(w * o.accuracy for w, o in ts) for ts in terms])
    notes = [NO_BITS]
    if any(not o.examples for o in outcomes):
        notes.append("the number of test examples is unknown: no interval")
        return Estimate(float(values.mean()), None, replicates=R, notes=tuple(notes))
    n = min(o.examples for o in outcomes)
    test_var = float(np.mean([sum(abs(w) * math.sqrt(max(o.accuracy * (1 - o.accuracy), 0.0) / o.examples)
                                  for w, o in ts) ** 2 for ts in terms]))
    seed_var, seed_df = (float(values.var(ddof=1)) / R, R - 1) if R >= 2 else (0.0, 0)
    if borrowed is not None and borrowed[0] / R > seed_var:
        seed_var, seed_df = borrowed[0] / R, borrowed[1]
        notes.append(BORROWED)
    elif R == 1:
        notes.append(ONE_REPLICATE)
    df = _satterthwaite([(test_var, n - 1), (seed_var, seed_df)])
    return Estimate(float(values.mean()), math.sqrt(test_var + seed_var), df, R, n, floor=test_var,
                    shrink=seed_var * R, notes=tuple(notes))


def run_variance(groups: Sequence[Sequence[Outcome]]) -> tuple[float, float] | None:
    """(variance, degrees of freedom) of the shift of a whole run's accuracy, from groups of same-recipe runs that
    differ only in their SGD noise (e.g. the sibling networks of one rewind point, one group per replicate): per
    group, the two-way ANOVA's run component over the runs x test examples table, (MS_run - MS_res) / n,
    truncated at 0, pooled over the groups with their degrees of freedom. None without two such runs with
    per-example results on one test set."""
    parts = []
    for runs in groups:
        runs = [o for o in runs if o.correct is not None]
        if len(runs) < 2 or len({o.test_set for o in runs}) != 1 or len({o.correct.size for o in runs}) != 1:
            continue
        d = np.array([o.correct for o in runs], dtype=float)
        k, n = d.shape
        by_run, by_example, grand = d.mean(axis=1), d.mean(axis=0), float(d.mean())
        ms_run = n * float(by_run.var(ddof=1))
        resid = d - by_run[:, None] - by_example[None, :] + grand
        ms_res = float((resid ** 2).sum()) / ((k - 1) * (n - 1)) if n > 1 else 0.0
        parts.append((max(0.0, (ms_run - ms_res) / n), k - 1))
    df = sum(d for _, d in parts)
    if not df:
        return None
    return sum(v * d for v, d in parts) / df, float(df)


def _borrowed_run_var(terms) -> tuple[float, float] | None:
    """The run-level variance of a contrast, sum_j w_j^2 var_j, from the arms' borrowed run variances (the arms
    of the first replicate: every replicate has the same arms), with Satterthwaite degrees of freedom; None when
    an arm has none."""
    first = terms[0]
    if not first or any(o.run_var is None for _, o in first):
        return None
    parts = [(w * w * o.run_var[0], o.run_var[1]) for w, o in first]
    return sum(v for v, _ in parts), _satterthwaite(parts)


def _crossed(d: np.ndarray, borrowed: tuple[float, float] | None = None) -> Estimate:
    """The mean of a replicates x examples table and its variance under crossed random effects (module doc).
    ``borrowed``: (variance, df) of the contrast's run-level shift per replicate, estimated beside the replicates
    (:attr:`Outcome.run_var`): it stands in for the run component when there is one replicate, and where it
    is larger than the replicates' own estimate (with two or three replicates that estimate has one or two
    degrees of freedom, and is often near zero by chance)."""
    R, n = d.shape
    grand = float(d.mean())
    by_example = d.mean(axis=0)
    a = float(by_example.var(ddof=1)) / n if n > 1 else 0.0
    notes: list[str] = []
    if R >= 2:
        by_rep = d.mean(axis=1)
        ms_rep = n * float(by_rep.var(ddof=1))
        resid = d - by_rep[:, None] - by_example[None, :] + grand
        ms_res = float((resid ** 2).sum()) / ((R - 1) * (n - 1)) if n > 1 else 0.0
        # truncated at 0 (a variance): conservative when runs do not shift, which costs some power with two or
        # three replicates, but keeps the level when they do (tested: tests/test_stats.py)
        run_var, run_df = max(0.0, (ms_rep - ms_res) / n), R - 1
        # for planning: the per-example seed noise and the run shift shrink with replicates, the rest does not
        floor = max(0.0, a - ms_res / (R * n))
        per_example = ms_res / n
    else:
        run_var, run_df = 0.0, 0
        floor, per_example = 0.0, a  # assumed: the runs' disagreement is SGD noise
    if borrowed is not None and borrowed[0] > run_var:
        run_var, run_df = borrowed
        notes.append(BORROWED)
    elif R == 1:
        notes.append(ONE_REPLICATE)
    b = run_var / R
    df = _satterthwaite([(a, n - 1), (b, run_df)])
    return Estimate(grand, math.sqrt(a + b), df, R, n, floor=floor, shrink=per_example + run_var,
                    notes=tuple(notes))


def replicated(values: Mapping[int, float], within: tuple[float, float] | None = None,
               within_note: str = "") -> Estimate:
    """The mean over replicates of a quantity without test-set noise, with a t interval from the replicates.

    With one replicate, ``within`` = (variance of the estimate, degrees of freedom) from inside the replicate
    (e.g. a jackknife over sibling networks) gives the interval, with ``within_note`` saying what it covers;
    without it the estimate has no interval (at least 2 replicates are needed)."""
    vals = np.array([float(values[r]) for r in sorted(values)], dtype=float)
    R = int(vals.size)
    if R == 0:
        raise ValueError("no replicate to estimate from")
    mean = float(vals.mean())
    if R >= 2:
        s2 = float(vals.var(ddof=1))
        return Estimate(mean, math.sqrt(s2 / R), R - 1, R, None, shrink=s2, replicate_only=True)
    if within is not None:
        var, df = within
        return Estimate(mean, math.sqrt(max(var, 0.0)), df, 1, None, shrink=var, replicate_only=True,
                        notes=(within_note or "1 replicate: within-replicate spread only",))
    return Estimate(mean, None, replicates=1, replicate_only=True,
                    notes=("1 replicate: seed noise cannot be estimated from one run",))


def pooled(estimates: Sequence[Estimate]) -> list[Estimate]:
    """Replicate-only estimates of one claim's cells with their seed variance pooled across the cells (sound where
    the cells measure one kind of quantity under one design, e.g. Jaccard distances between last-round masks):
    s2 = sum((R_c - 1) s2_c) / sum(R_c - 1), each cell's SE sqrt(s2 / R_c) with the pooled degrees of freedom.
    Cells with one replicate (or not replicate-only) are returned unchanged."""
    parts = [(e.replicates, e.se ** 2 * e.replicates) for e in estimates
             if e.replicate_only and e.se is not None and e.replicates >= 2 and e.bounds is None]
    df = sum(r - 1 for r, _ in parts)
    if len(parts) < 2 or df <= 0:
        return list(estimates)
    s2 = sum((r - 1) * v for r, v in parts) / df
    out = []
    for e in estimates:
        if e.replicate_only and e.se is not None and e.replicates >= 2 and e.bounds is None:
            note = f"seed variance pooled over {len(parts)} cells ({df} degrees of freedom)"
            e = replace(e, se=math.sqrt(s2 / e.replicates), df=df, shrink=s2, notes=e.notes + (note,))
        out.append(e)
    return out


def bracketed(point: Estimate, low: Estimate, high: Estimate, note: str) -> Estimate:
    """``point`` read between two bracketing measurements: its interval runs from ``low``'s lower end to
    ``high``'s upper end (the reading's own uncertainty, e.g. where a curve lies between two grid points); the
    bracket's width does not shrink with replicates, so it enters the planning floor."""
    width = max(high.value - low.value, 0.0)
    return replace(point, bounds=(low, high), floor=point.floor + (width / 2) ** 2,
                   notes=tuple(dict.fromkeys(point.notes + (note,))))


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Judgement:
    """One cell's verdict: the interval, the verdict at the nominal level, and the one-sided p-value of the
    FAIL side (for Holm's correction over a claim's cells)."""

    verdict: str
    interval: tuple[float, float] | None
    p_fail: float


def _p_below(est: Estimate, bound: float) -> float:
    """One-sided p-value of 'the effect is below ``bound``' (small when the estimate is far under it)."""
    if est.se is None:
        return 1.0
    if est.se == 0:
        return 0.0 if est.value < bound else 1.0
    return _t_cdf((est.value - bound) / est.se, est.df)


def judge(kind: str, est: Estimate, margin: float, confidence: float) -> Judgement:
    """The verdict of one cell (rules in :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown claim kind {kind!r}; expected one of {KINDS}")
    ci = est.interval(confidence)
    if ci is None:
        return Judgement(INCONCLUSIVE, None, 1.0)
    lo, hi = ci
    upper = est.bounds[1] if est.bounds else est
    lower = est.bounds[0] if est.bounds else est
    if kind == SUPERIORITY:
        p = _p_below(upper, margin) if margin > 0 else _p_below(upper, 0.0)
        if hi < margin or (margin == 0 and hi < 0):
            return Judgement(FAIL, ci, p)
        return Judgement(PASS if lo > 0 else INCONCLUSIVE, ci, p)
    if kind == NONINFERIORITY:
        p = _p_below(upper, -margin)
        if hi < -margin:
            return Judgement(FAIL, ci, p)
        return Judgement(PASS if lo > -margin else INCONCLUSIVE, ci, p)
    # equivalence: outside on either side
    p_low = _p_below(upper, -margin)
    neg = replace(lower, value=-lower.value, bounds=None)
    p_high = _p_below(neg, -margin)
    p = min(p_low, p_high)
    if hi < -margin or lo > margin:
        return Judgement(FAIL, ci, p)
    return Judgement(PASS if -margin < lo and hi < margin else INCONCLUSIVE, ci, p)


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure at family-wise level ``alpha``: which hypotheses are rejected."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    m = len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] < alpha / (m - rank):
            rejected[i] = True
        else:
            break
    return rejected


def combine(judgements: Sequence[Judgement], confidence: float) -> tuple[str, list[str]]:
    """A claim's verdict over its cells, and each cell's verdict after the correction: PASS when every cell
    PASSes; FAIL when a cell's FAIL survives Holm's correction (one-sided, at (1 - confidence) / 2, the level
    of each end of the interval); else INCONCLUSIVE. A cell that FAILs alone but not after the correction
    counts as undecided."""
    if not judgements:
        return INCONCLUSIVE, []
    alpha = (1 - confidence) / 2
    failing = [j.verdict == FAIL for j in judgements]
    rejected = holm([j.p_fail if f else 1.0 for j, f in zip(judgements, failing)], alpha) if any(failing) else \
        [False] * len(judgements)
    cells = [FAIL if rej else (INCONCLUSIVE if j.verdict == FAIL else j.verdict)
             for j, rej in zip(judgements, rejected)]
    if any(c == FAIL for c in cells):
        return FAIL, cells
    if all(c == PASS for c in cells):
        return PASS, cells
    return INCONCLUSIVE, cells


def expected(kind: str, value: float, margin: float) -> tuple[str, float]:
    """The verdict the point estimate points to, and its distance from the boundary that verdict must clear."""
    if kind == SUPERIORITY:
        return (PASS, value) if value >= margin and value > 0 else (FAIL, margin - value)
    if kind == NONINFERIORITY:
        return (PASS, value + margin) if value > -margin else (FAIL, -margin - value)
    return (PASS, margin - abs(value)) if abs(value) < margin else (FAIL, abs(value) - margin)


MAX_REPLICATES = 1000


def replicates_needed(kind: str, est: Estimate, margin: float, confidence: float, power: float) -> int | None:
    """The smallest number of replicates with which an effect as large as the observed one, with the observed
    spread, gets its expected verdict with probability ``power``; None when no number of replicates would (the
    effect sits on the boundary, or the part of the noise that replicates cannot shrink is too large, e.g. a
    small test set or a coarse bracket) or when the spread is unknown."""
    if est.se is None and not est.shrink:
        return None
    _, distance = expected(kind, est.value, margin)
    if distance <= 0:
        return None
    zp = _z(power)
    for r in range(max(est.replicates, 1) + 1, MAX_REPLICATES + 1):
        df = r - 1 if est.replicate_only else est.df
        q = _t_quantile(0.5 + confidence / 2, df) + zp
        if q * math.sqrt(est.floor + est.shrink / r) < distance:
            return r
    return None


# --------------------------------------------------------------------------- reading a curve at a point
class CurveReading:
    """The per-replicate terms of a contrast that reads a curve of accuracy against sparsity (one-shot pruning
    over its grid, a bespoke run over its rounds) at a sparsity x where it was not measured.

    No flattering interpolation: the point estimate interpolates linearly between the two measured points that
    bracket x, and the interval runs between the contrasts with either end (accuracy is taken to fall with
    sparsity, so the value at x lies between its neighbours'; :func:`bracketed`). At a measured point the
    reading is exact. Beyond the curve, ``outside='unbounded'`` leaves that side of the interval open (the
    reading can still FAIL an equivalence, never PASS it); ``outside='nearest'`` uses the nearest point as if
    exact (for callers that say so in a note). ``where`` collects, per reading, "exact", "between" or "outside".
    """

    def __init__(self, outside: str = "unbounded"):
        if outside not in ("unbounded", "nearest"):
            raise ValueError(f"outside must be 'unbounded' or 'nearest', got {outside!r}")
        self.outside = outside
        self.point: dict[int, list] = {}
        self.low: dict[int, list] = {}
        self.high: dict[int, list] = {}
        self.open = {"low": False, "high": False}
        self.where: list[str] = []

    def add(self, rep: int, weight: float, outcome: Outcome) -> None:
        """A term measured exactly (the composed ticket itself, a baseline at its own grid point)."""
        for side in (self.point, self.low, self.high):
            side.setdefault(rep, []).append((weight, outcome))

    def add_curve(self, rep: int, weight: float, points: Sequence[tuple[float, Outcome]], x: float) -> str:
        """``weight`` times the curve's accuracy at sparsity ``x``; ``points``: (sparsity, outcome), any order."""
        pts = sorted(points, key=lambda p: p[0])
        if not pts:
            raise ValueError(f"replicate {rep}: no measured point on the curve")
        below = [p for p in pts if p[0] <= x + 1e-9]
        above = [p for p in pts if p[0] >= x - 1e-9]
        lo, hi = (below[-1] if below else None), (above[0] if above else None)
        if lo is not None and hi is not None and hi[0] - lo[0] <= 1e-9:
            self.add(rep, weight, lo[1])
            self.where.append("exact")
            return "exact"
        if lo is None or hi is None:
            self.where.append("outside")
            near = lo or hi
            self.point.setdefault(rep, []).append((weight, near[1]))
            if self.outside == "nearest":
                self.low.setdefault(rep, []).append((weight, near[1]))
                self.high.setdefault(rep, []).append((weight, near[1]))
                return "outside"
        else:
            self.where.append("between")
            lam = (x - lo[0]) / (hi[0] - lo[0])
            self.point.setdefault(rep, []).extend([(weight * (1 - lam), lo[1]), (weight * lam, hi[1])])
        # the sparser point is the less accurate one: with a positive weight it gives the low end of the effect
        for side, ref, name in ((self.low, hi if weight > 0 else lo, "low"), (self.high, lo if weight > 0 else hi, "high")):
            if ref is None:
                self.open[name] = True
            else:
                side.setdefault(rep, []).append((weight, ref[1]))
        return self.where[-1]

    def estimate(self, note: str) -> Estimate:
        point = contrast(self.point)
        if all(w == "exact" for w in self.where) or (self.outside == "nearest" and "between" not in self.where):
            return point
        low = Estimate(-math.inf, 0.0) if self.open["low"] else contrast(self.low)
        high = Estimate(math.inf, 0.0) if self.open["high"] else contrast(self.high)
        return bracketed(point, low, high, note)
