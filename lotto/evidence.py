"""Per-example evidence: which test examples a model got right, stored with the record of its evaluation.

A verdict that compares two models evaluated on the same test examples can pair them example by example: the
noise of the test set's draw cancels where both models agree, and what remains (the examples on which they
disagree) is exactly the evidence for a difference (McNemar's view). Accuracies alone cannot do that, so every
evaluation stores its correctness vector, bit-packed (``numpy.packbits``, 1 bit per example: 1,250 bytes for
10,000 test images, base64 in the JSON record), with the identity of the test set it was measured on::

    "test_correct": {"format": "packbits-b64", "n": 10000, "test_set": "cifar10:10000:3f2a...", "bits": "..."}

``test_set`` names the data set, the number of examples and a sha256 over the test images and labels (in the
stored order), so records of different tasks or subsets are never paired by mistake. numpy only (no torch):
the claims read these records in light jobs.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Mapping, Sequence

import numpy as np

KEY = "test_correct"
FORMAT = "packbits-b64"


def test_set_id(x_test: np.ndarray, y_test: np.ndarray, name: str = "", first: int | None = None) -> str:
    """``<name>:<n>:<sha256 prefix>`` of the first ``first`` (default: all) test examples, in stored order."""
    n = len(y_test) if first is None else min(int(first), len(y_test))
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x_test[:n]).tobytes())
    h.update(np.ascontiguousarray(np.asarray(y_test[:n], dtype=np.int64)).tobytes())
    return f"{name}:{n}:{h.hexdigest()[:20]}"


def pack(correct: Sequence[bool] | np.ndarray, test_set: str) -> dict:
    """The JSON-ready record of a correctness vector (True: the example was classified correctly)."""
    bits = np.asarray(correct, dtype=bool).reshape(-1)
    return {"format": FORMAT, "n": int(bits.size), "test_set": str(test_set),
            "bits": base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")}


def unpack(entry: Mapping, where: str = "record") -> np.ndarray:
    """The bool vector of a :func:`pack` record; a ValueError naming ``where`` when it is damaged."""
    try:
        fmt, n, raw = entry["format"], int(entry["n"]), entry["bits"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: '{KEY}' must hold format, n, test_set and bits") from None
    if fmt != FORMAT:
        raise ValueError(f"{where}: '{KEY}' has format {fmt!r}; this lotto reads {FORMAT!r}")
    try:
        packed = np.frombuffer(base64.b64decode(raw, validate=True), dtype=np.uint8)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: '{KEY}' bits are not valid base64") from None
    if packed.size != -(-n // 8):
        raise ValueError(f"{where}: '{KEY}' holds {packed.size} bytes for {n} examples "
                         f"(expected {-(-n // 8)}): the record is damaged")
    return np.unpackbits(packed, count=n).astype(bool)


def of(record: Mapping, where: str = "record") -> tuple[str, np.ndarray] | None:
    """(test set id, correctness vector) of a record, or None for a record written before lotto stored them."""
    entry = record.get(KEY)
    if entry is None:
        return None
    bits = unpack(entry, where)
    if "test_accuracy" in record and record["test_accuracy"] is not None:
        acc = float(record["test_accuracy"])
        if abs(bits.mean() - acc) > 0.5 / max(bits.size, 1) + 1e-9:
            raise ValueError(f"{where}: its per-example results give accuracy {bits.mean():.6f}, but the record "
                             f"says {acc:.6f}: the record is inconsistent")
    return str(entry["test_set"]), bits
