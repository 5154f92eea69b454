# Training: theta_0, shared pretraining to the rewind point, siblings, retraining of every ticket.
# Resumable state lives under RESUME, outside the declared outputs (which Snakemake deletes before a job).


# theta_0 of a replicate: seconds of CPU, on the submitting host (like stage_data), so that on a cluster the
# first trainings wait for no queue behind it and a replicate costs no submission of its own
rule init:
    input:
        data=DATA,
    output:
        f"{ROOT}/rep{{rep}}/init.safetensors",
    log:
        f"{ROOT}/rep{{rep}}/init.log",
    params:
        cfg=cfg_arg("model"),
    localrule: True
    conda:
        LOTTO_ENV
    shell:
        "lotto init --config {params.cfg} --data {input.data} --replicate {wildcards.rep} --out {output} > {log} 2>&1"


rule pretrain:
    input:
        data=DATA,
        init=f"{ROOT}/rep{{rep}}/init.safetensors",
    output:
        f"{PRE_DIR}/rewind.safetensors",
    log:
        f"{PRE_DIR}/pretrain.log",
    params:
        cfg=cfg_arg("model", "training"),
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    conda:
        LOTTO_ENV
    shell:
        train_shell("{input.init}", "pretrain", kind="rewind", end="{wildcards.pre}", metrics=False, out="{output}")


rule sibling:
    input:
        data=DATA,
        rewind=f"{PRE_DIR}/rewind.safetensors",
    output:
        ckpt=f"{PRE_DIR}/sibling{{sib}}/trained.safetensors",
        metrics=f"{PRE_DIR}/sibling{{sib}}/metrics.json",
    log:
        f"{PRE_DIR}/sibling{{sib}}/train.log",
    params:
        cfg=cfg_arg("model", "training"),
        labels=lambda w: labels_arg(
            replicate=int(w.rep), pretrain_steps=int(w.pre), ticket="dense", sibling=int(w.sib), k=None,
            target_sparsity=0.0,
        ),
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
        metrics=f"{PRE_DIR}/{{ticket}}/s{{s}}/metrics.json",
    log:
        f"{PRE_DIR}/{{ticket}}/s{{s}}/retrain.log",
    params:
        cfg=cfg_arg("model", "training"),
        labels=ticket_labels,
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
        "masks_rep{rep}_pre{pre}"
    resources:
        **light_resources(),
    conda:
        LOTTO_ENV
    shell:
        "lotto prune --threads 1 --checkpoint {input} --sparsity {wildcards.s} --labels {params.labels} "
        "--out {output} > {log} 2>&1"


rule compose:
    input:
        lambda w: [sibling_mask(w.rep, w.pre, i, w.s) for i in range(1, int(w.k) + 1)],
    output:
        mask=f"{PRE_DIR}/k{{k}}/{{op}}/s{{s}}/mask.mask",
        record=f"{PRE_DIR}/k{{k}}/{{op}}/s{{s}}/compose.json",
    log:
        f"{PRE_DIR}/k{{k}}/{{op}}/s{{s}}/compose.log",
    params:
        labels=lambda w: labels_arg(replicate=int(w.rep), pretrain_steps=int(w.pre)),
    group:
        "masks_rep{rep}_pre{pre}"
    resources:
        **light_resources(),
    conda:
        LOTTO_ENV
    shell:
        "lotto compose --op {wildcards.op} --sparsity {wildcards.s} --labels {params.labels} "
        "--sidecar {output.record} --out {output.mask} {input} > {log} 2>&1"


rule random_ticket:
    input:
        lambda w: sibling_mask(w.rep, w.pre, BASELINE_SIBLING, w.s),
    output:
        f"{PRE_DIR}/random/s{{s}}/mask.mask",
    log:
        f"{PRE_DIR}/random/s{{s}}/random_ticket.log",
    group:
        "masks_rep{rep}_pre{pre}"
    resources:
        **light_resources(),
    conda:
        LOTTO_ENV
    shell:
        "lotto random-ticket --mask {input} --replicate {wildcards.rep} "
        "--seed-parts {wildcards.pre} {wildcards.s} --out {output} > {log} 2>&1"


# --- figures: each a target by rule name (`snakemake fig1a`) and by file; the CSV beside it is what it plots.
# They run on the submitting host: light, and the only steps that import seaborn.

for _fig in FIGURES if COMP else []:

    rule:
        name:
            _fig
        input:
            figure_inputs(_fig),
        output:
            figure_files(_fig),
        log:
            f"{ROOT}/logs/{_fig}.log",
        params:
            name=_fig,
            prefix=lambda w, output: output[0][: -len(".png")],
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto figure {params.name} --out-prefix {params.prefix} {input} > {log} 2>&1"


if COMP:

    rule figures:
        input:
            all_figure_files(),

    rule tables:
        input:
            all_records(),
        output:
            summary_tables(),
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
