"""Run the real Snakemake workflow in a scratch copy of the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_workdir(tmp: Path) -> Path:
    """A scratch copy of the workflow files (not results), so tests never touch the checkout's results/."""
    work = tmp / "wf"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", work / "Snakefile")
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    shutil.copytree(ROOT / "workflow", work / "workflow", symlinks=True, dirs_exist_ok=True)
    for extra in ("slurm", "envs", "profiles"):
        if (ROOT / extra).exists():
            shutil.copytree(ROOT / extra, work / extra, symlinks=True, dirs_exist_ok=True)
    return work


def env() -> dict:
    """The test interpreter's bin folder first on PATH, so rules find this environment's `lotto`."""
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    return e


def snakemake(args, cwd, timeout=900, check=True) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "snakemake"), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table."""
    counts = {}
    in_table = False
    for line in dry_run_output.splitlines():
        if line.strip().startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^\s*([A-Za-z_][\w]*)\s+(\d+)\s*$", line)
            if m:
                if m.group(1) != "total":
                    counts[m.group(1)] = int(m.group(2))
            elif line.strip() and not set(line.strip()) <= set("- "):
                in_table = False
    return counts


def cifar10_dir() -> Path:
    """The real CIFAR-10 for the optional tests: $LOTTO_CIFAR10 (a folder with train.npz and test.npz), else a
    shared/data/cifar10 folder beside the checkout (development machines); tests skip when it is absent."""
    where = os.environ.get("LOTTO_CIFAR10")
    return Path(where).resolve() if where else (ROOT / ".." / "shared" / "data" / "cifar10").resolve()


_LOCAL_RULES = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings
with SnakemakeApi(OutputSettings(quiet=None)) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
                      config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]),
                      snakefile=Path("Snakefile"), workdir=Path("."))
    w = wf._workflow
    print(json.dumps(sorted(r.name for r in w.rules if r.name in w._localrules or r.norun)))
"""
_GROUP_RE = re.compile(r"Group job (\S+) \(jobs in lexicogr\. order\):")
_RULE_RE = re.compile(r"^( *)rule (\w+):$")


def cluster_submissions(work: Path, configfile: str, profile: str = "slurm") -> dict:
    """What ``snakemake --profile <profile>`` would submit to the cluster for a config, from its dry run:
    {"groups": {group id: {rule: jobs of it in the group}}, "jobs": {rule: ungrouped jobs of it}, "local":
    {rule: jobs run on the submitting host}, "total": submissions}. A group job is one submission, whatever it
    holds; several group jobs of one group id (group-components joins at most N unconnected parts per job) are
    keyed <id>, <id>#2, <id>#3, ..."""
    local = set(json.loads(subprocess.run(
        [sys.executable, "-c", _LOCAL_RULES, configfile], cwd=work, env=env(), capture_output=True, text=True,
        check=True).stdout.strip().splitlines()[-1]))
    out = snakemake(["-n", "--profile", profile, "--configfile", configfile], cwd=work).stdout
    groups: dict[str, dict[str, int]] = {}
    jobs: dict[str, int] = {}
    on_host: dict[str, int] = {}
    group = None
    for line in out.splitlines():
        m = _GROUP_RE.search(line)
        if m:
            group, n = m.group(1), 1
            while group in groups:
                n += 1
                group = f"{m.group(1)}#{n}"
            groups[group] = {}
            continue
        m = _RULE_RE.match(line)
        if not m:
            continue
        indent, rule = m.groups()
        if indent:  # a member of the group job above
            groups[group][rule] = groups[group].get(rule, 0) + 1
        else:
            group = None
            target = on_host if rule in local else jobs
            target[rule] = target.get(rule, 0) + 1
    return {"groups": groups, "jobs": jobs, "local": on_host, "total": len(groups) + sum(jobs.values())}


def figure_layout_problems(work: Path, experiment: str) -> dict[str, list[str]]:
    """Every figure of a finished run drawn again from the CSV it wrote (the table it plots) with the run's own
    context, and what :func:`lotto.figures.layout_problems` finds in it (matplotlib's rendered bounding
    boxes): figure name -> problems, for every figure of the run (an empty list: legible)."""
    import pandas as pd
    import yaml

    from lotto import curves, figures
    from lotto.composability import plots as comp_plots
    from lotto.imp import plots as imp_plots
    from lotto.names import figure_context
    from lotto.zoo import plots as zoo_plots

    exp = work / "results" / experiment
    context = figure_context(yaml.safe_load((exp / "config.yaml").read_text()))
    found = {}
    for csv in sorted((exp / "figures").glob("*.csv")):
        name, table = csv.stem, pd.read_csv(csv)
        with figures.style():
            if name.endswith("training_curves"):
                fig = curves.render(table, "Training curves", context)
            elif name.startswith("zoo_"):
                fig = zoo_plots.render(name, table, context)
            elif name.startswith("imp_"):
                fig = imp_plots.render(name, table, context)
            else:
                fig = comp_plots.render(name, table, context=context)
            found[name] = figures.layout_problems(fig)
    return found
