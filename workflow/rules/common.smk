# Path builders and target functions shared by every rule file (no torch here).
import json
import shlex

from lotto.config import section_json
from lotto.paths import sparsity_tag

ROOT = f"{config['results_dir']}/{config['experiment']}"
RESUME = f"{config['results_dir']}/.resume"
RES = config["resources"]
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
PRE_DIR = ROOT + "/rep{rep}/pre{pre}"

FIGURES = ["fig1a", "fig1b", "fig2a", "fig2b", "fig2c", "fig2d"]


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
    res = dict(mem_mb=RES["train_mem_mb"], runtime=RES["train_runtime"], gpu=RES["train_gpus"])
    if RES.get("train_gpu_model") and RES["train_gpus"]:
        res["gpu_model"] = RES["train_gpu_model"]  # the slurm plugin submits --gpus=<model>:<gpu>
    return res


def light_resources():
    return dict(mem_mb=RES["light_mem_mb"], runtime=RES["light_runtime"])


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
