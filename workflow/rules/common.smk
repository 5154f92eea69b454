# Helpers for every family's rules (no torch here). The results folder, config arguments, training and light-job
# resources and bundles, training curves, figure files, the claims tables, the report. What one experiment family
# needs lives in its own rule file (workflow/rules/<family>.smk); the stages every family shares (data, theta_0,
# pretraining to a rewind point) in data.smk and core.smk; the figure, training-curve and claims rules of every
# family are generated from what each family registers (register_outputs, outputs.smk).
import json
import os
import shlex
import sys

from lotto.config import section_json
from lotto.devices import PER_GPU_ENV
from lotto.families import FAMILIES
from lotto.names import figure_context

ROOT = f"{config['results_dir']}/{config['experiment']}"
RESUME = f"{config['results_dir']}/.resume"
RES = config["resources"]
# the software every rule runs (used with --software-deployment-method conda); paths are relative to the rule files
LOTTO_ENV = "../../envs/lotto.yaml"
# Each experiment family's rule file appends the files a full run of it produces (rule all's input).
TARGETS = []
DATA = f"{ROOT}/data/{config['data']['dataset']}.npz"
# the trunk every family shares (core.smk): theta_0 of a replicate, and its rewind points
PRE_DIR = f"{ROOT}/rep{{rep}}/pre{{pre}}"

# what every figure's title names (the run's model, dataset; a family's own data sets) and its size on the
# page (config section figures; lotto/figures.py)
FIG_CONTEXT = shlex.quote(json.dumps(figure_context(config), sort_keys=True, separators=(",", ":")))
TRAINING_CURVES_SHELL = (
    "lotto training-curves --title {params.title} --context {params.context} {params.groups} "
    "--out-prefix {params.prefix} > {log} 2>&1"
)


wildcard_constraints:
    rep=r"\d+",
    pre=r"\d+",


def cfg_arg(*sections):
    """The config sections a step uses, as one shell-quoted JSON argument (a change reruns the step)."""
    return shlex.quote(section_json(config, *sections))


def labels_arg(**labels):
    return shlex.quote(json.dumps(labels, sort_keys=True, separators=(",", ":")))


def train_resources(bundled=True):
    # a training job the Slurm profile resubmits (retries) after a TIMEOUT gets train_runtime x attempt
    # minutes, and resumes from its saved state
    base = RES["train_runtime"]
    res = dict(mem_mb=RES["train_mem_mb"], runtime=lambda wildcards, attempt: base * attempt)
    if bundled and TPG > 1:
        # A bundle of TPG trainings (training_group) asks Slurm for ONE GPU, but Snakemake sums a job group's
        # integer resources over the jobs it runs side by side. On a cluster the GPU is therefore the string
        # resource gres, which a group passes on as it is (sbatch --gres=gpu[:<model>]:1), and no `gpu`, so
        # that the job step inside runs on the job's GPU (the jobstep plugin would srun --gpus=<sum>).
        # Locally it is gpu=1: one of the TPG slots per GPU of --resources gpu (below). Which of the two is
        # known only once Snakemake has picked its executor (not while it parses this file), hence functions.
        gres = f"gpu:{RES['train_gpu_model']}:1" if RES.get("train_gpu_model") else "gpu:1"
        res["gpu"] = lambda wildcards: 0 if _on_cluster() else 1
        res["gres"] = lambda wildcards: gres if _on_cluster() else ""
        return res
    res["gpu"] = RES["train_gpus"]
    if RES.get("train_gpu_model") and RES["train_gpus"]:
        res["gpu_model"] = RES["train_gpu_model"]  # the slurm plugin submits --gpus=<model>:<gpu>
    return res


def _on_cluster():
    """True when a cluster executor (Slurm) runs the jobs, and inside its jobs (remote mode)."""
    return workflow.remote_exec or not workflow.local_exec


# --- trainings per GPU (resources.trainings_per_gpu; docs/cluster.md, slurm/config.yaml "bundles") --------
TPG = RES["trainings_per_gpu"]
# Every job learns the slots per GPU from its environment (lotto/devices.py), not from a param or its command
# line: how many trainings share a GPU changes no result and must rerun nothing. Cluster jobs inherit it too
# (sbatch --export=ALL), and re-parse this file anyway.
os.environ[PER_GPU_ENV] = str(TPG)
# Locally, --resources gpu=G says how many GPUs there are, and each GPU job takes one of a GPU's TPG slots
# (claimed by lotto.devices): the scheduler counts G x TPG. The original G is kept on the workflow, so that
# parsing this file twice in one process does not multiply twice. (A cluster's GPUs are Slurm's to count.)
# This and training_group() set Snakemake's own settings (workflow.global_resources, group_settings), which
# Snakemake offers no directive for: tests/test_devices.py and tests/slurm pin them for the version in
# constraints.txt.
if TPG > 1 and "gpu" in workflow.global_resources:
    if not hasattr(workflow, "_lotto_gpus"):
        workflow._lotto_gpus = workflow.global_resources["gpu"].value
    if isinstance(workflow._lotto_gpus, int):
        workflow.global_resources["gpu"] = workflow._lotto_gpus * TPG
        if workflow.is_main_process and not workflow.remote_exec:
            print(f"lotto: resources.trainings_per_gpu {TPG}: --resources gpu={workflow._lotto_gpus} runs up to "
                  f"{workflow._lotto_gpus * TPG} GPU jobs at once, {TPG} per GPU", file=sys.stderr)


def _bundle(pattern, components):
    """A group directive that names each job's group by ``pattern`` (formatted with its wildcards) and has
    Snakemake's group-components join up to ``components`` unconnected jobs of that group into one cluster job.
    Set when the DAG is built, from the rule files (the Slurm profile cannot say it, as it does not know the
    families' groups); this sets Snakemake's own group_settings, which it offers no directive for
    (tests/test_devices.py and tests/slurm pin it for the version in constraints.txt)."""

    def group(wildcards):
        gid = pattern.format(**dict(wildcards.items()))
        settings = workflow.group_settings
        if settings is not None and settings.group_components.get(gid) != components:
            settings.group_components = {**settings.group_components, gid: components}
        return gid

    return group


def training_group(pattern, alone=None):
    """The `group` directive of a training: with TPG > 1, its bundle ``gpu_<pattern>`` (named by the wildcards
    that tell apart trainings ready at different times, so that a bundle starts when the inputs of all its
    trainings exist), joining up to TPG trainings per Slurm job; else ``alone``, its group when every training
    has a GPU of its own (None, a pattern or a function of the wildcards)."""
    if TPG == 1:
        return alone
    return _bundle(f"gpu_{pattern}", TPG)


def light_group(pattern, components):
    """The `group` directive of a family's light jobs (masks, compositions, pruning steps): on a cluster the
    unconnected parts of one group go out as one job, up to ``components`` of them (local runs ignore
    groups)."""
    return _bundle(pattern, components)


def train_shell(source, noise, kind="trained", end="end", mask="", metrics=True):
    """The one `lotto train` command line of every training rule, as a shell template.

    ``source``: the rule's input placeholder; ``mask``: e.g. "--mask {input.mask}"; ``metrics``: evaluate on
    the test set and write {output.metrics} with {params.labels}. The rule's outputs: ``ckpt`` and ``curve``
    (curve_of(ckpt): the training curve), and ``metrics`` with ``metrics``. The resumable state lives under
    RESUME, outside the declared outputs (which Snakemake deletes before a job).
    """
    parts = [
        "lotto train --config {params.cfg} --threads {threads} --data {input.data}",
        f"--from {source} --end {end} --replicate {{wildcards.rep}} --noise {noise} --kind {kind}",
        mask,
        "--metrics {output.metrics} --labels {params.labels}" if metrics else "",
        f"--curve {{output.curve}} --resume-state {RESUME}/{{output.ckpt}}.pt --out {{output.ckpt}} > {{log}} 2>&1",
    ]
    return " ".join(p for p in parts if p)


def curve_of(ckpt):
    """The training curve (CSV) a training job writes beside its checkpoint: <stem>.curve.csv."""
    return ckpt[: -len(".safetensors")] + ".curve.csv"


def curve_files(groups):
    return [f for _, files in groups for f in files]


def curves_params(title, groups):
    """params of a training_curves figure rule: its title and one `--group LABEL CURVE...` per group with runs."""
    args = [" ".join(["--group", *map(shlex.quote, [label, *files])]) for label, files in groups if files]
    return dict(title=shlex.quote(title), groups=" ".join(args))


def light_resources():
    # light_slots: one per light job. The Slurm profile gives each job group (bundle) `light_slots` of them
    # (--resources, scoped "local" below): how many of its light jobs run side by side, and so the cores and
    # memory the bundle asks for. The runtime of a bundle is the sum over the layers it runs one after another;
    # a bundle that runs out of time is resubmitted with light_runtime x attempt per job.
    base = RES["light_runtime"]
    return dict(mem_mb=RES["light_mem_mb"], runtime=lambda wildcards, attempt: base * attempt, light_slots=1)


# `local`: a --resources light_slots=N limit applies to each group job on its own (its width), and is not a
# workflow-wide limit on the jobs running at once (which a `global` resource would be)
resource_scopes:
    light_slots="local",


def init_path(rep):
    return f"{ROOT}/rep{rep}/init.safetensors"


def rewind_path(rep, pre):
    return f"{ROOT}/rep{rep}/pre{pre}/rewind.safetensors"


def figure_files(name):
    """A figure's files: results/<experiment>/figures/<name>.{png,pdf,csv} (the CSV is what it plots)."""
    return [f"{ROOT}/figures/{name}{ext}" for ext in (".png", ".pdf", ".csv")]


# --- what a family's rule file registers; outputs.smk makes its figure, training-curve and claims rules ------
FAMILY_OUTPUTS = {}


def register_outputs(family, *, figures, figure_inputs, figure_command, curves=None, claim_inputs,
                     own_rules=(), extra_targets=()):
    """Register a family's outputs with the rules generated for every family (outputs.smk):

    ``figures``: the figures this run draws; ``figure_inputs(name)``: a figure's input files;
    ``figure_command(name)``: its `lotto` subcommand and arguments before --context/--out-prefix (e.g.
    "figure fig1a --xscale linear"); ``curves``: (figure name, title, groups()) of its training curves, drawn
    by `lotto training-curves` from the groups' curve files; ``claim_inputs()``: what its claims read;
    ``own_rules``: figures the family's file makes itself; ``extra_targets``: files (tables)
    its aggregate figures rule (the spec's figures_target) builds too."""
    FAMILY_OUTPUTS[family] = dict(figures=list(figures), figure_inputs=figure_inputs, figure_command=figure_command,
                                  curves=curves, claim_inputs=claim_inputs, own_rules=set(own_rules),
                                  extra_targets=list(extra_targets))


# === claims: one table per family (claims_<family>, outputs.smk), merged by `claims` (report.smk) =========

CLAIMS_TABLE = f"{ROOT}/tables/claims.csv"
CLAIMS_HTML = f"{ROOT}/tables/claims.html"  # the report's compact table


def claims_part(family):
    return f"{ROOT}/tables/claims-{family}.csv"


def claims_parts():
    return [claims_part(name) for name in FAMILIES if config.get(name)]


# === masks for PyTorch code without lotto (rules in export.smk) =====================================
def exported_masks():
    """The safetensors file export_mask writes for each mask among the run's targets."""
    return [f"{ROOT}/export/{os.path.relpath(m, ROOT)[: -len('.mask')]}.safetensors" for m in TARGETS
            if m.endswith(".mask")]


# === the report (snakemake --report report.html): rules in report.smk, layout in lotto/report.py ===========
import lotto.report as lotto_report  # noqa: E402

PROVENANCE_TABLE = f"{ROOT}/tables/provenance.csv"
RUN_CONFIG = f"{ROOT}/config.yaml"
PAPERS_HTML = f"{ROOT}/tables/papers.html"
_REPORT_DIR = os.path.join(workflow.basedir, "workflow", "report")
lotto_report.register_rst_directives()  # the landing page's inline figures


def config_sources():
    """The config files of this run, relative to the working directory when they are inside it."""
    rel = [os.path.relpath(f) for f in workflow.configfiles]
    return [r if not r.startswith("..") else str(f) for r, f in zip(rel, workflow.configfiles)]


def report_caption(stem):
    # a missing caption must not break the workflow (tests/test_report.py requires every one)
    return lotto_report.caption(stem) if os.path.exists(os.path.join(_REPORT_DIR, f"{stem}.rst")) else None


# `snakemake --report` alone (no --report-after-run) renders what is there: Snakemake refuses a report with a
# marked file missing, which after e.g. `snakemake claims` is every figure. A file not built yet is left unmarked
# and counted, and the run says how to build the rest (report_missing_note in report.smk).
REPORT_ONLY = workflow.is_main_process and "--report" in sys.argv and "--report-after-run" not in sys.argv
REPORT_MISSING = []


def _for_report(path, **marks):
    if REPORT_ONLY and not os.path.exists(path):
        REPORT_MISSING.append(path)
        return path
    return report(path, **marks)


def report_figure(family, name, files):
    """A figure rule's outputs, its .png marked for the report under the family's category."""
    sub, mirrors = lotto_report.FIGURES.get(family, {}).get(name, ("8 Other figures", ""))
    png = dict(caption=report_caption(name), category=lotto_report.category(family, config), subcategory=sub,
               labels={"figure": name, "mirrors": mirrors})
    return [_for_report(f, **png) if f.endswith(".png") else f for f in files]


def report_tables(family, paths):
    """A family's summary tables (results/<experiment>/tables/<name>.csv), marked for the report."""
    stems = dict(lotto_report.TABLES.get(family, []))
    return [_for_report(p, caption=report_caption(stems.get(os.path.basename(p)[: -len(".csv")], "")),
                        category=lotto_report.category(family, config), subcategory=lotto_report.TABLES_SUBCATEGORY,
                        labels={"file": os.path.basename(p)}) for p in paths]


def report_run(path, stem):
    """A file of the report's first (claims) or last (config, provenance) section."""
    section = lotto_report.CLAIMS if stem == "claims" else lotto_report.RUN
    return _for_report(path, caption=report_caption(stem), category=lotto_report.category(section, config),
                       labels={"file": os.path.basename(path)})


def provenance_sources():
    """Every checkpoint and mask among the run's targets, and the metrics file beside each trained checkpoint
    (training writes both into one folder). Call it after every family's rule file has added its TARGETS."""
    artifacts = [f for f in TARGETS if f.endswith((".safetensors", ".mask"))]
    trained = [f for f in artifacts if os.path.basename(f) in ("trained.safetensors", "retrained.safetensors")]
    return artifacts + [os.path.join(os.path.dirname(f), "metrics.json") for f in trained]
