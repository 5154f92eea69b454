# Mask composability (Movva, Frankle & Carbin 2021): siblings trained from a shared rewind point, their masks at
# every sparsity, compositions of k of them, retrained tickets, one-shot and random baselines; its figures,
# tables and claims (their rules: outputs.smk, from register_outputs below).
#
# results/<exp>/rep<r>/pre<t>/sibling<i>/{trained.safetensors, metrics.json, masks/s<sparsity>.mask}
# results/<exp>/rep<r>/pre<t>/k<k>/<op>/s<sparsity>/{mask.mask, compose.json, retrained.safetensors, metrics.json}
# results/<exp>/rep<r>/pre<t>/{oneshot,random}/s<sparsity>/...
# The init and the rewind points (rep<r>/pre<t>/rewind.safetensors) come from core.smk.
from lotto.composability import ACCURACY_VIEWS, EVERY_OP, FAMILY as COMP_FAMILY, xscale_for
from lotto.composability.claims import random_ticket_point
from lotto.masks import vote_threshold
from lotto.paths import sparsity_tag

# empty grids when the config has no composability section
COMP = config.get("composability")
REPS = COMP["replicates"] if COMP else []
PRES = COMP["pretrain_steps"] if COMP else []
KS = sorted(COMP["ks"]) if COMP else []
SIBLINGS = list(range(1, (COMP["siblings"] or max(KS)) + 1)) if COMP else []
SPARSITIES = [sparsity_tag(s) for s in COMP["sparsities"]] if COMP else []
BASELINE_SIBLING = COMP["baseline_sibling"] if COMP else 1
OPS = COMP["ops"] if COMP else []
MATCH_SPARSITY = COMP["match_sparsity"] if COMP else False

# an accuracy figure of one composition is drawn when that composition is run
FIGURES = [f for f in COMP_FAMILY.figure_names() if ACCURACY_VIEWS.get(f, (EVERY_OP,))[0] in [EVERY_OP, *OPS]]
# one x scale for every sparsity figure of the run, from the config's grid (not from each figure's own points)
COMP_XSCALE = xscale_for(COMP["sparsities"]) if COMP else "linear"
# masks, compositions and random tickets of one (replicate, rewind point): one job group, whose unconnected parts
# (one per sparsity) go out as one cluster job (common.smk: light_group)
MASKS_GROUP = light_group("masks_rep{rep}_pre{pre}", 1000)


wildcard_constraints:
    sib=r"\d+",
    k=r"\d+",
    op=r"union|intersection|mean_magnitude|vote[1-9]\d*",
    s=r"0\.\d{4}",
    ticket=r"k\d+/(?:union|intersection|mean_magnitude|vote[1-9]\d*)|oneshot|random",


# --- artifact paths -------------------------------------------------------------------------------
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
    # the dense siblings: their spread is the run-to-run noise of a training at this scale (lotto.stats.run_variance)
    recs += [sibling_metrics(r, p, i) for r in REPS for p in ends for i in SIBLINGS]
    cl = config["claims"]
    point = random_ticket_point(COMP["sparsities"], cl["random_ticket_min_sparsity"], cl["random_ticket_max_sparsity"])
    if point is not None:
        recs += [ticket_metrics(r, top, "random", sparsity_tag(point)) for r in REPS]
    return recs


rule sibling:
    input:
        data=DATA,
        rewind=f"{PRE_DIR}/rewind.safetensors",
    output:
        ckpt=f"{PRE_DIR}/sibling{{sib}}/trained.safetensors",
        curve=f"{PRE_DIR}/sibling{{sib}}/trained.curve.csv",
        metrics=f"{PRE_DIR}/sibling{{sib}}/metrics.json",
    log:
        f"{PRE_DIR}/sibling{{sib}}/train.log",
    params:
        cfg=cfg_arg("model", "training"),
        labels=lambda w: labels_arg(
            replicate=int(w.rep), pretrain_steps=int(w.pre), ticket="dense", sibling=int(w.sib), k=None,
            target_sparsity=0.0,
        ),
    group:
        training_group("sibling_rep{rep}_pre{pre}")
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    conda:
        LOTTO_ENV
    shell:
        train_shell("{input.rewind}", "sibling:{wildcards.sib}")



rule retrain:
    input:
        data=DATA,
        rewind=f"{PRE_DIR}/rewind.safetensors",
        mask=ticket_mask,
    output:
        ckpt=f"{PRE_DIR}/{{ticket}}/s{{s}}/retrained.safetensors",
        curve=f"{PRE_DIR}/{{ticket}}/s{{s}}/retrained.curve.csv",
        metrics=f"{PRE_DIR}/{{ticket}}/s{{s}}/metrics.json",
    log:
        f"{PRE_DIR}/{{ticket}}/s{{s}}/retrain.log",
    params:
        cfg=cfg_arg("model", "training"),
        labels=ticket_labels,
    group:
        training_group("retrain_rep{rep}_pre{pre}")
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    conda:
        LOTTO_ENV
    shell:
        train_shell("{input.rewind}", "retrain", kind="retrained", mask="--mask {input.mask}")


# --- masks: one-shot global magnitude pruning of each sibling, compositions, random tickets (CPU-only, about
# a second each, no torch). On a cluster the light jobs of one (replicate, rewind point) form one job group:
# the Slurm profile's group-components bundles the group's unconnected parts (one per sparsity) into a
# single submission. Local runs ignore groups.


rule mask:
    input:
        f"{PRE_DIR}/sibling{{sib}}/trained.safetensors",
    output:
        f"{PRE_DIR}/sibling{{sib}}/masks/s{{s}}.mask",
    log:
        f"{PRE_DIR}/sibling{{sib}}/masks/s{{s}}.log",
    params:
        labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre), sibling=int(w.sib)),
    group:
        MASKS_GROUP
    resources:
        **light_resources(),
    conda:
        LOTTO_ENV
    shell:
        "lotto prune --threads 1 --checkpoint {input} --sparsity {wildcards.s} --labels {params.labels} "
        "--out {output} > {log} 2>&1"


# union, intersection, vote<m> from the sibling masks; mean_magnitude (and, with composability.match_sparsity,
# every composition) also ranks the siblings' weights, read from their checkpoints without torch
rule compose:
    input:
        unpack(compose_inputs),
    output:
        mask=f"{PRE_DIR}/k{{k}}/{{op}}/s{{s}}/mask.mask",
        record=f"{PRE_DIR}/k{{k}}/{{op}}/s{{s}}/compose.json",
    log:
        f"{PRE_DIR}/k{{k}}/{{op}}/s{{s}}/compose.log",
    params:
        labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre)),
        flags=compose_flags,
    group:
        MASKS_GROUP
    resources:
        **light_resources(),
    conda:
        LOTTO_ENV
    shell:
        "lotto compose --op {wildcards.op} --sparsity {wildcards.s} --labels {params.labels} "
        "--sidecar {output.record} --out {output.mask} {input.masks} {params.flags} > {log} 2>&1"


rule random_ticket:
    input:
        lambda w: sibling_mask(w.rep, w.pre, BASELINE_SIBLING, w.s),
    output:
        f"{PRE_DIR}/random/s{{s}}/mask.mask",
    log:
        f"{PRE_DIR}/random/s{{s}}/random_ticket.log",
    group:
        MASKS_GROUP
    resources:
        **light_resources(),
    conda:
        LOTTO_ENV
    shell:
        "lotto random-ticket --mask {input} --replicate {wildcards.rep} "
        "--seed-parts {wildcards.pre} {wildcards.s} --out {output} > {log} 2>&1"


if COMP:

    rule tables:
        input:
            all_records(),
        output:
            report_tables("composability", summary_tables()),
        log:
            f"{ROOT}/logs/tables.log",
        params:
            out_dir=lambda w, output: os.path.dirname(output[0]),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto tables --out-dir {params.out_dir} {input} > {log} 2>&1"

    # every checkpoint and mask is a target too, so that deleting any one of them rebuilds it (and,
    # through its newer timestamp, only the steps downstream of it)
    TARGETS += all_figure_files() + summary_tables() + all_artifacts()

    register_outputs(
        "composability",
        figures=FIGURES,
        figure_inputs=figure_inputs,
        figure_command=lambda name: f"figure {name} --xscale {COMP_XSCALE}",
        curves=("training_curves", "Training curves of the composability runs (tickets: retraining from t)",
                comp_curve_groups),
        claim_inputs=comp_claim_inputs,
    )
