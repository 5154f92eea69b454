"""``lotto verify results/<experiment>``: is a results tree intact, and which code made it?

For a tree copied to another cluster, or found again months later on a shared file system. Every artifact is
read the way the jobs read it and checked:

- checkpoints (``*.safetensors``): readable, every tensor's bytes against the digest recorded when it was written,
  finite values within :data:`lotto.io.VALUE_BOUND`, and the network they hold against the config's model;
- masks (``*.mask``): readable, layout and bits against their checksum and kept count, layout against the
  config's model;
- JSON records (``metrics.json`` and every family's records): readable JSON; staged data (``data/*.npz``): every
  array readable (the zip's CRCs);
- provenance: the lotto commit recorded in every checkpoint, mask and metrics file, one commit or the files per
  commit;
- what an interrupted run leaves: temporary files of writes that never finished, resumable training states
  (``<results>/.resume``) and the outputs Snakemake marks incomplete (``.snakemake/incomplete``).

A one-screen summary; the exit status is 1 when something is damaged or needs a rerun (leftovers, resume
states, incomplete outputs) or more than one commit wrote the tree, 0 otherwise (notes, e.g. artifacts written
from a checkout with uncommitted changes, do not fail it). Torch is imported only to know the config's network
(its layer names and shapes).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lotto.io import VALUE_BOUND, ArtifactError, load_arrays, read_json

#: atomic_write's temporary files: ``.<name>.<random>.tmp<suffix>`` beside their target
TEMP_RE = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")
_REDO = "delete it and rerun the job that wrote it"


@dataclass(frozen=True)
class Network:
    """One network a checkpoint or mask of the run may hold: the config's model for one task's inputs."""

    model: str
    in_channels: int
    num_classes: int
    image_size: int

    def __str__(self) -> str:
        return (f"{self.model} for {self.in_channels}x{self.image_size}x{self.image_size} inputs and "
                f"{self.num_classes} classes")


def networks_of(cfg: dict) -> list[Network]:
    """The networks a run of ``cfg`` trains: its model on the main task and on every extra task of the zoo (the
    tasks are converted to the main task's data.image_size / data.channels when those are set)."""
    from lotto.datasets import CATALOG

    data = cfg["data"]
    tasks = [data["dataset"], *(t["dataset"] for t in (cfg.get("zoo") or {}).get("tasks", []))]
    nets = []
    for name in tasks:
        info = CATALOG[name]
        net = Network(cfg["model"]["name"], data.get("channels") or info.channels, info.num_classes,
                      data.get("image_size") or info.image_size)
        if net not in nets:
            nets.append(net)
    return nets


def _same_inputs(net: Network) -> list[Network]:
    """The catalog's other models for ``net``'s inputs and classes (to name the network a foreign mask is of)."""
    from lotto import architectures

    return [Network(name, net.in_channels, net.num_classes, net.image_size)
            for name in architectures.takes(net.image_size, net.in_channels) if name != net.model]


@functools.lru_cache(maxsize=None)
def _shapes(net: Network) -> tuple[dict, tuple]:
    """(state name -> shape, the mask layout: prunable (name, shape) in model order) of ``net``."""
    import torch

    from lotto import architectures, models

    with torch.device("meta"):  # the structure only
        module = architectures.CATALOG[net.model].load_builder()(net.in_channels, net.num_classes, net.image_size)
    state = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return state, tuple((n, state[n]) for n in models.prunable_names(module))


@dataclass
class Report:
    root: Path
    config: str
    networks: list[Network]
    counts: Counter = field(default_factory=Counter)  # kind -> files read
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (kind, one-line message naming the file)
    commits: dict = field(default_factory=dict)  # commit (or None) -> [files]
    dirty: list[str] = field(default_factory=list)  # files written from a checkout with uncommitted changes
    unrecorded: list[str] = field(default_factory=list)  # checkpoints/masks/metrics without a provenance record
    undigested: list[str] = field(default_factory=list)  # checkpoints written before tensor digests
    leftovers: list[str] = field(default_factory=list)
    resume: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    snakemake_dir: Path | None = None
    largest: tuple[float, str, str] | None = None  # (|value|, tensor, file) over the intact checkpoints

    @property
    def mixed(self) -> bool:
        return len(self.commits) > 1

    @property
    def failed(self) -> bool:
        # more than one lotto commit is reported, not failed: a tree legitimately spans code changes (a rerun
        # after a commit keeps the outputs whose inputs did not change); the list says which files came from which
        return bool(self.damaged or self.leftovers or self.resume or self.incomplete)


def verify(root: str | Path, cfg: dict | None = None, config_name: str = "", workdir: str | Path | None = None
           ) -> Report:
    """Check the results tree ``root`` (results/<experiment>) against ``cfg`` (default: the copy of the run's
    config in ``root/config.yaml``; without one, the networks its checkpoints record)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such folder; give a run's results folder, e.g. results/<experiment>")
    files, leftovers = [], []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            (leftovers if TEMP_RE.match(name) else files).append(Path(folder) / name)
    if cfg is None and (root / "config.yaml").is_file():
        from lotto import config as configmod

        config_name = str(root / "config.yaml")
        cfg = configmod.load(config_name, partial=True)
    checkpoints = [p for p in files if p.suffix == ".safetensors"]
    networks = networks_of(cfg) if cfg is not None else _recorded_networks(checkpoints)
    report = Report(root, config_name, networks, leftovers=[str(p) for p in leftovers])
    expected = {net: _shapes(net) for net in networks}

    masks = [p for p in files if p.suffix == ".mask"]
    records = [p for p in files if p.suffix == ".json"]
    staged = [p for p in files if p.suffix == ".npz"]
    for p in checkpoints:
        _check_checkpoint(report, p, expected)
    for p in masks:
        _check_mask(report, p, expected)
    for p in records:
        report.counts["record"] += 1
        try:
            record = read_json(p)
        except ArtifactError as exc:
            report.damaged.append(("record", f"{exc}; {_REDO}"))
            continue
        if p.name == "metrics.json":
            _provenance(report, p, record if isinstance(record, dict) else {})
    for p in staged:
        _check_staged(report, p)
    report.resume = [str(p) for p in _resume_states(root)]
    report.snakemake_dir, report.incomplete = _incomplete(root, workdir)
    return report


def _recorded_networks(checkpoints: list[Path]) -> list[Network]:
    """Without a config: the networks the checkpoints record (their headers), of the model most of them hold (a
    zoo run's tasks may differ in classes; a checkpoint of another model is then the odd one out)."""
    held = Counter()
    for p in checkpoints:
        try:
            m = load_arrays(p, names=[])[1].get("model")  # the header only
            held[Network(m["name"], m["in_channels"], m["num_classes"], m["image_size"])] += 1
        except (ArtifactError, KeyError, TypeError, AttributeError):
            continue  # reported when the checkpoint itself is read
    if not held:
        return []
    model = Counter({net.model: 0 for net in held})
    for net, n in held.items():
        model[net.model] += n
    name = model.most_common(1)[0][0]
    return [net for net in held if net.model == name]


def _check_checkpoint(report: Report, path: Path, expected: dict) -> None:
    import contextlib
    import io as _io

    import numpy as np

    from lotto import io

    report.counts["checkpoint"] += 1
    try:
        with contextlib.redirect_stderr(_io.StringIO()):  # the warning about a checkpoint without digests: counted
            state, meta = load_arrays(path)
    except ArtifactError as exc:
        report.damaged.append(("checkpoint", str(exc)))
        return
    if str(path) in io.UNDIGESTED:
        report.undigested.append(str(path))
    if expected:
        problem = _network_problem(path, state, meta, expected)
        if problem:
            report.damaged.append(("checkpoint", problem))
            return
    for name, a in state.items():
        if np.issubdtype(a.dtype, np.floating) and a.size:
            peak = float(np.abs(a).max())
            if report.largest is None or peak > report.largest[0]:
                report.largest = (peak, name, str(path))
    _provenance(report, path, meta)


def _network_problem(path: Path, state: dict, meta: dict, expected: dict) -> str:
    """'' when the checkpoint holds one of the run's networks, else a line saying what it holds instead."""
    got = {k: tuple(v.shape) for k, v in state.items()}
    if any(shapes == got for shapes, _ in expected.values()):
        return ""
    wanted = " or ".join(f"a {net}" for net in expected)
    m = meta.get("model")
    if isinstance(m, dict) and "name" in m:
        try:
            held = Network(m["name"], m["in_channels"], m["num_classes"], m["image_size"])
        except KeyError:
            held = None
        if held is not None and held not in expected:
            return (f"{path}: holds a {held}, this run's model is {wanted}: it belongs to another experiment; "
                    f"{_REDO}")
    shapes = next(iter(expected.values()))[0]
    for name, shape in shapes.items():
        if name not in got:
            return f"{path}: tensor '{name}' of {wanted} is missing; {_REDO}"
        if got[name] != shape:
            return f"{path}: tensor '{name}' has shape {list(got[name])}, {wanted} needs {list(shape)}; {_REDO}"
    extra = next(n for n in got if n not in shapes)
    return f"{path}: tensor '{extra}' is not part of {wanted}; {_REDO}"


def _check_mask(report: Report, path: Path, expected: dict) -> None:
    from lotto.masks import Mask

    report.counts["mask"] += 1
    try:
        mask = Mask.load(path)
    except ArtifactError as exc:
        report.damaged.append(("mask", str(exc)))
        return
    layouts = [layout for _, layout in expected.values()]
    if layouts and mask.layout not in layouts:
        net, layout = next(iter(expected)), layouts[0]
        other = next((f"a {o.model}" for n in expected for o in _same_inputs(n) if _shapes(o)[1] == mask.layout),
                     "another network")
        report.damaged.append(("mask", f"{path}: a mask of {other}, not of this run's {net.model}: "
                                       f"{_difference(mask.layout, layout)} (this mask's vs the {net.model}'s); "
                                       f"{_REDO}"))
        return
    _provenance(report, path, mask.meta)


def _difference(a: tuple, b: tuple) -> str:
    """Where two mask layouts first differ, in words."""
    for i, ((na, sa), (nb, sb)) in enumerate(zip(a, b)):
        if (na, sa) != (nb, sb):
            return f"layer {i} is '{na}' {list(sa)} vs '{nb}' {list(sb)}"
    return f"{len(a)} vs {len(b)} layers"


def _check_staged(report: Report, path: Path) -> None:
    import zipfile

    import numpy as np

    report.counts["data"] += 1
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                z[key]  # reading checks the zip member's CRC
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        report.damaged.append(("data", f"{path}: staged data not readable, truncated or damaged ({exc}); delete it "
                                       "and rerun (lotto stage-data remakes it; every training then reruns)"))


def _provenance(report: Report, path: Path, meta: dict) -> None:
    record = meta.get("provenance") if isinstance(meta, dict) else None
    if not isinstance(record, dict):
        report.unrecorded.append(str(path))
        return
    commit = record.get("git_commit") or f"no git checkout (lotto {record.get('lotto')})"
    report.commits.setdefault(commit, []).append(str(path))
    if record.get("git_dirty"):
        report.dirty.append(str(path))


def _resume_states(root: Path) -> list[Path]:
    """The resumable training states (and their temporaries) of this experiment's outputs: the rules keep them in
    ``<results>/.resume/<output path>.pt``, the output path as Snakemake names it (relative or absolute)."""
    resume = root.parent / ".resume"
    if not resume.is_dir():
        return []
    found = []
    for folder, dirs, names in os.walk(resume):
        dirs.sort()
        rel = Path(folder).relative_to(resume).parts
        if any(rel[i] == root.name and i and rel[i - 1] == root.parent.name for i in range(len(rel))):
            found += [Path(folder) / n for n in sorted(names)]
    return found


def _incomplete(root: Path, workdir) -> tuple[Path | None, list[str]]:
    """(the .snakemake folder, the outputs below ``root`` Snakemake marks incomplete: their jobs were running when
    it stopped). Snakemake keeps one marker per output, named by the urlsafe base64 of the path (split into
    folders of '@'-prefixed chunks when long)."""
    start = Path(workdir) if workdir else root.resolve()
    here = next((d for d in (start, *start.parents) if (d / ".snakemake").is_dir()), None)
    if here is None:
        return None, []
    markers = here / ".snakemake" / "incomplete"
    found = []
    target = root.resolve()
    for folder, _, names in os.walk(markers):
        for name in names:
            rel = (Path(folder) / name).relative_to(markers).parts
            if rel == ("migration_underway",):
                continue
            encoded = "".join(part.removeprefix("@") for part in rel)
            try:
                output = base64.urlsafe_b64decode(encoded).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
            path = Path(output) if os.path.isabs(output) else here / output
            if path.resolve() == target or target in path.resolve().parents:
                found.append(output)
    return here / ".snakemake", sorted(found)


# --- the summary --------------------------------------------------------------------------------------------
def _some(paths: list[str], n: int = 2) -> str:
    shown = ", ".join(paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _files(n: int, what: str = "file") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def summary(report: Report, every: bool = False, limit: int = 12) -> str:
    """The one-screen summary: a line per kind of check, then each damaged file (``limit`` at most); ``every``: all
    of them, and every file of each commit but the most common one."""
    if every:
        limit = len(report.damaged)
    c = report.counts
    bad = Counter(kind for kind, _ in report.damaged)
    nets = "; ".join(map(str, report.networks)) or "no network recorded"
    lines = [f"lotto verify {report.root}: " + (
        f"config {report.config} ({nets})" if report.config
        else f"no config.yaml in it and none given (--config): checked against the network most checkpoints record "
             f"({nets})")]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<12} {text}")

    largest = ""
    if report.largest:
        largest = (f"; largest |value| {report.largest[0]:.4g} ('{report.largest[1]}'), bound "
                   f"{VALUE_BOUND:.0e}")
    undigested = f"; {len(report.undigested)} without tensor digests (older lotto)" if report.undigested else ""
    row("checkpoints", f"{c['checkpoint']} read, {bad['checkpoint']} damaged{largest}{undigested}")
    row("masks", f"{c['mask']} read, {bad['mask']} damaged")
    row("records", f"{_files(c['record'], 'JSON record')} read, {bad['record']} damaged")
    row("data", f"{_files(c['data'], 'staged data file')} read, {bad['data']} damaged")
    commits = sorted(report.commits.items(), key=lambda kv: -len(kv[1]))
    if not commits:
        row("provenance", "no provenance records")
    elif len(commits) == 1:
        row("provenance", f"one lotto commit: {commits[0][0]} ({_files(len(commits[0][1]))})")
    else:
        row("provenance", f"MIXED: {len(commits)} lotto commits wrote this tree:")
        for commit, paths in commits if every else commits[:6]:
            shown = "" if commit == commits[0][0] and len(paths) > 3 else f" ({_some(paths, len(paths) if every else 2)})"
            lines.append(f"      {commit}: {_files(len(paths))}{shown}")
        if len(commits) > 6 and not every:
            lines.append(f"      ... and {len(commits) - 6} more commits (lotto verify --all lists them)")
    if report.dirty:
        row("", f"note: {_files(len(report.dirty))} written from a checkout with uncommitted changes (the commit "
                "does not pin their code)")
    if report.unrecorded:
        row("", f"note: {_files(len(report.unrecorded))} without a provenance record (older lotto): "
                f"{_some(report.unrecorded, 1)}")
    row("leftovers", "none" if not report.leftovers else
        f"{_files(len(report.leftovers), 'temporary file')} of writes that never finished (safe to delete): "
        f"{_some(report.leftovers)}")
    row("resume", "none" if not report.resume else
        f"{_files(len(report.resume), 'resumable training state')} of interrupted trainings: {_some(report.resume)}")
    if report.snakemake_dir is None:
        row("incomplete", "not checked (no .snakemake folder above it; give --workdir)")
    else:
        row("incomplete", "none" if not report.incomplete else
            f"{_files(len(report.incomplete), 'output')} Snakemake marks incomplete (its jobs were interrupted): "
            f"{_some(report.incomplete)}")
    for _, message in report.damaged[:limit]:
        lines.append(f"DAMAGED {message}")
    if len(report.damaged) > limit:
        lines.append(f"DAMAGED ... and {len(report.damaged) - limit} more (lotto verify --all lists every one)")
    lines.append(_verdict(report))
    return "\n".join(lines)


def _verdict(report: Report) -> str:
    if not report.failed:
        return "verify: OK, every artifact intact" + (
            f"; written by {len(report.commits)} lotto commits (listed above)" if report.mixed
            else " and made by one lotto commit")
    todo = []
    if report.damaged:
        them = "it" if len(report.damaged) == 1 else "them"
        todo.append(f"{_files(len(report.damaged))} DAMAGED: delete {them}, then rerun the same snakemake command to "
                    f"remake {them} (and what depends on {them})")
    if report.leftovers:
        todo.append("delete the temporary files")
    if report.resume or report.incomplete:
        todo.append("an interrupted run: rerun the same snakemake command to finish it")
    if report.mixed:
        todo.append("note: more than one lotto commit wrote it (snakemake --forceall with one checkout if that "
                    "matters)")
    return "verify: FAILED: " + "; ".join(todo)
