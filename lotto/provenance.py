"""Which code and software wrote an artifact: lotto's version, the git commit of the lotto checkout (and whether
its tree was dirty), and the torch / torchvision / snakemake / python versions.

Stamped once per process, at its start (:func:`stamp`): the ``lotto`` entry point stamps before it imports the
command's modules, and a local run's fork server (lotto/forkserver.py) before it imports torch and lotto; its
children inherit the stamp. A record must name the code that ran, so the stamp also holds the digest of every
source file of the package, and

* a lotto module imported after the stamp whose file changed since (a commit, checkout or edit during a run)
  is refused (:class:`SourceChanged`, naming the file) instead of being run under a record that names other code;
* the fork server asks :func:`changed_files` before every fork and refuses to serve once the tree changed: the
  job then runs as a plain process, which imports and stamps the code the tree holds now.

Torch-free on purpose: package versions come from :mod:`importlib.metadata`, never from importing the package, so
recording provenance costs nothing on the Snakefile parse path or in a mask job. The git state is one ``git
status`` call per process; it is None when lotto is not running from a git checkout (an installed copy) or git
is missing or refuses (e.g. another user's checkout): provenance never fails a job for want of git.

Nothing time- or host-dependent is recorded, so two runs of one config on one machine and tree write
byte-identical masks. Reading records back and the run's provenance table: :mod:`lotto.provenance_table`.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import lotto

#: distributions whose versions every record carries (None when not installed)
PACKAGES = ("torch", "torchvision", "snakemake")
#: the keys of a record, in table order
FIELDS = ("lotto", "git_commit", "git_dirty", "python", *PACKAGES)
#: the lotto package's folder, whose files are the code a record names
PACKAGE = Path(lotto.__file__).resolve().parent
#: the lotto checkout: the folder holding the ``lotto`` package
CHECKOUT = PACKAGE.parent
#: the files of the package that are code or read as code (the config schema)
SOURCE_SUFFIXES = (".py", ".yaml")


class SourceChanged(RuntimeError):
    """A source file of lotto changed after this process stamped its provenance; the message names it."""


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


def source_files(root: str | Path = PACKAGE) -> list[Path]:
    """Every source file of the package at ``root`` (compiled caches left out), sorted."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts
                  and p.is_file())


def _stat_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass(frozen=True)
class Stamp:
    record: dict  # the provenance record (FIELDS)
    files: dict  # path relative to the package -> (stat key, sha256) when stamped


_STAMP: Stamp | None = None


def stamp() -> dict:
    """This process's provenance record, computed on the first call and never again (a forked child inherits
    its server's). The first call also starts guarding imports of lotto modules against changed files."""
    global _STAMP
    if _STAMP is None:
        files = {str(p.relative_to(PACKAGE)): (_stat_key(p), _sha256(p)) for p in source_files()}
        git = git_state()
        record = {
            "lotto": lotto.__version__,  # the code that runs, even when PYTHONPATH shadows an installed copy
            "git_commit": git["commit"] if git else None,
            "git_dirty": git["dirty"] if git else None,
            "python": platform.python_version(),
            **{name: package_version(name) for name in PACKAGES},
        }
        _STAMP = Stamp(record, files)
        if not any(isinstance(f, _SourceGuard) for f in sys.meta_path):
            sys.meta_path.insert(0, _SourceGuard())
    return dict(_STAMP.record)


def provenance() -> dict:
    """This process's record: {lotto, git_commit, git_dirty, python, torch, torchvision, snakemake}, as stamped
    at its start (:func:`stamp`)."""
    return stamp()


def _changed(rel: str, path: Path) -> bool:
    """Whether the file ``rel`` of the package differs from the stamp (by content: a touched file is unchanged)."""
    then = _STAMP.files.get(rel)
    if then is None:
        return True  # a new module: no record names it
    key = _stat_key(path)
    if key is not None and key == then[0]:
        return False
    return _sha256(path) != then[1]


def changed_files() -> list[str]:
    """The package's source files (relative paths) that were added, removed or changed since the stamp."""
    if _STAMP is None:
        return []
    now = {str(p.relative_to(PACKAGE)): p for p in source_files()}
    changed = [rel for rel, path in now.items() if _changed(rel, path)]
    return sorted(changed + [rel for rel in _STAMP.files if rel not in now])


class _SourceGuard(importlib.abc.MetaPathFinder):
    """Refuses to import a lotto module whose file changed since the stamp: the process would run code that its
    records (stamped at start) do not name. Finds nothing itself; the finders after it do the finding."""

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] != "lotto" or _STAMP is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        origin = Path(spec.origin).resolve() if spec.origin and spec.has_location else None
        if origin is not None and origin.is_relative_to(PACKAGE):
            rel = str(origin.relative_to(PACKAGE))
            if _changed(rel, origin):
                raise SourceChanged(
                    f"lotto/{rel} changed after this process stamped its provenance (lotto commit "
                    f"{_STAMP.record['git_commit'] or 'unknown'}): a commit, checkout or edit during the run; running "
                    "it would write records that name code that did not run, so the command stops here: rerun it")
        return spec
