"""Seed derivation shared by every module (no torch import).

``derive_seed(*parts)`` turns any tuple of printable parts into a 63-bit integer seed: SHA-256 of the parts
joined by ':' (each part passed through ``str``), first 8 bytes read big-endian, top bit cleared. The same parts
give the same seed on every machine, Python version and torch version, and different parts give unrelated seeds.
"""

from __future__ import annotations

import hashlib

_MASK63 = (1 << 63) - 1


def derive_seed(*parts) -> int:
    """sha256(":".join(str(p) for p in parts)) -> first 8 bytes big-endian, masked to 63 bits."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _MASK63
