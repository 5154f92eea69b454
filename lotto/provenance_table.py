"""Reading the provenance records of artifacts back, and the run's provenance table (one row per distinct record,
which the report shows; ``lotto provenance``).

Apart from :mod:`lotto.provenance` (which stamps the records) on purpose: reading needs the checkpoint and mask
readers (``lotto.io``, ``lotto.masks``), which themselves stamp what they write, so one module doing both would
import in a circle.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Iterable

from lotto.io import ArtifactError, atomic_write, load_arrays, read_json
from lotto.masks import Mask
from lotto.provenance import FIELDS


def read_record(path: str | Path) -> dict | None:
    """The ``provenance`` record of a checkpoint (.safetensors), mask (.mask) or metrics file (.json).

    None when the artifact predates provenance records. Reads headers only (no tensors, no torch).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        meta = load_arrays(path, names=[])[1]  # the header only
    elif path.suffix == ".mask":
        meta = Mask.load(path).meta
    elif path.suffix == ".json":
        meta = read_json(path)
    else:
        raise ArtifactError(f"{path}: no provenance in this kind of file (expected .safetensors, .mask or .json)")
    record = meta.get("provenance") if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else None


def artifacts_under(root: str | Path) -> list[Path]:
    """Every checkpoint, mask and metrics file below ``root``, sorted (a run's tree of results). Hidden files are
    left out: they are the temporary files of writes in progress (lotto.io.atomic_write)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such folder")
    found = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
             and (p.suffix in (".safetensors", ".mask") or p.name == "metrics.json")]
    return sorted(found)


def _kind(path: Path) -> str:
    return {".safetensors": "checkpoint", ".mask": "mask", ".json": "metrics"}.get(path.suffix, path.suffix)


def collect(paths: Iterable[str | Path]) -> list[dict]:
    """One row per distinct record over ``paths``: the record's fields, how many files of each kind carry it and
    one example file. Files without a record form their own row (every field empty). Most common first."""
    counts: dict[tuple, Counter] = {}
    example: dict[tuple, str] = {}
    for p in paths:
        p = Path(p)
        record = read_record(p) or {}
        key = tuple(record.get(f) for f in FIELDS)
        counts.setdefault(key, Counter())[_kind(p)] += 1
        example.setdefault(key, str(p))
    rows = []
    for key, kinds in sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), str(kv[0]))):
        row = {f: ("" if v is None else v) for f, v in zip(FIELDS, key)}
        if all(v is None for v in key):
            row["lotto"] = "(not recorded)"
        row.update(files=sum(kinds.values()), **{k: kinds.get(k, 0) for k in ("checkpoint", "mask", "metrics")})
        row["example"] = example[key]
        rows.append(row)
    return rows


TABLE_COLUMNS = (*FIELDS, "files", "checkpoint", "mask", "metrics", "example")


def write_table(rows: list[dict], out: str | Path) -> None:
    with atomic_write(out, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS)
            w.writeheader()
            w.writerows(rows)
