# Path builders and target functions shared by every rule file (no torch here).
import json
import os
import shlex

from lotto.composability import FIGURES as COMP_FIGURES
from lotto.config import section_json
from lotto.imp import FIGURES as IMP_FIGURE_NAMES
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
SIBLINGS = list(range(1, max(KS) + 1)) if COMP else []
SPARSITIES = [sparsity_tag(s) for s in COMP["sparsities"]] if COMP else []
BASELINE_SIBLING = COMP["baseline_sibling"] if COMP else 1
DATA = f"{ROOT}/data/{config['data']['dataset']}.npz"
PRE_DIR = f"{ROOT}/rep{{rep}}/pre{{pre}}"

FIGURES = list(COMP_FIGURES)


wildcard_constraints:
    rep=r"\d+",
    pre=r"\d+",
    sib=r"\d+",
    k=r"\d+",
    op="union|intersection",
    s=r"0\.\d{4}",
    ticket=r"k\d+/(?:union|intersection)|oneshot|random",


def cfg_arg(*sections):
    """The config sections a step uses, as one shell-quoted JSON argument (a change reruns the step)."""
    return shlex.quote(section_json(config, *sections))


def labels_arg(**labels):
    return shlex.quote(json.dumps(labels, sort_keys=True, separators=(",", ":")))


def train_resources():
    # a training job the Slurm profile resubmits (retries) after a TIMEOUT gets train_runtime x attempt
    # minutes, and resumes from its saved state
    base = RES["train_runtime"]
    res = dict(mem_mb=RES["train_mem_mb"], runtime=lambda wildcards, attempt: base * attempt, gpu=RES["train_gpus"])
    if RES.get("train_gpu_model") and RES["train_gpus"]:
        res["gpu_model"] = RES["train_gpu_model"]  # the slurm plugin submits --gpus=<model>:<gpu>
    return res


def train_shell(source, noise, kind="trained", end="end", mask="", metrics=True, out="{output.ckpt}"):
    """The one `lotto train` command line of every training rule, as a shell template.

    ``source``/``out``: the rule's input and output placeholders; ``mask``: e.g. "--mask {input.mask}";
    ``metrics``: evaluate on the test set and write {output.metrics} with {params.labels}. The resumable state
    lives under RESUME, outside the declared outputs (which Snakemake deletes before a job).
    """
    parts = [
        "lotto train --config {params.cfg} --threads {threads} --data {input.data}",
        f"--from {source} --end {end} --replicate {{wildcards.rep}} --noise {noise} --kind {kind}",
        mask,
        "--metrics {output.metrics} --labels {params.labels}" if metrics else "",
        f"--resume-state {RESUME}/{out}.pt --out {out} > {{log}} 2>&1",
    ]
    return " ".join(p for p in parts if p)


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


def sibling_metrics(rep, pre, sib):
    return f"{ROOT}/rep{rep}/pre{pre}/sibling{sib}/metrics.json"


def compose_record(rep, pre, k, op, s):
    return f"{ROOT}/rep{rep}/pre{pre}/k{k}/{op}/s{s}/compose.json"


def ticket_metrics(rep, pre, ticket, s):
    return f"{ROOT}/rep{rep}/pre{pre}/{ticket}/s{s}/metrics.json"


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


def figure_inputs(name):
    top = [max(PRES)]
    if name == "fig1a":
        return [compose_record(r, p, 2, "union", s) for r in REPS for p in PRES for s in SPARSITIES]
    if name == "fig1b":
        return [compose_record(r, p, k, "union", s) for r in REPS for p in top for k in KS for s in SPARSITIES]
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
               for op in ("union", "intersection") for s in SPARSITIES]
    records += [ticket_metrics(r, p, f"k{k}/{op}", s) for r in REPS for p in PRES for k in KS
                for op in ("union", "intersection") for s in SPARSITIES]
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
                out.append(f"{ROOT}/rep{r}/pre{p}/sibling{i}/trained.safetensors")
                out += [sibling_mask(r, p, i, s) for s in SPARSITIES]
            tickets = [f"k{k}/{op}" for k in KS for op in ("union", "intersection")] + ["oneshot", "random"]
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
        raise ValueError(name)

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

    IMP_FIGURES = {
        "imp_paths": imp_successive_paths() + imp_dense_metrics(),
        "imp_heatmap": imp_pairwise_paths() + imp_all_metrics("fixed", IMP_PAIR_PRES) + imp_dense_metrics(),
        "imp_slices": imp_slices() + imp_dense_metrics(),
        "imp_adaptive": imp_all_metrics("fixed", IMP_AD_PRES) + imp_all_metrics("adaptive", IMP_AD_PRES)
        + imp_adaptive_records() + imp_dense_metrics(),
    }
    IMP_FIGURES = {name: list(dict.fromkeys(files)) for name, files in IMP_FIGURES.items()}  # each file once
    if not IMP_PAIR_PRES:
        del IMP_FIGURES["imp_heatmap"]
    if not imp_slices():
        del IMP_FIGURES["imp_slices"]
    if not IMP_AD_PRES:
        del IMP_FIGURES["imp_adaptive"]
    IMP_TABLE = f"{ROOT}/tables/imp_adaptive.csv"

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
