"""Claims as code: each family states its papers' claims as checks over the run's own records, and every check
yields one :class:`Row`: an effect with its confidence interval, judged by the claim's declared kind against its
margin, with a verdict PASS, FAIL or INCONCLUSIVE (no torch, no pandas).

A family's ``lotto/<family>/claims.py`` declares its :class:`Claim` objects in ``CLAIMS`` and has
``evaluate(paths, cfg) -> list[Row]``: ``paths`` are the JSON records (and mask files) its ``claims_<family>``
rule hands it, ``cfg`` the validated config holding at least the ``claims`` section and the family's own. It
returns one row per claim, always, so a claims table has the same rows whatever the config: what a run cannot
decide is INCONCLUSIVE, with what would decide it (the replicates needed, or the config entry missing).

A claim declares its kind (:data:`KINDS`): superiority, non-inferiority or equivalence of an effect (the rules
are :func:`lotto.stats.judge`'s), ``iff`` (two classifications that must agree, each judged with intervals),
or ``sanity``: a check of the pipeline itself, not a paper claim, reported apart from the verdicts. Each claim
has a margin, in the units of its effect, set in ``claims.margins`` of the config (the defaults are the
claims' own, with the reason in ``margin_why``): what difference would matter to the paper's argument, not a
noise allowance. Noise is the interval's business (:mod:`lotto.stats`).
"""

from __future__ import annotations

import csv
import math
import textwrap
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from lotto import stats
from lotto.io import atomic_write
from lotto.stats import EQUIVALENCE, FAIL, INCONCLUSIVE, NONINFERIORITY, PASS, SUPERIORITY, Estimate

VERDICTS = (PASS, FAIL, INCONCLUSIVE)
IFF, SANITY = "iff", "sanity"
KINDS = (SUPERIORITY, NONINFERIORITY, EQUIVALENCE, IFF, SANITY)


@dataclass(frozen=True)
class Claim:
    """A claim of a family.

    ``sentence``: what lotto checks, in its own words; ``effect``: the quantity estimated, with its sign
    convention (positive = the claim's direction) and units; ``margin``: the default margin (None for sanity
    checks) and ``margin_why`` the reason for it; ``paper``: the paper and the sentence of it the claim rests on.
    """

    family: str
    id: str
    kind: str
    sentence: str
    effect: str
    margin: float | None
    margin_why: str
    paper: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if (self.margin is None) != (self.kind in (SANITY, IFF)):
            raise ValueError(f"claim {self.id}: a margin is needed for every kind but sanity checks and iff "
                             "claims (whose threshold comes from the data)")

    def row(self, verdict: str, reason: str, **values) -> "Row":
        return Row(family=self.family, id=self.id, type=self.kind, verdict=verdict, claim=self.sentence,
                   effect=self.effect, reason=reason, **values)

    def inconclusive(self, reason: str, settings: "Settings | None" = None, compared: str = "") -> "Row":
        """The run lacks what the claim needs; ``reason`` says what (the config entry or records missing)."""
        extra = {} if settings is None else {"margin": settings.margin, "confidence": settings.confidence}
        return self.row(INCONCLUSIVE, reason, compared=compared, **extra)


@dataclass(frozen=True)
class Settings:
    """A claim's margin and the run's confidence and power (the ``claims`` config section)."""

    margin: float
    confidence: float
    power: float

    @classmethod
    def of(cls, claim: Claim, cfg: dict) -> "Settings":
        section = cfg["claims"]
        margin = section.get("margins", {}).get(claim.id, claim.margin)
        return cls(float(margin if margin is not None else 0.0), float(section["confidence"]), float(section["power"]))


@dataclass(frozen=True)
class Row:
    """One claim's verdict, with the cell that decided it: ``estimate`` [``ci_low``, ``ci_high``] of ``effect``
    against ``margin``; ``replicates`` and ``test_examples`` behind it; ``replicates_needed``: how many would
    decide an INCONCLUSIVE claim at the configured power (empty when no number would, or it is not the
    replicates that are missing); ``cells``/``cells_pass``/``cells_fail``: the claim's cells and their verdicts
    (after Holm's correction); ``compared``: the deciding cell in words; ``note``: caveats of the estimate."""

    family: str
    id: str
    type: str  # the claim's kind: superiority, non-inferiority, equivalence, iff or sanity
    verdict: str
    claim: str
    effect: str = ""
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    margin: float | None = None
    cell_type: str = ""  # the deciding cell's kind where it is not the claim's (its margin is then ``margin``)
    confidence: float | None = None
    replicates: int | None = None
    test_examples: int | None = None
    replicates_needed: int | None = None
    cells: int | None = None
    cells_pass: int | None = None
    cells_fail: int | None = None
    compared: str = ""
    reason: str = ""
    note: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.type not in KINDS:
            raise ValueError(f"claim {self.id}: type must be one of {KINDS}, got {self.type!r}")


COLUMNS = [f.name for f in fields(Row)]
_INTS = ("replicates", "test_examples", "replicates_needed", "cells", "cells_pass", "cells_fail")
_FLOATS = ("estimate", "ci_low", "ci_high", "margin", "confidence")


# --------------------------------------------------------------------------- cells -> a row
@dataclass(frozen=True)
class Cell:
    """One comparison of a claim: where (``label``, e.g. "k=2, s=0.5"), its estimate, and what was compared
    (``detail``, e.g. "union 0.912 vs one-shot 0.915")."""

    label: str
    estimate: Estimate
    detail: str = ""
    kind: str | None = None  # a cell judged by another rule than its claim's (e.g. "and matching there")
    margin: float | None = None  # its own margin (e.g. a data-derived epsilon)
    hint: str = ""  # what decides it when replicates cannot (e.g. a config entry)


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def effect_text(value: float, ci: tuple[float, float] | None, digits: int = 3) -> str:
    """``+0.012 [-0.003, +0.027]``."""
    return _f(value, digits) + ("" if ci is None else f" [{_f(ci[0], digits)}, {_f(ci[1], digits)}]")


def _room(kind: str, ci: tuple[float, float], margin: float) -> float:
    """How far an interval clears its PASS boundary (the weakest passing cell has the least)."""
    lo, hi = ci
    if kind == SUPERIORITY:
        return lo
    if kind == NONINFERIORITY:
        return lo + margin
    return margin - max(abs(lo), abs(hi))


def _needed_text(needed: int | None, cell: Cell, settings: Settings) -> str:
    if needed is not None:
        return f"~{needed} replicates would decide it ({settings.power:.0%} power, observed spread)"
    est = cell.estimate
    if est.se is None and not est.bounds:
        return "needs 2+ replicates to estimate the seed noise"
    if cell.hint:
        return f"not by replicates: {cell.hint}"
    if est.floor > 0:
        return "not by replicates: the test set is too small for this margin"
    return "not by replicates: the effect sits on the margin"


_AGAINST = {SUPERIORITY: "above 0 and not below the margin {m:g}", NONINFERIORITY: "above -{m:g}",
            EQUIVALENCE: "inside (-{m:g}, +{m:g})"}
_FAIL_SIDE = {SUPERIORITY: "below the smallest effect that matters ({m:g})", NONINFERIORITY: "below -{m:g}",
              EQUIVALENCE: "wholly outside (-{m:g}, +{m:g})"}


def settle(claim: Claim, cells: Sequence[Cell], settings: Settings, *, scope: str = "", some: bool = False,
           extra_reason: str = "") -> Row:
    """The claim's row from its cells, each judged by its kind and margin (the claim's unless the cell has its
    own; :func:`lotto.stats.judge`).

    Every cell (default): PASS when all pass, FAIL when one fails after Holm's correction, else INCONCLUSIVE
    with the replicates that would decide it. ``some=True`` (a claim that something exists, "there are
    methods that..."): PASS when one cell passes at the Bonferroni-corrected level, FAIL when every cell fails,
    else INCONCLUSIVE. ``scope`` names what the cells span, for the reason (e.g. "every (k, s) at t=2000")."""
    if not cells:
        raise ValueError(f"{claim.id}: no cells to judge")
    conf = settings.confidence
    n = len(cells)
    kinds = [c.kind or claim.kind for c in cells]
    margins = [settings.margin if c.margin is None else c.margin for c in cells]
    level = 1 - (1 - conf) / n if some else conf
    judged = [stats.judge(k, c.estimate, m, level) for k, c, m in zip(kinds, cells, margins)]
    if some:
        after = [j.verdict for j in judged]
        verdict = PASS if PASS in after else FAIL if all(a == FAIL for a in after) else INCONCLUSIVE
    else:
        verdict, after = stats.combine(judged, conf)
    counts = {v: sum(a == v for a in after) for v in VERDICTS}
    needed = None
    plan = {}
    if verdict == FAIL:
        fails = [i for i, a in enumerate(after) if a == FAIL]
        shown = min(fails, key=lambda i: judged[i].p_fail)
    elif verdict == PASS:
        passing = [i for i, a in enumerate(after) if a == PASS]
        pick = max if some else min  # "some": the strongest passing cell; "every": the weakest
        shown = pick(passing, key=lambda i: _room(kinds[i], judged[i].interval, margins[i]))
    else:
        undecided = [i for i, a in enumerate(after) if a != (FAIL if some else PASS)]
        plan = {i: stats.replicates_needed(kinds[i], cells[i].estimate, margins[i], level, settings.power)
                for i in undecided}
        expect = {i: stats.expected(kinds[i], cells[i].estimate.value, margins[i])[0] for i in undecided}
        decisive = FAIL if not some else PASS  # one such cell decides the claim: the cheapest
        quick = [i for i in undecided if expect[i] == decisive and plan[i] is not None]
        if quick:
            shown = min(quick, key=lambda i: plan[i])
        else:  # every cell must be decided: the most demanding decides
            shown = max(undecided, key=lambda i: math.inf if plan[i] is None else plan[i])
        needed = plan[shown]
    cell = cells[shown]
    est, ci = cell.estimate, judged[shown].interval
    k, m = kinds[shown], margins[shown]
    where = f" over {scope}" if scope else ""
    shown_text = f"{cell.label}: {effect_text(est.value, ci)}" if ci else f"{cell.label}: {_f(est.value)} (no interval)"
    against = _AGAINST[k].format(m=m)
    if verdict == PASS:
        if some:
            reason = (f"{counts[PASS]} of {n} cells{where} pass at the Bonferroni-corrected level "
                      f"{level:.2%}; clearest {shown_text}")
        elif n > 1:
            reason = f"all {n} cells{where} pass ({conf:.0%} intervals {against}); weakest {shown_text}"
        else:
            reason = f"interval {against}: {shown_text}"
    elif verdict == FAIL:
        side = _FAIL_SIDE[k].format(m=m)
        if some:
            reason = f"every cell{where} fails ({side}); clearest {shown_text}"
        else:
            reason = f"{counts[FAIL]} of {n} cells{where} fail ({side}, after Holm's correction); clearest {shown_text}"
    else:
        undecided = len(plan)
        reason = (f"{_needed_text(needed, cell, settings)}; {undecided} of {n} cells{where} undecided (neither "
                  f"{against} nor on the FAIL side), e.g. {shown_text}")
    if extra_reason:
        reason += f"; {extra_reason}"
    notes = list(dict.fromkeys(note for c in cells for note in c.estimate.notes))
    return claim.row(
        verdict, reason, estimate=est.value, ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None,
        # the deciding cell's margin and, where it differs from the claim's, its kind: the adaptive claim's
        # weakest cell may be its non-inferiority half (accuracy within epsilon), not its rounds saved
        # (a cell of the claim's own kind keeps the claim's margin: zoo-methods-differ's cells are net of it)
        margin=settings.margin if k == claim.kind else m, cell_type="" if k == claim.kind else k,
        confidence=conf, replicates=est.replicates or None,
        test_examples=est.examples,
        replicates_needed=needed, cells=n, cells_pass=counts[PASS], cells_fail=counts[FAIL],
        compared=f"{cell.label}: {cell.detail}" if cell.detail else cell.label, note="; ".join(notes))


# --------------------------------------------------------------------------- CSV and the printed table
def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_csv(rows: Iterable[Row], path: str | Path) -> None:
    """The rows as CSV (columns :data:`COLUMNS`), written atomically."""
    with atomic_write(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for row in rows:
                d = asdict(row)
                writer.writerow([_cell(d[c]) for c in COLUMNS])


def _parse(column: str, text: str, path: Path):
    if column not in _INTS + _FLOATS:
        return text
    if text == "":
        return None
    try:
        return int(text) if column in _INTS else float(text)
    except ValueError:
        raise ValueError(f"{path}: column {column!r} holds {text!r}, not a number") from None


def read_csv(paths: Iterable[str | Path]) -> list[Row]:
    """Rows of claims CSV files (as :func:`write_csv` writes them), in order."""
    rows = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise ValueError(f"{path}: claims table not found")
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != COLUMNS:
                hint = (" (written by an older lotto: rerun `snakemake claims` to rebuild it)"
                        if reader.fieldnames and "tolerance" in reader.fieldnames else "")
                raise ValueError(f"{path}: not a claims table of this lotto (columns {reader.fieldnames}, "
                                 f"expected {COLUMNS}){hint}")
            for rec in reader:
                rows.append(Row(**{c: _parse(c, rec[c], path) for c in COLUMNS}))
    return rows


def _effect_vs_margin(r: Row) -> str:
    if r.type == SANITY:
        return ""
    ci = None if r.ci_low is None or r.ci_high is None else (r.ci_low, r.ci_high)
    eff = "" if r.estimate is None else effect_text(r.estimate, ci)
    net = "(margin subtracted)" in r.effect  # superiority over a reference value: zoo-methods-differ
    kind = r.cell_type or r.type
    m = "" if r.margin is None else {
        SUPERIORITY: f"> 0 (net of margin {r.margin:g})" if net else f"> 0, >= {r.margin:g}",
        NONINFERIORITY: f"> -{r.margin:g}", EQUIVALENCE: f"within +-{r.margin:g}",
        IFF: f"barrier <= eps {r.margin:.3g}"}[kind]
    return f"{eff} vs {m}" if eff else m


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def format_table(rows: Sequence[Row], width: int = 120) -> str:
    """The compact table a run prints last: per claim its verdict, id, effect [interval] vs margin and a
    one-line reason; sanity checks apart; then the verdict counts. ``format_long`` has everything."""
    rows = list(rows)
    if not rows:
        return "no claims"
    claims = [r for r in rows if r.type != SANITY]
    sanity = [r for r in rows if r.type == SANITY]
    head = ("verdict", "claim", "effect [95% interval] vs margin")
    conf = next((r.confidence for r in claims if r.confidence), 0.95)
    head = (head[0], head[1], f"effect [{conf:.0%} interval] vs margin")
    cols = [[r.verdict for r in claims], [r.id for r in claims], [_effect_vs_margin(r) for r in claims]]
    widths = [max([len(h)] + [len(v) for v in col]) for h, col in zip(head, cols)]

    def line(values):
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [line(head)]
    indent = " " * (widths[0] + 2)
    for i, r in enumerate(claims):
        out.append(line([c[i] for c in cols]))
        out.append(indent + _one_line(r.reason, max(width - len(indent), 40)))
    counts = {v: sum(r.verdict == v for r in claims) for v in VERDICTS}
    summary = f"{len(claims)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items())
    if sanity:
        ok = sum(r.verdict == PASS for r in sanity)
        out.append(f"sanity checks (not paper claims): {ok} of {len(sanity)} hold" + "".join(
            f"; {r.id} {r.verdict}" for r in sanity if r.verdict != PASS))
    out.append(summary)
    return "\n".join(out)


def format_long(rows: Sequence[Row], width: int = 100) -> str:
    """Every column that matters, wrapped: for a reader who wants the whole story of each verdict."""
    out = []
    for r in rows:
        out.append(f"{r.verdict:<12} {r.id} ({r.type}, {r.family})")
        for label, text in (("claim", r.claim), ("effect", r.effect), ("measured", _effect_vs_margin(r)),
                            ("compared", r.compared), ("why", r.reason), ("note", r.note)):
            if text:
                out += textwrap.wrap(text, width, initial_indent=f"    {label}: ",
                                     subsequent_indent=" " * (6 + len(label)))
    return "\n".join(out)


def print_at_exit(table: str | Path, workflow, run: dict, names: set[str]) -> None:
    """The Snakefile's exit hook: print the claims table (compact) as a run's last output, when the run asked for
    it (no target, or one of ``names``) and either succeeded (``run['ended']``, set by onsuccess) or found
    nothing to do (Snakemake built the DAG, found no job and ran no hook). Quiet in every other case: a failed
    run, a report, a dry run, a listing."""
    import sys

    try:
        if workflow.dag_settings is None or workflow.dag is None or workflow.dryrun or workflow.touch:
            return  # no run: a lint, a listing, a report
        targets = set(workflow.dag_settings.targets)
        if targets and not targets & names:
            return
        dag = workflow.dag
        nothing_to_do = run.get("ended") is None and dag is not None and len(dag) == 0
        if not (run.get("ended") == "success" or nothing_to_do) or "--report" in sys.argv:
            return
        if not Path(table).is_file():
            return
        rows = read_csv([table])
    except Exception as exc:  # never turn a finished run into a failure at exit
        print(f"lotto: could not print the claims table {table}: {exc}", file=sys.stderr)
        return
    sys.stdout.write(f"\nClaims ({table}; every column: lotto claims-table --long {table}):\n")
    sys.stdout.write(format_table(rows) + "\n")
    sys.stdout.flush()


_COLOURS = {PASS: "#007a5a", FAIL: "#c1440e", INCONCLUSIVE: "#8a6100"}  # Okabe-Ito hues, darkened for text


def format_html(rows: Sequence[Row]) -> str:
    """The report's claims table: one compact row per claim (verdict in colour and in words, id, kind, effect
    [interval] vs margin), the claim, the reason and the notes folded under each row (``<details>``); sanity
    checks in a second table. Fixed layout, wrapped text: it fits a 1,280-pixel window without scrolling."""
    from html import escape

    def table(part: Sequence[Row], caption: str) -> str:
        out = [f'<table class="lotto-claims" style="table-layout:fixed;width:100%;border-collapse:collapse;'
               f'font-size:0.8rem"><caption style="text-align:left;font-weight:600">{escape(caption)}</caption>',
               '<colgroup><col style="width:7.5rem"><col><col style="width:16rem"></colgroup>',
               "<thead><tr><th style='text-align:left'>verdict</th><th style='text-align:left'>claim</th>"
               "<th style='text-align:left'>effect [interval] vs margin</th></tr></thead><tbody>"]
        for r in part:
            colour = _COLOURS[r.verdict]
            more = [("claim", r.claim), ("effect", r.effect), ("compared", r.compared), ("why", r.reason),
                    ("note", r.note)]
            if r.verdict == INCONCLUSIVE and r.replicates_needed:
                more.insert(0, ("to decide", f"about {r.replicates_needed} replicates"))
            details = "".join(f"<p style='margin:0.2rem 0'><b>{k}</b>: {escape(v)}</p>" for k, v in more if v)
            out.append(
                f"<tr style='border-top:1px solid #e5e7eb;vertical-align:top'>"
                f"<td style='color:{colour};font-weight:700;padding:0.25rem'>{r.verdict}</td>"
                f"<td style='padding:0.25rem;overflow-wrap:anywhere'><code>{escape(r.id)}</code> "
                f"<span style='color:#555'>({escape(r.type)})</span>"
                f"<details><summary style='cursor:pointer'>{escape(_one_line(r.reason, 110))}</summary>"
                f"{details}</details></td>"
                f"<td style='padding:0.25rem;overflow-wrap:anywhere'>{escape(_effect_vs_margin(r))}</td></tr>")
        out.append("</tbody></table>")
        return "".join(out)

    claims = [r for r in rows if r.type != SANITY]
    sanity = [r for r in rows if r.type == SANITY]
    counts = ", ".join(f"{sum(r.verdict == v for r in claims)} {v}" for v in VERDICTS)
    html = [table(claims, f"{len(claims)} claims: {counts}")]
    if sanity:
        html.append(table(sanity, "Sanity checks of the pipeline (not paper claims)"))
    return "\n".join(html) + "\n"


def write_html(rows: Sequence[Row], path: str | Path) -> None:
    with atomic_write(path, suffix=".html") as tmp:
        tmp.write_text(format_html(rows))
