"""Claims as code: each family states its papers' claims as checks over the run's own records, and every check
yields one :class:`Row` with a verdict PASS, FAIL or INCONCLUSIVE (no torch, no pandas: stdlib only).

A family's ``lotto/<family>/claims.py`` has ``evaluate(paths, cfg) -> list[Row]``: ``paths`` are the JSON
records (and mask files) its ``claims_<family>`` rule hands it, ``cfg`` the validated config holding at least
the ``claims`` section and the family's own. It returns one row per claim id in its ``CLAIMS``, always, so a
claims table has the same rows whatever the config: what a config cannot test is INCONCLUSIVE, with the reason
naming what is missing.

Verdicts come only from the numbers and the tolerances of the ``claims:`` config section. A tolerance is the
size of a difference treated as a tie, in the units of what is compared; the three comparisons are

* ``above(a, b, tol)``: a exceeds b by at least tol;
* ``not_below(a, b, tol)``: a is at least b, or below it by at most tol ("at least as ... as");
* ``within(a, b, tol)``: |a - b| <= tol ("matches").
"""

from __future__ import annotations

import csv
import math
import statistics
import textwrap
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from lotto.io import atomic_write

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)
_EPS = 1e-12  # float round-off: a difference exactly at the tolerance counts as at the tolerance


class Stat(NamedTuple):
    """Mean, sample standard deviation (ddof=1; None for fewer than two values) and count of some values."""

    mean: float | None
    sd: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "n/a"
        sd = "" if self.sd is None else f"sd {self.sd:.{digits}f}, "
        return f"{self.mean:.{digits}f} ({sd}n={self.n})"


def stat(values: Iterable[float]) -> Stat:
    """:class:`Stat` of the finite values (NaN and None are left out)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def exact(value: float) -> Stat:
    """A number that is computed, not measured over replicates (chance levels, thresholds)."""
    return Stat(float(value), None, 1)


def above(a: float, b: float, tol: float) -> bool:
    return a - b >= tol - _EPS


def not_below(a: float, b: float, tol: float) -> bool:
    return a - b >= -tol - _EPS


def within(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol + _EPS


@dataclass(frozen=True)
class Row:
    """One claim's verdict. ``a``/``b`` name the two sides compared, each with mean, sd and n over replicates
    (empty where a side does not apply); ``compared`` says the same in words."""

    family: str
    id: str
    verdict: str
    claim: str
    compared: str = ""
    a: str = ""
    a_mean: float | None = None
    a_sd: float | None = None
    a_n: int | None = None
    b: str = ""
    b_mean: float | None = None
    b_sd: float | None = None
    b_n: int | None = None
    tolerance: float | None = None
    reason: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict must be one of {VERDICTS}, got {self.verdict!r}")


COLUMNS = [f.name for f in fields(Row)]


class Claim(NamedTuple):
    """A claim of a family: its id and the sentence that states it."""

    family: str
    id: str
    sentence: str

    def verdict(self, ok: bool, *, a: tuple[str, Stat] | None = None, b: tuple[str, Stat] | None = None,
                tolerance: float | None = None, compared: str = "", reason: str = "") -> Row:
        """PASS when ``ok``, else FAIL, with the two sides compared."""
        sides = {}
        for key, side in (("a", a), ("b", b)):
            if side is not None:
                label, s = side
                sides.update({key: label, f"{key}_mean": s.mean, f"{key}_sd": s.sd, f"{key}_n": s.n})
        return Row(self.family, self.id, PASS if ok else FAIL, self.sentence, compared=compared,
                   tolerance=tolerance, reason=reason, **sides)

    def inconclusive(self, reason: str, tolerance: float | None = None, compared: str = "") -> Row:
        """The config (or the records it produced) lacks what the claim needs; ``reason`` says what."""
        return Row(self.family, self.id, INCONCLUSIVE, self.sentence, compared=compared, tolerance=tolerance,
                   reason=reason)


# --------------------------------------------------------------------------- curves
def interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of y at ``x`` through (x, y) points; None outside their x range (no extrapolation).
    Points at the same x are averaged."""
    by_x: dict[float, list[float]] = {}
    for px, py in points:
        by_x.setdefault(float(px), []).append(float(py))
    xs = sorted(by_x)
    if not xs or x < xs[0] - _EPS or x > xs[-1] + _EPS:
        return None
    ys = [statistics.fmean(by_x[v]) for v in xs]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 - _EPS <= x <= x1 + _EPS:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (min(max(x, x0), x1) - x0) / (x1 - x0)
    return ys[0]  # a single point, and x at it


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


_INTS = ("a_n", "b_n")
_FLOATS = ("a_mean", "a_sd", "b_mean", "b_sd", "tolerance")


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
                raise ValueError(f"{path}: not a claims table (columns {reader.fieldnames}, expected {COLUMNS})")
            for rec in reader:
                rows.append(Row(**{c: _parse(c, rec[c], path) for c in COLUMNS}))
    return rows


def format_table(rows: Sequence[Row], width: int = 100) -> str:
    """A plain-text table: one line per claim (verdict, family, id, tolerance), then, indented, the numbers
    compared and the reason, wrapped at ``width``; last, a count of the verdicts."""
    rows = list(rows)
    if not rows:
        return "no claims"
    heads = ("verdict", "family", "claim", "tolerance")
    cols = [[r.verdict for r in rows], [r.family for r in rows], [r.id for r in rows],
            ["-" if r.tolerance is None else f"{r.tolerance:g}" for r in rows]]
    widths = [max(len(h), *(len(v) for v in col)) for h, col in zip(heads, cols)]

    def line(values):
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [line(heads), "-" * len(line(heads))]
    for i, r in enumerate(rows):
        out.append(line([c[i] for c in cols]))
        for label, text in (("compared", r.compared), ("why", r.reason)):
            if text:
                out += textwrap.wrap(text, width, initial_indent=f"    {label}: ",
                                     subsequent_indent=" " * (6 + len(label)))
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    out.append(f"{len(rows)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(out)
