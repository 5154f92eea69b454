"""Which code and software wrote an artifact: lotto's version, the git commit of the lotto checkout (and whether
its tree was dirty), and the torch / torchvision / snakemake / python versions.

Torch-free on purpose: package versions come from :mod:`importlib.metadata`, never from importing the package, so
recording provenance costs nothing on the Snakefile parse path or in a mask job. The git state is one cached
``git status`` call per process; it is None when lotto is not running from a git checkout (an installed copy) or
git is missing or refuses (e.g. another user's checkout): provenance never fails a job.

Nothing time- or host-dependent is recorded, so two runs of one config on one machine and tree write
byte-identical masks.

:func:`collect` and :func:`write_table` turn the records of many artifacts into the run's provenance table (one
row per distinct record), which the report shows.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import os
import platform
import subprocess
from collections import Counter
from pathlib import Path
from typing import Iterable

import lotto
from lotto.io import ArtifactError

#: distributions whose versions every record carries (None when not installed)
PACKAGES = ("torch", "torchvision", "snakemake")
#: the keys of a record, in table order
FIELDS = ("lotto", "git_commit", "git_dirty", "python", *PACKAGES)
#: the lotto checkout: the folder holding the ``lotto`` package
CHECKOUT = Path(lotto.__file__).resolve().parent.parent


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state(root: str | Path = CHECKOUT, git: str = "git") -> dict | None:
    """{"commit": sha, "dirty": bool} of the git checkout at ``root``; None when it is none or git fails.

    Only ``root`` itself counts: a copy of lotto installed inside some other repository (a virtual environment
    in a project folder) must not report that repository's commit. Untracked files that git does not ignore
    count as dirty (a new module changes what runs); ignored ones (results/, data/) do not.
    """
    root = Path(root)
    if not (root / ".git").exists():  # a folder in a clone, a file in a worktree
        return None
    try:
        proc = subprocess.run(
            # --no-optional-locks: status must not write the index while a user (or a parallel job) uses git
            [git, "--no-optional-locks", "-C", str(root), "status", "--porcelain=v2", "--branch"],
            capture_output=True, text=True, timeout=30, env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    commit, dirty = None, False
    for line in proc.stdout.splitlines():
        if line.startswith("# branch.oid "):
            commit = line.split()[2]
        elif line and not line.startswith("#"):
            dirty = True
    if commit is None or commit == "(initial)":  # a repository without commits
        return None
    return {"commit": commit, "dirty": dirty}


@functools.lru_cache(maxsize=1)
def _cached_git_state() -> dict | None:
    return git_state()


def provenance() -> dict:
    """This process's record: {lotto, git_commit, git_dirty, python, torch, torchvision, snakemake}."""
    git = _cached_git_state()
    return {
        "lotto": lotto.__version__,  # the code that runs, even when PYTHONPATH shadows an installed copy
        "git_commit": git["commit"] if git else None,
        "git_dirty": git["dirty"] if git else None,
        "python": platform.python_version(),
        **{name: package_version(name) for name in PACKAGES},
    }


# --- reading records back ---------------------------------------------------------------------------
def read_record(path: str | Path) -> dict | None:
    """The ``provenance`` record of a checkpoint (.safetensors), mask (.mask) or metrics file (.json).

    None when the artifact predates provenance records. Reads headers only (no tensors, no torch).
    """
    from lotto.io import load_arrays, read_json

    path = Path(path)
    if path.suffix == ".safetensors":
        meta = load_arrays(path, names=[])[1]  # the header only
    elif path.suffix == ".mask":
        from lotto.masks import Mask

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
    from lotto.io import atomic_write

    with atomic_write(out, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS)
            w.writeheader()
            w.writerows(rows)
