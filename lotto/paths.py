"""How artifacts are named. Shared by the rule files (at parse time: no torch) and the tests."""

from __future__ import annotations


def sparsity_tag(s: float) -> str:
    """Fixed 4-decimal text of a sparsity, so the same value always names the same path."""
    return f"{float(s):.4f}"
