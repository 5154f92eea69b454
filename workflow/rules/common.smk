# Path builders and target functions shared by every rule file (no torch here).
import json
import os
import shlex
import sys

from lotto.composability import ACCURACY_VIEWS, EVERY_OP, FIGURES as COMP_FIGURES, xscale_for
from lotto.composability.claims import random_ticket_point
from lotto.config import section_json
from lotto.devices import PER_GPU_ENV
from lotto.imp import FIGURES as IMP_FIGURE_NAMES
from lotto.masks import vote_threshold
from lotto.names import figure_context
from lotto.paths import sparsity_tag
from lotto.zoo import FIGURES as ZOO_FIGURE_NAMES

ROOT = f"{config['results_dir']}/{config['experiment']}"
RESUME = f"{config['results_dir']}/.resume"
RES = config["resources"]
# the software every rule runs (used with --software-deployment-method conda); paths are relative to the rule files
LOTTO_ENV = "../../envs/lotto.yaml"
# Each experiment family's rule file appends the files a full run of it produces (rule all's input).
TARGETS = []

# Composability family (Movva, Frankle & Carbin 2021); empty grids when the config has no such section.
COMP = config.get("composability")
REPS = COMP["replicates"] if COMP else []
PRES = COMP["pretrain_steps"] if COMP else []
KS = sorted(COMP["ks"]) if COMP else []
SIBLINGS = list(range(1, (COMP["siblings"] or max(KS)) + 1)) if COMP else []
SPARSITIES = [sparsity_tag(s) for s in COMP["sparsities"]] if COMP else []
BASELINE_SIBLING = COMP["baseline_sibling"] if COMP else 1
OPS = COMP["ops"] if COMP else []
MATCH_SPARSITY = COMP["match_sparsity"] if COMP else False
DATA = f"{ROOT}/data/{config['data']['dataset']}.npz"
PRE_DIR = f"{ROOT}/rep{{rep}}/pre{{pre}}"

# an accuracy figure of one composition is drawn when that composition is run
FIGURES = [f for f in COMP_FIGURES if ACCURACY_VIEWS.get(f, (EVERY_OP,))[0] in [EVERY_OP, *OPS]]
# one x scale for every sparsity figure of the run, from the config's grid (not from each figure's own points)
COMP_XSCALE = xscale_for(COMP["sparsities"]) if COMP else "linear"
# what every figure's title names (the run's model, dataset; each zoo task's data set) and its size on the
# page (config section figures; lotto/figures.py)
FIG_CONTEXT = shlex.quote(json.dumps(figure_context(config), sort_keys=True, separators=(",", ":")))
TRAINING_CURVES_SHELL = (
    "lotto training-curves --title {params.title} --context {params.context} {params.groups} "
    "--out-prefix {params.prefix} > {log} 2>&1"
)


wildcard_constraints:
    rep=r"\d+",
    pre=r"\d+",
    sib=r"\d+",
    k=r"\d+",
    op=r"union|intersection|mean_magnitude|vote[1-9]\d*",
    s=r"0\.\d{4}",
    ticket=r"k\d+/(?:union|intersection|mean_magnitude|vote[1-9]\d*)|oneshot|random",


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

# The Slurm bundles (TPG > 1): each training rule's job group, named by the wildcards that tell apart trainings
# ready at different times (a bundle starts when the inputs of all its trainings exist). The trainings of one
# bundle are not connected in the DAG: Snakemake's group-components joins up to TPG of them per Slurm job.
TRAINING_BUNDLES = {
    "pretrain": "pretrain_rep{rep}",
    "sibling": "sibling_rep{rep}_pre{pre}",
    "retrain": "retrain_rep{rep}_pre{pre}",
    "zoo_pretrain": "zoo_pretrain_rep{rep}",
    "zoo_dense": "zoo_dense_rep{rep}",
    "zoo_round": "zoo_round_rep{rep}_iter{zn}",
    "zoo_retrain": "zoo_retrain_rep{rep}",
    "imp_train": "imp_{chain}_level{level}",
    # not a training: each pruning step of the fixed chain rides in the job that trains under its mask
    "imp_prune": "imp_fixed_level{level}",
}


def training_group(rule, alone=None):
    """The `group` directive of a training (TRAINING_BUNDLES names them): its bundle when TPG > 1, else
    ``alone``, its group when every training has a GPU of its own (None, a pattern or a function of the
    wildcards)."""
    if TPG == 1:
        return alone
    pattern = TRAINING_BUNDLES[rule]

    # each bundle name goes into Snakemake's group-components (up to TPG unconnected jobs per group job) when
    # it builds the DAG: the Slurm profile cannot say it, as it does not see the config
    def group(wildcards):
        gid = f"gpu_{pattern.format(**dict(wildcards.items()))}"
        settings = workflow.group_settings
        if settings is not None and settings.group_components.get(gid) != TPG:
            settings.group_components = {**settings.group_components, gid: TPG}
        return gid

    return group


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


# --- artifact paths -------------------------------------------------------------------------------
def rewind_path(rep, pre):
    return f"{ROOT}/rep{rep}/pre{pre}/rewind.safetensors"


def sibling_mask(rep, pre, sib, s):
    return f"{ROOT}/rep{rep}/pre{pre}/sibling{sib}/masks/s{s}.mask"


def sibling_checkpoint(rep, pre, sib):
    return f"{ROOT}/rep{rep}/pre{pre}/sibling{sib}/trained.safetensors"


def sibling_metrics(rep, pre, sib):
    return f"{ROOT}/rep{rep}/pre{pre}/sibling{sib}/metrics.json"


def compose_record(rep, pre, k, op, s):
    return f"{ROOT}/rep{rep}/pre{pre}/k{k}/{op}/s{s}/compose.json"


def ticket_metrics(rep, pre, ticket, s):
    return f"{ROOT}/rep{rep}/pre{pre}/{ticket}/s{s}/metrics.json"


def ops_at(k):
    """The compositions of composability.ops run at k. vote<m> needs m <= k, and is left out where it is the
    same mask as a listed union (m = 1) or intersection (m = k): retrained with the same noise, it would
    repeat that ticket's training."""
    out = []
    for op in OPS:
        m = vote_threshold(op)
        if m is not None and (m > k or (m == 1 and "union" in OPS) or (m == k and "intersection" in OPS)):
            continue
        out.append(op)
    return out


def overlap_op(k):
    """The composition whose sidecar the overlap figures read (every sidecar records the same overlap)."""
    return "union" if "union" in ops_at(k) else ops_at(k)[0]


def compose_inputs(w):
    """The k sibling masks; their checkpoints too where their weights are ranked (mean_magnitude, matching)."""
    sibs = range(1, int(w.k) + 1)
    out = dict(masks=[sibling_mask(w.rep, w.pre, i, w.s) for i in sibs])
    if w.op == "mean_magnitude" or MATCH_SPARSITY:
        out["checkpoints"] = [sibling_checkpoint(w.rep, w.pre, i) for i in sibs]
    return out


def compose_flags(w, input):
    flags = "--match-sparsity " if MATCH_SPARSITY else ""
    if "checkpoints" in input.keys():
        flags += "--checkpoints " + " ".join(input.checkpoints)
    return flags


def parse_ticket(ticket):
    """'k3/union' -> (3, 'union'); 'oneshot' -> (None, 'oneshot')."""
    if "/" in ticket:
        k, op = ticket.split("/")
        return int(k[1:]), op
    return None, ticket


# --- what each figure plots ---------------------------------------------------------------------------
def _dense(pres):
    return [sibling_metrics(r, p, i) for r in REPS for p in pres for i in SIBLINGS]


def _baselines(pres):
    return [ticket_metrics(r, p, b, s) for r in REPS for p in pres for b in ("oneshot", "random") for s in SPARSITIES]


def comp_curve_groups():
    """The composability trainings by role: median and range over each group make hundreds of runs readable."""
    def retrained(tickets):
        return [curve_of(f"{ROOT}/rep{r}/pre{p}/{t}/s{s}/retrained.safetensors") for r in REPS for p in PRES
                for t in tickets for s in SPARSITIES]

    names = {"union": "unions of k masks", "intersection": "intersections of k masks"}
    return [
        ("pretraining (0 to t)", [curve_of(rewind_path(r, p)) for r in REPS for p in PRES]),
        ("dense siblings (t to end)", [curve_of(sibling_checkpoint(r, p, i)) for r in REPS for p in PRES
                                       for i in SIBLINGS]),
        ("one-shot tickets", retrained(["oneshot"])),
        ("random tickets", retrained(["random"])),
    ] + [(names.get(op, f"{op} of k masks"), retrained([f"k{k}/{op}" for k in KS if op in ops_at(k)])) for op in OPS]


def comp_figure_params(name):
    if name == "training_curves":
        return curves_params("Training curves of the composability runs (tickets: retraining from t)",
                             comp_curve_groups())
    return dict(name=name, xscale=COMP_XSCALE)


def figure_inputs(name):
    if name == "training_curves":
        return curve_files(comp_curve_groups())
    top = [max(PRES)]
    if name == "fig1a":
        return [compose_record(r, p, 2, overlap_op(2), s) for r in REPS for p in PRES for s in SPARSITIES]
    if name == "fig1b":
        return [compose_record(r, p, k, overlap_op(k), s) for r in REPS for p in top for k in KS for s in SPARSITIES]
    if name == "fig2e":
        tickets = [ticket_metrics(r, p, f"k2/{op}", s) for r in REPS for p in top for op in ops_at(2)
                   for s in SPARSITIES]
        return tickets + _baselines(top) + _dense(top)
    op = {"fig2a": "union", "fig2b": "intersection", "fig2c": "union", "fig2d": "intersection"}[name]
    pres, ks = (PRES, [2]) if name in ("fig2a", "fig2b") else (top, KS)
    tickets = [ticket_metrics(r, p, f"k{k}/{op}", s) for r in REPS for p in pres for k in ks for s in SPARSITIES]
    return tickets + _baselines(pres) + _dense(pres)


def figure_files(name):
    return [f"{ROOT}/figures/{name}{ext}" for ext in (".png", ".pdf", ".csv")]


def all_figure_files():
    return [f for name in FIGURES for f in figure_files(name)]


def all_records():
    records = [compose_record(r, p, k, op, s) for r in REPS for p in PRES for k in KS
               for op in ops_at(k) for s in SPARSITIES]
    records += [ticket_metrics(r, p, f"k{k}/{op}", s) for r in REPS for p in PRES for k in KS
                for op in ops_at(k) for s in SPARSITIES]
    return records + _baselines(PRES) + _dense(PRES)


def summary_tables():
    return [f"{ROOT}/tables/{name}.csv" for name in ("overlap", "accuracy")]


def all_artifacts():
    """Every checkpoint and mask of the experiment tree (records and metrics come via the figures)."""
    out = [DATA]
    for r in REPS:
        out.append(f"{ROOT}/rep{r}/init.safetensors")
        for p in PRES:
            out.append(rewind_path(r, p))
            for i in SIBLINGS:
                out.append(sibling_checkpoint(r, p, i))
                out += [sibling_mask(r, p, i, s) for s in SPARSITIES]
            tickets = [f"k{k}/{op}" for k in KS for op in ops_at(k)] + ["oneshot", "random"]
            for t in tickets:
                for s in SPARSITIES:
                    out.append(f"{ROOT}/rep{r}/pre{p}/{t}/s{s}/retrained.safetensors")
                    if t != "oneshot":
                        out.append(f"{ROOT}/rep{r}/pre{p}/{t}/s{s}/mask.mask")
    return out

def ticket_mask(w):
    if w.ticket == "oneshot":
        return sibling_mask(w.rep, w.pre, BASELINE_SIBLING, w.s)
    return f"{ROOT}/rep{w.rep}/pre{w.pre}/{w.ticket}/s{w.s}/mask.mask"


def ticket_labels(w):
    k, ticket = parse_ticket(w.ticket)
    return labels_arg(
        replicate=int(w.rep), pretrain_steps=int(w.pre), ticket=ticket, k=k, target_sparsity=float(w.s)
    )


def comp_claim_inputs():
    """The records the composability claims read (lotto/composability/claims.py), and no more: every sibling mask
    at t=0 and the largest t (the overlaps), intersection sidecars at every t (the sanity check), unions and
    intersections retrained at the largest t (every k) and at t=0 (k=2), the one-shot curve at both, and the
    random ticket at the one sparsity its claim uses."""
    top = max(PRES)
    ends = sorted({0, top} & set(PRES))
    recs = [sibling_mask(r, p, i, s) for r in REPS for p in ends for i in SIBLINGS for s in SPARSITIES]
    recs += [compose_record(r, p, k, "intersection", s) for r in REPS for p in PRES for k in KS for s in SPARSITIES]
    composed = [(top, k) for k in KS] + ([(0, 2)] if 0 in PRES and top != 0 else [])
    recs += [ticket_metrics(r, p, f"k{k}/{op}", s) for r in REPS for p, k in composed
             for op in ("union", "intersection") for s in SPARSITIES]
    recs += [ticket_metrics(r, p, "oneshot", s) for r in REPS for p in ends for s in SPARSITIES]
    cl = config["claims"]
    point = random_ticket_point(COMP["sparsities"], cl["random_ticket_min_sparsity"], cl["random_ticket_max_sparsity"])
    if point is not None:
        recs += [ticket_metrics(r, top, "random", sparsity_tag(point)) for r in REPS]
    return recs


# === zoo family: paths and targets (rules in zoo.smk) ========================================
from lotto.config import load_schema as _zoo_schema  # noqa: E402

ZOO = config.get("zoo")
ZOO_FIGURES = list(ZOO_FIGURE_NAMES)

if ZOO:
    _zs = _zoo_schema()["properties"]["zoo"]["properties"]
    ZOO_ALL_METHODS = _zs["methods"]["items"]["enum"]
    ZOO_ALL_HANDLINGS = _zs["handlings"]["items"]["enum"]
    ZOO_MAIN = ZOO["main_task"] or config["data"]["dataset"]
    ZOO_EXTRA = {t["name"]: t for t in ZOO["tasks"]}
    ZOO_TASKS = [ZOO_MAIN] + list(ZOO_EXTRA)
    ZOO_REPS = ZOO["replicates"]
    ZOO_N = ZOO["iterations"]
    ZOO_TM, ZOO_TH = ZOO["transfer"]["method"], ZOO["transfer"]["handling"]
    ZOO_EH = ZOO["ensemble_handling"] or ZOO["handlings"][0]
    ZOO_USES_T = "rewind_t" in ZOO["handlings"] or ZOO_TH == "rewind_t"
    ZOO_T = ZOO["rewind_step"]
    ZOO_TICKETS = [f"bespoke_{t}" for t in ZOO_TASKS] + ["consensus", "random"]
    # a comparison needs two of what it compares
    _zoo_skip = set()
    if len(ZOO["methods"]) < 2:
        _zoo_skip |= {"zoo_jaccard_methods", "zoo_jaccard_layers"}
    if len(ZOO["handlings"]) < 2:
        _zoo_skip.add("zoo_jaccard_handlings")
    if len(ZOO_TASKS) < 2:
        _zoo_skip.add("zoo_jaccard_tasks")
    ZOO_FIGURES = [f for f in ZOO_FIGURES if f not in _zoo_skip]

    wildcard_constraints:
        ztask="|".join(ZOO_TASKS),
        zmethod="|".join(ZOO_ALL_METHODS),
        zhandling="|".join(ZOO_ALL_HANDLINGS),
        zn=r"[1-9]\d*",
        zticket="|".join(ZOO_TICKETS),
        ztarget="|".join(ZOO_TASKS),

    def zoo_runs(task):
        """(method, handling) pairs run on a task: the whole grid on grid tasks, else the transfer run only."""
        grid = task == ZOO_MAIN or ZOO["grid"] == "all"
        runs = [(m, h) for m in ZOO["methods"] for h in ZOO["handlings"]] if grid else []
        return runs + ([] if (ZOO_TM, ZOO_TH) in runs else [(ZOO_TM, ZOO_TH)])

    def zoo_data(task):
        return DATA if task == ZOO_MAIN else f"{ROOT}/data/zoo-{task}.npz"

    def zoo_rewind(rep, task):
        if task == ZOO_MAIN:
            return rewind_path(rep, ZOO_T)
        return f"{ROOT}/rep{rep}/zoo/{task}/pre{ZOO_T}/rewind.safetensors"

    def zoo_init(rep):
        return f"{ROOT}/rep{rep}/init.safetensors"

    def zoo_dense(rep, task):
        return f"{ROOT}/rep{rep}/zoo/{task}/dense"

    def zoo_dir(rep, task, method, handling, n):
        return f"{ROOT}/rep{rep}/zoo/{task}/{method}/{handling}/iter{n}"

    def zoo_ticket_mask(rep, ticket):
        if ticket.startswith("bespoke_"):
            task = ticket[len("bespoke_"):]
            return f"{zoo_dir(rep, task, ZOO_TM, ZOO_TH, ZOO_N)}/mask.mask"
        return f"{ROOT}/rep{rep}/zoo_transfer/{ticket}/mask.mask"

    def zoo_transfer_metrics(rep, ticket, target):
        # a bespoke ticket retrained on its own task from the init is the last round of its own run
        if ticket == f"bespoke_{target}" and ZOO_TH == "rewind_init":
            return f"{zoo_dir(rep, target, ZOO_TM, ZOO_TH, ZOO_N)}/metrics.json"
        return f"{ROOT}/rep{rep}/zoo_transfer/{ticket}/on_{target}/metrics.json"

    def zoo_task_data_cfg(task):
        spec = {"source": "torchvision", "path": None, "download_root": "data/torchvision", "train_size": None,
                "test_size": None, "subset_seed": 0, **ZOO_EXTRA[task]}
        spec.pop("name")
        # every task is converted like the main one, so one architecture and one init serve all of them
        for key in ("image_size", "channels", "validation_fraction"):
            spec[key] = config["data"][key]
        return {"data": spec}

    def zoo_round_inputs(w):
        n = int(w.zn)
        out = dict(data=zoo_data(w.ztask), init=zoo_init(w.rep))
        if n == 1:
            out["previous"] = f"{zoo_dense(w.rep, w.ztask)}/trained.safetensors"
        else:
            prev = zoo_dir(w.rep, w.ztask, w.zmethod, w.zhandling, n - 1)
            out["previous"] = f"{prev}/trained.safetensors"
            out["previous_mask"] = f"{prev}/mask.mask"
        if w.zhandling == "rewind_t":
            out["rewind"] = zoo_rewind(w.rep, w.ztask)
        return out

    def zoo_round_flags(w, input):
        flags = ""
        if "previous_mask" in input.keys():
            flags += f" --previous-mask {input.previous_mask}"
        if "rewind" in input.keys():
            flags += f" --rewind {input.rewind}"
        return flags

    # --- what each figure reads --------------------------------------------------------------------
    def zoo_masks(tasks, handlings=None, iterations=None, runs_filter=None):
        out = []
        for r in ZOO_REPS:
            for task in tasks:
                for m, h in zoo_runs(task):
                    if (handlings is None or h in handlings) and (runs_filter is None or runs_filter(m, h)):
                        for n in iterations or range(1, ZOO_N + 1):
                            out.append(f"{zoo_dir(r, task, m, h, n)}/mask.mask")
        return out

    def zoo_all_round_metrics():
        out = [f"{zoo_dense(r, t)}/metrics.json" for r in ZOO_REPS for t in ZOO_TASKS]
        for r in ZOO_REPS:
            for task in ZOO_TASKS:
                for m, h in zoo_runs(task):
                    out += [f"{zoo_dir(r, task, m, h, n)}/metrics.json" for n in range(1, ZOO_N + 1)]
        return out

    def zoo_figure_inputs(name):
        main = [ZOO_MAIN]
        if name in ("zoo_jaccard_methods", "zoo_jaccard_layers"):
            return zoo_masks(main, iterations=[ZOO_N], runs_filter=lambda m, h: m in ZOO["methods"])
        if name == "zoo_jaccard_handlings":
            return zoo_masks(main, runs_filter=lambda m, h: h in ZOO["handlings"] and m in ZOO["methods"])
        if name == "zoo_jaccard_tasks":
            return zoo_masks(ZOO_TASKS, runs_filter=lambda m, h: (m, h) == (ZOO_TM, ZOO_TH))
        if name in ("zoo_effective", "zoo_accuracy", "zoo_stability"):
            return zoo_all_round_metrics()
        if name == "zoo_transfer":
            return [zoo_transfer_metrics(r, k, t) for r in ZOO_REPS for k in ZOO_TICKETS for t in ZOO_TASKS]
        if name == "zoo_ensemble":
            return [f"{zoo_dir(r, ZOO_MAIN, m, ZOO_EH, ZOO_N)}/trained.safetensors" for r in ZOO_REPS
                    for m in ZOO["methods"]]
        if name == "zoo_training_curves":
            return curve_files(zoo_curve_groups())
        raise ValueError(name)

    def zoo_claim_inputs():
        """What the zoo claims read (lotto/zoo/claims.py): the main task's last-round masks and metrics of every
        method x handling, every task's bespoke ticket mask, and every ticket retrained on every task."""
        masks = zoo_masks([ZOO_MAIN], iterations=[ZOO_N])
        masks += [zoo_ticket_mask(r, f"bespoke_{t}") for r in ZOO_REPS for t in ZOO_TASKS]
        rounds = [f"{zoo_dir(r, ZOO_MAIN, m, h, ZOO_N)}/metrics.json" for r in ZOO_REPS for m, h in zoo_runs(ZOO_MAIN)]
        # every round of each task's bespoke run: the consensus is compared with the run at its own sparsity
        rounds += [f"{zoo_dir(r, t, ZOO_TM, ZOO_TH, n)}/metrics.json" for r in ZOO_REPS for t in ZOO_TASKS
                   for n in range(1, ZOO_N + 1)]
        transfer = [zoo_transfer_metrics(r, k, t) for r in ZOO_REPS for k in ZOO_TICKETS for t in ZOO_TASKS]
        return list(dict.fromkeys(masks + rounds + transfer))

    def zoo_curve_groups():
        groups = []
        if ZOO_USES_T:
            groups.append(("pretraining (0 to t)", [curve_of(zoo_rewind(r, t)) for r in ZOO_REPS for t in ZOO_TASKS]))
        groups.append(("dense", [curve_of(f"{zoo_dense(r, t)}/trained.safetensors") for r in ZOO_REPS
                                 for t in ZOO_TASKS]))
        # by handling, not method: the handling sets where a round starts (step and weights), the method only
        # which weights it keeps
        for h in dict.fromkeys(ZOO["handlings"] + [ZOO_TH]):
            groups.append((f"pruning rounds, {h}", [
                curve_of(f"{zoo_dir(r, task, m, hh, n)}/trained.safetensors") for r in ZOO_REPS for task in ZOO_TASKS
                for m, hh in zoo_runs(task) if hh == h for n in range(1, ZOO_N + 1)
            ]))
        transfer = [zoo_transfer_metrics(r, k, t) for r in ZOO_REPS for k in ZOO_TICKETS for t in ZOO_TASKS]
        groups.append(("tickets retrained on every task", [  # a bespoke ticket on its own task is a round above
            curve_of(p.replace("metrics.json", "trained.safetensors")) for p in transfer if "/zoo_transfer/" in p
        ]))
        return groups

    def zoo_figure_params(name):
        if name == "zoo_training_curves":
            return curves_params("Training curves of the pruning-method zoo", zoo_curve_groups())
        return dict(name=name)

    def zoo_figure_files(name):
        return [f"{ROOT}/figures/{name}{ext}" for ext in (".png", ".pdf", ".csv")]

    def zoo_artifacts():
        out = [zoo_data(t) for t in ZOO_TASKS]
        for r in ZOO_REPS:
            out.append(zoo_init(r))
            for task in ZOO_TASKS:
                out.append(f"{zoo_dense(r, task)}/trained.safetensors")
                if ZOO_USES_T:
                    out.append(zoo_rewind(r, task))
                for m, h in zoo_runs(task):
                    for n in range(1, ZOO_N + 1):
                        d = zoo_dir(r, task, m, h, n)
                        out += [f"{d}/mask.mask", f"{d}/start.safetensors", f"{d}/trained.safetensors"]
            out += [zoo_ticket_mask(r, k) for k in ("consensus", "random")]
            for k in ZOO_TICKETS:
                for t in ZOO_TASKS:
                    p = zoo_transfer_metrics(r, k, t)
                    out.append(p.replace("metrics.json", "trained.safetensors"))
        return out


# === imp family: paths and targets (rules in imp.smk) ========================================

IMP = config.get("imp")

if IMP:
    IMP_REPS = IMP["replicates"]
    IMP_PRES = IMP["pretrain_steps"]
    IMP_LEVELS = IMP["levels"]
    _imp_top = [max(IMP_PRES)]
    IMP_PAIR_PRES = _imp_top if IMP["pairwise_pretrain_steps"] is None else IMP["pairwise_pretrain_steps"]
    IMP_SLICE = IMP["slice"]
    IMP_SLICE_PRES = _imp_top if IMP_SLICE["pretrain_steps"] is None else IMP_SLICE["pretrain_steps"]
    IMP_SLICE_REP = IMP_REPS[0]
    IMP_AD = IMP["adaptive"]
    IMP_AD_PRES = (_imp_top if IMP_AD["pretrain_steps"] is None else IMP_AD["pretrain_steps"]) if IMP_AD["enabled"] else []
    IMP_DIR = f"{PRE_DIR}/imp"
    IMP_BETAS = ",".join(repr(float(b)) for b in IMP["beta_grid"])
    IMP_EVAL = f"--beta-grid {IMP_BETAS} --bn-stats {IMP['bn_stats']} --bn-images {IMP['bn_images']}"

    def imp_level(rep, pre, chain, level):
        """Folder of a level; the adaptive chain starts from the fixed chain's dense level 0."""
        chain = "fixed" if int(level) == 0 else chain
        return f"{ROOT}/rep{rep}/pre{pre}/imp/{chain}/level{level}"

    def imp_ckpt(rep, pre, chain, level):
        return f"{imp_level(rep, pre, chain, level)}/trained.safetensors"

    def imp_metrics(rep, pre, chain, level):
        return f"{imp_level(rep, pre, chain, level)}/metrics.json"

    def imp_mask(rep, pre, chain, level):
        return [] if int(level) == 0 else [f"{imp_level(rep, pre, chain, level)}/mask.mask"]

    def imp_mask_opt(rep, pre, chain, level):
        m = imp_mask(rep, pre, chain, level)
        return f"--mask {m[0]}" if m else ""

    def imp_path_record(rep, pre, a, b):
        return f"{ROOT}/rep{rep}/pre{pre}/imp/fixed/paths/level{a}-level{b}.json"

    def imp_slice_record(rep, pre, level):
        return f"{ROOT}/rep{rep}/pre{pre}/imp/fixed/slices/level{level}.json"

    def imp_noise(level):
        return f"custom:imp-L{level}" if IMP["noise"] == "per_level" else "custom:imp"

    def imp_chain_levels(chain):
        return range(IMP_LEVELS) if chain == "fixed" else range(1, IMP_AD["levels"])

    # --- what each figure reads -------------------------------------------------------------------
    def imp_all_metrics(chain, pres):
        return [imp_metrics(r, p, chain, L) for r in IMP_REPS for p in pres for L in imp_chain_levels(chain)]

    def imp_dense_metrics():
        return [imp_metrics(r, p, "fixed", 0) for r in IMP_REPS for p in IMP_PRES]

    def imp_successive_paths():
        return [imp_path_record(r, p, L, L + 1) for r in IMP_REPS for p in IMP_PRES for L in range(IMP_LEVELS - 1)]

    def imp_pairwise_paths():
        return [imp_path_record(r, p, a, b) for r in IMP_REPS for p in IMP_PAIR_PRES
                for a in range(IMP_LEVELS) for b in range(a + 1, IMP_LEVELS)]

    def imp_slices():
        return [imp_slice_record(IMP_SLICE_REP, p, L) for p in IMP_SLICE_PRES for L in IMP_SLICE["levels"]]

    def imp_adaptive_records():
        return [f"{imp_level(r, p, 'adaptive', L)}/prune.json" for r in IMP_REPS for p in IMP_AD_PRES
                for L in imp_chain_levels("adaptive")]

    def imp_curve_groups():
        return [
            ("pretraining (0 to τ)", [curve_of(rewind_path(r, p)) for r in IMP_REPS for p in IMP_PRES]),
            ("level 0 (dense)", [curve_of(imp_ckpt(r, p, "fixed", 0)) for r in IMP_REPS for p in IMP_PRES]),
            ("fixed-ratio levels", [curve_of(imp_ckpt(r, p, "fixed", L)) for r in IMP_REPS for p in IMP_PRES
                                    for L in range(1, IMP_LEVELS)]),
            ("adaptive-ratio levels", [curve_of(imp_ckpt(r, p, "adaptive", L)) for r in IMP_REPS for p in IMP_AD_PRES
                                       for L in imp_chain_levels("adaptive")]),
        ]

    def imp_figure_params(name):
        if name == "imp_training_curves":
            return curves_params("Training curves of the IMP runs (levels: retraining from τ)", imp_curve_groups())
        return dict(name=name)

    IMP_FIGURES = {
        "imp_paths": imp_successive_paths() + imp_dense_metrics(),
        "imp_heatmap": imp_pairwise_paths() + imp_all_metrics("fixed", IMP_PAIR_PRES) + imp_dense_metrics(),
        "imp_slices": imp_slices() + imp_dense_metrics(),
        "imp_adaptive": imp_all_metrics("fixed", IMP_AD_PRES) + imp_all_metrics("adaptive", IMP_AD_PRES)
        + imp_adaptive_records() + imp_dense_metrics(),
        "imp_training_curves": curve_files(imp_curve_groups()),
    }
    IMP_FIGURES = {name: list(dict.fromkeys(files)) for name, files in IMP_FIGURES.items()}  # each file once
    if not IMP_PAIR_PRES:
        del IMP_FIGURES["imp_heatmap"]
    if not imp_slices():
        del IMP_FIGURES["imp_slices"]
    if not IMP_AD_PRES:
        del IMP_FIGURES["imp_adaptive"]
    IMP_TABLE = f"{ROOT}/tables/imp_adaptive.csv"

    def imp_claim_inputs():
        """What the IMP claims read (lotto/imp/claims.py): the paths between successive levels and the fixed
        chain's level metrics at every rewind point, and the adaptive chain's where it runs."""
        recs = imp_successive_paths() + imp_all_metrics("fixed", IMP_PRES)
        return list(dict.fromkeys(recs + imp_all_metrics("adaptive", IMP_AD_PRES)))

    def imp_figure_files():
        return [f"{ROOT}/figures/{n}{ext}" for n in IMP_FIGURES for ext in (".png", ".pdf", ".csv")]

    def imp_artifacts():
        out = []
        for r in IMP_REPS:
            for p in IMP_PRES:
                out.append(rewind_path(r, p))
                for L in range(IMP_LEVELS):
                    out.append(imp_ckpt(r, p, "fixed", L))
                    out += imp_mask(r, p, "fixed", L)
            for p in IMP_AD_PRES:
                for L in imp_chain_levels("adaptive"):
                    out.append(imp_ckpt(r, p, "adaptive", L))
                    out += imp_mask(r, p, "adaptive", L)
        return out


# === claims: one table per family (claims_<family> in its rule file), merged by `claims` (report.smk) =========
from lotto.families import FAMILIES as _FAMILIES  # noqa: E402

CLAIMS_TABLE = f"{ROOT}/tables/claims.csv"
CLAIMS_HTML = f"{ROOT}/tables/claims.html"  # the report's compact table


def claims_part(family):
    return f"{ROOT}/tables/claims-{family}.csv"


def claims_parts():
    return [claims_part(name) for name in _FAMILIES if config.get(name)]


# === masks for PyTorch code without lotto (rules in export.smk) =====================================
def exported_masks():
    """The safetensors file export_mask writes for each mask among the run's targets."""
    return [f"{ROOT}/export/{os.path.relpath(m, ROOT)[: -len('.mask')]}.safetensors" for m in TARGETS
            if m.endswith(".mask")]


# === the report (snakemake --report report.html): rules in report.smk, layout in lotto/report.py ===========
import lotto.report as lotto_report  # noqa: E402

PROVENANCE_TABLE = f"{ROOT}/tables/provenance.csv"
RUN_CONFIG = f"{ROOT}/config.yaml"
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
