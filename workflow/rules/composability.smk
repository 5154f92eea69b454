# Training: theta_0, shared pretraining to the rewind point, siblings, retraining of every ticket.
# Resumable state lives under RESUME, outside the declared outputs (which Snakemake deletes before a job).
# Each training rule's `group: training_group(...)` bundles its jobs N to a GPU on a cluster when
# resources.trainings_per_gpu = N > 1 (common.smk); with N = 1 a training is a Slurm job of its own.


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
        ckpt=f"{PRE_DIR}/rewind.safetensors",
        curve=f"{PRE_DIR}/rewind.curve.csv",
    log:
        f"{PRE_DIR}/pretrain.log",
    params:
        cfg=cfg_arg("model", "training"),
    group:
        training_group("pretrain")
    threads: RES["train_threads"]
    resources:
        **train_resources(),
    conda:
        LOTTO_ENV
    shell:
        train_shell("{input.init}", "pretrain", kind="rewind", end="{wildcards.pre}", metrics=False)


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
        training_group("sibling")
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
        training_group("retrain")
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
        "masks_rep{rep}_pre{pre}"
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
        "masks_rep{rep}_pre{pre}"
    resources:
        **light_resources(),
    conda:
        LOTTO_ENV
    shell:
        "lotto random-ticket --mask {input} --replicate {wildcards.rep} "
        "--seed-parts {wildcards.pre} {wildcards.s} --out {output} > {log} 2>&1"


# --- figures: each a target by rule name (`snakemake fig1a`) and by file; the CSV beside it is what it plots.
# They run on the submitting host: light, and the only steps that import seaborn. Every title names the model,
# dataset and experiment (FIG_CONTEXT); every sparsity axis has the one scale of the config's grid (COMP_XSCALE).

# (A shell: expression is evaluated again when the job runs, with the loop variable at its last value: so no
# expression of _fig there, and training_curves, whose command differs, is a rule of its own.)
for _fig in [f for f in FIGURES if f != "training_curves"] if COMP else []:

    rule:
        name:
            _fig
        input:
            figure_inputs(_fig),
        output:
            report_figure("composability", _fig, figure_files(_fig)),
        log:
            f"{ROOT}/logs/{_fig}.log",
        params:
            prefix=lambda w, output: output[0][: -len(".png")],
            context=FIG_CONTEXT,
            **comp_figure_params(_fig),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto figure {params.name} --xscale {params.xscale} --context {params.context} "
            "--out-prefix {params.prefix} {input} > {log} 2>&1"


if "training_curves" in FIGURES and COMP:

    rule training_curves:
        input:
            figure_inputs("training_curves"),
        output:
            report_figure("composability", "training_curves", figure_files("training_curves")),
        log:
            f"{ROOT}/logs/training_curves.log",
        params:
            prefix=lambda w, output: output[0][: -len(".png")],
            context=FIG_CONTEXT,
            **comp_figure_params("training_curves"),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            TRAINING_CURVES_SHELL


if COMP:

    rule figures:
        input:
            all_figure_files(),

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

    rule claims_composability:
        input:
            comp_claim_inputs(),
        output:
            claims_part("composability"),
        log:
            f"{ROOT}/logs/claims-composability.log",
        params:
            cfg=cfg_arg("claims", "composability"),
        localrule: True
        conda:
            LOTTO_ENV
        shell:
            "lotto claims --family composability --config {params.cfg} --out {output} {input} > {log} 2>&1"
