"""How artifacts are named. Shared by the Snakefile (at parse time: no torch) and the tests."""

from __future__ import annotations

TICKETS_COMPOSED = ("union", "intersection")
TICKETS_BASELINE = ("oneshot", "random")


def sparsity_tag(s: float) -> str:
    """Fixed 4-decimal text of a sparsity, so the same value always names the same path."""
    return f"{float(s):.4f}"


def parse_sparsity(tag: str) -> float:
    value = float(tag)
    if not 0.0 < value < 1.0:
        raise ValueError(f"sparsity {tag!r} is outside (0, 1)")
    return value


def ticket_dir(k: int | None, ticket: str) -> str:
    """Relative folder of a ticket under a pretrain point: k<k>/<op> for compositions, <baseline> otherwise."""
    if ticket in TICKETS_COMPOSED:
        return f"k{k}/{ticket}"
    if ticket in TICKETS_BASELINE:
        return ticket
    raise ValueError(f"unknown ticket {ticket!r}")
